"""`editgraph batch`: rows from a table / --zip / --product through one executor; shared nodes run once;
a stopped batch resumes from the cache."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from editgraph.batch.runner import BatchUsageError, combine, rows_from_product, rows_from_zip


def workflow(tmp_path, photo, *, fail_node: bool = False) -> str:
    nodes = {
        "photo": {"type": "image.load", "params": {"path": "$image"}},
        "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": "$width"}},
        "save": {"type": "image.save", "inputs": {"image": "small"}, "params": {"path": "shot.png"}},
    }
    if fail_node:
        nodes["check"] = {"type": "sharetest.fail_on", "inputs": {"image": "small"}, "params": {"value": "$width"}}
        nodes["save"]["inputs"]["image"] = "check"
    doc = {
        "name": "shots",
        "params": {"image": {"type": "path", "default": str(photo)}, "width": {"type": "int", "default": 64, "minimum": 8}},
        "nodes": nodes,
    }
    path = tmp_path / "shots.json"
    path.write_text(json.dumps(doc))
    return str(path)


def statuses(row: dict) -> dict[str, str]:
    return {n: r["status"] for n, r in row["nodes"].items()}


def width_of(path) -> int:
    with Image.open(path) as im:
        return im.size[0]


def test_twenty_rows_from_a_table_load_the_photo_once(tmp_path, cli, photo_path):
    table = tmp_path / "rows.csv"
    widths = [16 + 4 * i for i in range(20)]
    table.write_text("width\n" + "\n".join(map(str, widths)) + "\n")
    code, out, err = cli("batch", workflow(tmp_path, photo_path), "--table", table, "--out", tmp_path / "out", "--report", tmp_path / "b.json", "-q")
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    s = report["summary"]
    assert (s["rows"], s["ok"], s["failed"]) == (20, 20, 0)
    assert s["node_runs"] == {"photo": 1, "small": 20, "save": 20} and s["node_cached"] == {"photo": 19, "small": 0, "save": 0}
    assert s["shared"] == ["photo"] and "computed once for all rows: photo" in out
    assert statuses(report["rows"][0])["photo"] == "ran" and all(statuses(r)["photo"] == "cached" for r in report["rows"][1:])
    # run again: everything is cached, but only the photo is one computation for every row
    code, out, _ = cli("batch", workflow(tmp_path, photo_path), "--table", table, "--out", tmp_path / "out", "--report", tmp_path / "b.json", "-q")
    assert code == 0 and json.loads((tmp_path / "b.json").read_text())["summary"]["shared"] == ["photo"]
    assert "computed once for all rows: photo\n" in out
    report = json.loads((tmp_path / "b.json").read_text())
    for i, w in enumerate(widths, start=1):
        row = report["rows"][i - 1]
        assert row["row"] == i and row["params"]["width"] == w and row["status"] == "ok"
        assert width_of(tmp_path / "out" / f"row-{i}" / "shot.png") == w


def test_zip_gives_the_same_rows_as_a_table(tmp_path, cli, photo_path):
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--zip", "width=24,40,56", "--out", tmp_path / "z", "--report", tmp_path / "z.json", "-q")
    assert code == 0, err
    assert [width_of(tmp_path / "z" / f"row-{i}" / "shot.png") for i in (1, 2, 3)] == [24, 40, 56]
    assert json.loads((tmp_path / "z.json").read_text())["summary"]["node_runs"]["photo"] == 1


def test_product_with_an_out_template(tmp_path, cli, photo_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(photo_path, tmp_path / "hero.png")
    shutil.copy(photo_path.parent / "chelsea.png", tmp_path / "cat.png")
    code, _, err = cli(
        "batch", workflow(tmp_path, photo_path), "--product", "image=hero.png,cat.png", "--product", "width=20,30",
        "--out", "renders/{image}-{width}", "--report", "p.json", "-q",
    )
    assert code == 0, err
    made = sorted(p.relative_to(tmp_path / "renders").as_posix() for p in (tmp_path / "renders").rglob("*.png"))
    assert made == ["cat-20/shot.png", "cat-30/shot.png", "hero-20/shot.png", "hero-30/shot.png"]
    runs = json.loads((tmp_path / "p.json").read_text())["summary"]["node_runs"]
    assert runs == {"photo": 2, "small": 4, "save": 4}


def test_table_paths_resolve_beside_the_table_and_empty_cells_keep_defaults(tmp_path, cli, photo_path):
    (tmp_path / "shoot").mkdir()
    shutil.copy(photo_path, tmp_path / "shoot" / "a.png")
    table = tmp_path / "shoot" / "rows.csv"
    table.write_text("image,width\na.png,32\n,48\n")
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--table", table, "--out", tmp_path / "o", "--report", tmp_path / "r.json", "-q")
    assert code == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["params"]["image"] == str(tmp_path / "shoot" / "a.png") and rows[1]["params"]["image"] == str(photo_path)
    assert [width_of(tmp_path / "o" / f"row-{i}" / "shot.png") for i in (1, 2)] == [32, 48]


def test_a_row_with_more_cells_than_columns_is_refused_not_trimmed(tmp_path, cli, photo_path):
    table = tmp_path / "rows.csv"
    table.write_text("width\n32\n0.2,48\n")  # the second row's 48 has no column: a typo, not data to drop
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--table", table, "--out", tmp_path / "o", "-q")
    assert code == 2 and f"table {table}, row 2: 2 cells but 1 columns (width); extra: '48'" in err
    assert not (tmp_path / "o").exists()


def test_failed_row_stops_the_batch_and_a_rerun_resumes_from_the_cache(tmp_path, cli, photo_path, monkeypatch):
    flag = tmp_path / "fail-at"
    monkeypatch.setenv("SHARETEST_FAIL", str(flag))
    flag.write_text("40")  # row 3 of 5
    wf = workflow(tmp_path, photo_path, fail_node=True)
    argv = ["batch", wf, "--zip", "width=24,32,40,48,56", "--out", tmp_path / "out", "--report", tmp_path / "b.json", "-q"]
    code, _, err = cli(*argv)
    assert code == 4 and "row 3: node 'check' (sharetest.fail_on) failed" in err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "not run", "not run"]
    assert statuses(rows[2]) == {"photo": "cached", "small": "ran", "check": "failed"}
    assert rows[3]["nodes"] == {} and not (tmp_path / "out" / "row-4").exists()

    flag.unlink()  # the fix
    code, _, err = cli(*argv)
    assert code == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] * 5
    for r in rows[:2]:  # rows before the failure: nothing recomputed
        assert set(statuses(r).values()) == {"cached"}, r
    assert statuses(rows[2]) == {"photo": "cached", "small": "cached", "check": "ran", "save": "ran"}
    assert statuses(rows[3]) == {"photo": "cached", "small": "ran", "check": "ran", "save": "ran"}
    assert width_of(tmp_path / "out" / "row-5" / "shot.png") == 56


def test_keep_going_runs_the_rows_after_a_failure(tmp_path, cli, photo_path, monkeypatch):
    flag = tmp_path / "fail-at"
    monkeypatch.setenv("SHARETEST_FAIL", str(flag))
    flag.write_text("32")
    wf = workflow(tmp_path, photo_path, fail_node=True)
    code, out, _ = cli("batch", wf, "--zip", "width=24,32,40", "--out", tmp_path / "o", "--report", tmp_path / "b.json", "--keep-going", "-q")
    assert code == 4 and "2 of 3 rows ok, 1 failed" in out
    assert [r["status"] for r in json.loads((tmp_path / "b.json").read_text())["rows"]] == ["ok", "failed", "ok"]


def test_every_row_is_validated_before_any_runs(tmp_path, cli, photo_path):
    table = tmp_path / "rows.csv"
    table.write_text("width\n32\n48\nwide\n4\n")
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--table", table, "--out", tmp_path / "o", "-q")
    assert code == 3 and "2 problems" in err
    assert "row 3: width: int param: expected an integer" in err and "row 4: width" in err and "must be ≥ 8" in err
    assert not (tmp_path / "o").exists()


def test_usage_errors(tmp_path, cli, photo_path):
    wf = workflow(tmp_path, photo_path)
    code, _, err = cli("batch", wf, "--zip", "width=1,2", "--zip", "image=a.png")
    assert code == 2 and "same length" in err
    code, _, err = cli("batch", wf)
    assert code == 2 and "needs rows" in err
    code, _, err = cli("batch", wf, "--zip", "width=20,30", "--out", "o/{nope}")
    assert code == 2 and "nope" in err
    code, _, err = cli("batch", wf, "--zip", "width=20,20", "--out", "o/{width}")
    assert code == 2 and "rows 1 and 2 would write to the same folder" in err
    table = tmp_path / "t.csv"
    table.write_text("widht\n3\n")
    code, _, err = cli("batch", wf, "--table", table)
    assert code == 3 and "column 'widht'" in err and "its params: image, width" in err


def test_row_forms_combine():
    assert rows_from_zip(["a=1,2", "b=x,y"]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    assert rows_from_product(["a=1,2", "b=x,y"]) == [{"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "2", "b": "x"}, {"a": "2", "b": "y"}]
    assert combine([[{"a": 1}, {"a": 2}], [{"b": 3}]]) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    with pytest.raises(BatchUsageError, match="given twice"):
        rows_from_zip(["a=1", "a=2"])


def test_progress_display_draws_one_bar(tmp_path, cli, photo_path):
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--zip", "width=20,28", "--out", tmp_path / "o")
    assert code == 0
    bars = [line for line in err.splitlines() if "━" in line]
    assert len(bars) == 1 and bars[0].startswith("batch") and "2/2" in bars[0]


def test_a_model_loaded_for_the_first_row_serves_every_row(tmp_path, cli, photo_path):
    doc = json.loads(open(workflow(tmp_path, photo_path)).read())
    doc["nodes"]["model"] = {"type": "sharetest.model_load", "params": {"model": "fake-sd"}}
    doc["nodes"]["tint"] = {"type": "sharetest.tint", "inputs": {"model": "model", "image": "small"}}
    doc["nodes"]["save"]["inputs"]["image"] = "tint"
    (tmp_path / "m.json").write_text(json.dumps(doc))
    code, _, err = cli("batch", tmp_path / "m.json", "--zip", "width=20,24,28,32", "--out", tmp_path / "o", "--report", tmp_path / "r.json", "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert s["node_runs"] == {"model": 1, "photo": 1, "small": 4, "tint": 4, "save": 4}
    assert s["shared"] == ["model", "photo"]


def test_cancelled_batch_reports_where_it_stopped_and_resumes(tmp_path, photo_path):
    import threading

    from editgraph.batch import runner as batch
    from editgraph.errors import Cancelled
    from editgraph.executor.cache import Cache
    from editgraph.executor.run import Executor
    from editgraph.graph.document import load_workflow

    wf = load_workflow(workflow(tmp_path, photo_path))
    graphs = batch.bind_rows(wf, batch.rows_from_zip(["width=20,24,28,32"]), {}, base_dir=tmp_path, source="wf")
    dirs = batch.out_dirs(str(tmp_path / "o"), graphs, {"image": "path", "width": "int"})
    cancel = threading.Event()
    seen: list[list[str]] = []

    def on_row(row, results):
        seen.append([r.status for r in results])  # what a report written now would say
        if row.row == 2:
            cancel.set()  # as Ctrl-C would: the next node to run stops

    cache = Cache.default(tmp_path / "cache")
    with pytest.raises(Cancelled):
        batch.run_batch(graphs, dirs, Executor(cache), on_row=on_row, cancel=cancel)
    assert seen[-1] == ["ok", "ok", "cancelled", "not run"]
    cache.close()
    cache = Cache.default(tmp_path / "cache")  # a new process, in effect: only the disk tier remains
    results = batch.run_batch(graphs, dirs, Executor(cache))
    cache.close()
    assert [r.status for r in results] == ["ok"] * 4
    assert all(rec["status"] == "cached" for r in results[:2] for rec in r.nodes.values())
    assert results[2].nodes["small"]["status"] == "ran"



def test_show_picks_a_row_of_a_batch_report(tmp_path, cli, photo_path, monkeypatch):
    wf = workflow(tmp_path, photo_path)
    assert cli("batch", wf, "--zip", "width=20,24", "--out", tmp_path / "o", "--report", tmp_path / "b.json", "-q")[0] == 0
    code, text, _ = cli("show", wf, "--report", tmp_path / "b.json", "--row", 1)
    assert code == 0 and "photo  image.load  [ran]" in text
    code, text, _ = cli("show", wf, "--report", tmp_path / "b.json")  # default: the last row that ran
    assert "photo  image.load  [cached]" in text and "small  image.resize  [ran]" in text
    code, _, err = cli("show", wf, "--report", tmp_path / "b.json", "--row", 9)
    assert code == 5 and "no row 9" in err


def test_out_template_values_cannot_climb_out_of_the_output_root(tmp_path, cli, photo_path, monkeypatch):
    """A CSV cell is input, not a path: '..', '.', 'a/../../b' each fill one folder-name part."""
    monkeypatch.chdir(tmp_path)
    doc = json.loads(open(workflow(tmp_path, photo_path)).read())
    doc["params"]["sku"] = {"type": "string", "default": "x"}
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    (tmp_path / "rows.csv").write_text("sku,width\n..,20\n.,24\na/../../b,28\n")
    code, _, err = cli("batch", tmp_path / "wf.json", "--table", tmp_path / "rows.csv", "--out", "renders/{sku}/{sku}", "-q")
    assert code == 0, err
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("shot.png"))
    assert made == ["renders/_/_/shot.png", "renders/__/__/shot.png", "renders/a_.._.._b/a_.._.._b/shot.png"]


def test_out_template_refuses_attribute_access_in_placeholders(tmp_path, cli, photo_path):
    code, _, err = cli("batch", workflow(tmp_path, photo_path), "--zip", "width=20", "--out", str(tmp_path / "o" / "{width.__class__}"), "-q")
    assert code == 2 and "{width.__class__} is not allowed" in err
    assert not (tmp_path / "o").exists()
