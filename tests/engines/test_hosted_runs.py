"""Hosted engines in real runs, through the CLI and the executor, against the stand-in: caching
(a re-run sends nothing and costs nothing), batches in flight, faults in one row, the budget,
keys kept out of every file, the router and generate-N-pick-best."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from editgraph.engines.spend import Ledger
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

from .conftest import KEYS, engines_config

ROUTES = {
    "openai-only": {"inpaint": ["openai:gpt-image-1"], "instruction": ["openai:gpt-image-1"]},
    "kontext": {"instruction": ["bfl:flux-kontext-pro"]},
    "fill-then-openai": {"inpaint": ["bfl:flux-pro-1.0-fill", "openai:gpt-image-1"]},
}


def workflow(edit_type: str = "edit", mask: bool = True, **edit_params) -> dict:
    inputs = {"image": "small", **({"mask": "oval"} if mask else {})}
    return {
        "format": "editgraph/1",
        "name": "routed-edit",
        "description": "Repaint an oval of a small copy of the photo with the engine the table picks.",
        "params": {
            "image": {"type": "path", "description": "photo"},
            "prompt": {"type": "string", "default": "a red apple", "description": "what to paint"},
            "table": {"type": "string", "default": "hosted", "description": "routing table"},
            "seed": {"type": "int", "default": 0, "description": "seed"},
        },
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo.image"}, "params": {"width": 96, "height": 64}},
            "oval": {"type": "mask.ellipse", "inputs": {"image": "small"}, "params": {"rx": 0.2, "ry": 0.3}},
            "edit": {"type": edit_type, "inputs": inputs,
                     "params": {"instruction": "$prompt", "table": "$table", "seed": "$seed", **edit_params}},
            "save": {"type": "image.save", "inputs": {"image": "edit.image"}, "params": {"path": "edit.png"}},
        },
    }


@pytest.fixture
def routes(standin, tmp_path):
    engines_config(tmp_path, routes=ROUTES)
    return standin


@pytest.fixture
def wf(tmp_path) -> Path:
    path = tmp_path / "edit.json"
    path.write_text(json.dumps(workflow()))
    return path


def test_run_caches_the_paid_call_and_reports_spend_then_saving(routes, wf, tmp_path, photo_path, cli):
    common = ["run", wf, "--set", f"image={photo_path}", "--set", "table=openai-only", "--cache-dir", tmp_path / "c", "-q"]
    code, out, _ = cli(*common, "--estimate")
    assert code == 0
    assert "edit  openai:gpt-image-1" in out and "to pay" in out and routes.count() == 0
    assert cli(*common, "--out", tmp_path / "o1", "--report", tmp_path / "r1.json")[0] == 0
    assert routes.count("openai") == 1
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert r1["cost"]["spent_usd"] > 0 and r1["cost"]["saved_by_cache_usd"] == 0
    assert r1["nodes"]["edit"]["engine"] == "openai:gpt-image-1" and r1["nodes"]["edit"]["calls"][0]["request_id"] == "req-00001"
    assert cli(*common, "--out", tmp_path / "o2", "--report", tmp_path / "r2.json")[0] == 0
    assert routes.count("openai") == 1  # nothing sent again
    r2 = json.loads((tmp_path / "r2.json").read_text())
    assert r2["nodes"]["edit"]["status"] == "cached"
    assert r2["cost"]["spent_usd"] == 0 and r2["cost"]["saved_by_cache_usd"] == r1["cost"]["spent_usd"]
    assert r2["cost"]["estimated_usd"] == 0  # the estimate knew it was cached
    assert (tmp_path / "o1" / "edit.png").read_bytes() == (tmp_path / "o2" / "edit.png").read_bytes()


def _table(tmp_path: Path, prompts: list[str]) -> Path:
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt"])
        w.writerows([p] for p in prompts)
    return path


def test_a_20_row_batch_overlaps_calls_up_to_the_provider_limit_and_reruns_free(routes, wf, tmp_path, photo_path, monkeypatch, cli):
    routes.delay_s = 0.2
    routes.gather = 4  # the first calls wait until four are in flight at once, however loaded the machine
    monkeypatch.setenv("EDITGRAPH_OPENAI_MAX_CONCURRENCY", "4")
    rows = _table(tmp_path, [f"a fruit, variant {i}" for i in range(20)])
    argv = ["batch", wf, "--table", rows, "--set", f"image={photo_path}", "--set", "table=openai-only",
            "--cache-dir", tmp_path / "c", "-q", "--jobs", "8"]
    assert cli(*argv, "--out", tmp_path / "o1", "--report", tmp_path / "r1.json")[0] == 0
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert [r["status"] for r in r1["rows"]] == ["ok"] * 20
    assert routes.count("openai") == 20
    assert routes.max_in_flight["openai"] == 4  # overlapped, and never past the limit
    assert r1["cost"]["spent_usd"] == pytest.approx(20 * r1["cost"]["calls"][0]["cost_usd"])
    # local nodes shared by every row ran once
    assert r1["summary"]["node_runs"]["photo"] == 1
    assert cli(*argv, "--out", tmp_path / "o2", "--report", tmp_path / "r2.json")[0] == 0
    r2 = json.loads((tmp_path / "r2.json").read_text())
    assert routes.count("openai") == 20  # the re-run sent zero requests
    assert r2["cost"]["spent_usd"] == 0 and r2["cost"]["saved_by_cache_usd"] == pytest.approx(r1["cost"]["spent_usd"])
    assert r2["summary"]["node_cached"]["edit"] == 20


def test_a_429_storm_recovers_and_a_refused_row_fails_alone(routes, wf, tmp_path, photo_path, cli):
    routes.fail_next("openai", "429", times=3, retry_after=0.02)
    rows = _table(tmp_path, ["pear", "plum", "banned thing [refuse]", "fig", "kiwi", "lime"])
    code, _, _ = cli("batch", wf, "--table", rows, "--set", f"image={photo_path}", "--set", "table=openai-only", "--cache-dir",
                     tmp_path / "c", "-q", "--keep-going", "--out", tmp_path / "o", "--report", tmp_path / "r.json")
    assert code == 4
    report = json.loads((tmp_path / "r.json").read_text())
    status = {r["params"]["prompt"]: r["status"] for r in report["rows"]}
    assert status == {"pear": "ok", "plum": "ok", "banned thing [refuse]": "failed", "fig": "ok", "kiwi": "ok", "lime": "ok"}
    failed = next(r for r in report["rows"] if r["status"] == "failed")
    assert "ProviderRefused" in failed["error"] and "rejected as a result of our safety system" in failed["error"]
    assert routes.count("openai") == 3 + 6  # three 429s retried, one call per row, the refusal not retried
    assert len(list((tmp_path / "o").glob("row-*/edit.png"))) == 5


def test_keys_appear_in_no_output_cache_or_report(routes, wf, tmp_path, photo_path, cli):
    common = ["--set", f"image={photo_path}", "--cache-dir", tmp_path / "cache", "-q"]
    assert cli("run", wf, *common, "--set", "table=openai-only", "--out", tmp_path / "out", "--report", tmp_path / "r1.json")[0] == 0
    assert cli("run", wf, *common, "--set", "table=fill-then-openai", "--out", tmp_path / "out", "--report", tmp_path / "r2.json")[0] == 0
    rows = _table(tmp_path, ["apple", "pear"])
    assert cli("batch", wf, "--table", rows, *common, "--set", "table=hosted", "--out", tmp_path / "out", "--report", tmp_path / "r3.json")[0] == 0
    # a failing call's error text goes into the report as well
    assert cli("run", wf, *common, "--set", "table=openai-only", "--set", "prompt=x [refuse]", "--out", tmp_path / "out",
               "--report", tmp_path / "r4.json")[0] == 4
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "engines.json"]
    assert len(files) > 10
    for key in KEYS.values():
        for needle in (key, key[:12], key[-12:]):
            hits = [str(p) for p in files if needle.encode() in p.read_bytes()]
            assert hits == [], f"{needle!r} found in {hits}"
    assert "rejected as a result of our safety system" in (tmp_path / "r4.json").read_text()


def test_max_cost_below_the_estimate_refuses_to_start(routes, tmp_path, photo_path, cli):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(workflow(mask=False)))
    code, _, err = cli("run", path, "--set", f"image={photo_path}", "--set", "table=kontext", "--cache-dir", tmp_path / "c", "-q",
                       "--out", tmp_path / "o", "--max-cost", "0.01")
    assert code == 5
    assert "estimated at $0.0400, above --max-cost $0.0100" in err
    assert routes.count() == 0 and not (tmp_path / "o").exists()


def test_max_cost_between_two_rows_stops_after_the_spend_is_reached(routes, tmp_path, photo_path, cli):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(workflow(mask=False)))
    rows = _table(tmp_path, [f"style {i}" for i in range(6)])
    code, _, _ = cli("batch", path, "--table", rows, "--set", f"image={photo_path}", "--set", "table=kontext", "--cache-dir",
                     tmp_path / "c", "-q", "--out", tmp_path / "o", "--report", tmp_path / "r.json", "--max-cost", "0.06")
    assert code == 4
    report = json.loads((tmp_path / "r.json").read_text())
    assert routes.count("bfl", "/bfl/v1/flux-kontext-pro") == 2  # $0.04 each: the second reaches $0.06
    statuses = [r["status"] for r in report["rows"]]
    assert statuses.count("ok") == 2 and statuses.count("failed") >= 1
    assert all("--max-cost $0.0600 reached" in r["error"] for r in report["rows"] if r["status"] == "failed")
    cost = report["cost"]
    assert cost["stopped_by_budget"] is True and cost["spent_usd"] == pytest.approx(0.08) and cost["max_cost_usd"] == 0.06


def _run(doc: dict, photo_path, cache_root: Path, log: EventLog | None = None, **params):
    graph = bind(load_workflow(doc), {"image": str(photo_path), **params}, base_dir=cache_root)
    ledger = Ledger()
    ex = Executor(Cache.default(cache_root), listeners=[log] if log is not None else [], ledger=ledger)
    try:
        return ex.run(graph), ledger
    finally:
        ex.cache.close()


def test_router_falls_back_when_an_engine_is_down_but_not_on_a_refusal(routes, tmp_path, photo_path):
    routes.fail_next("bfl", "500", times=4)
    result, _ = _run(workflow(), photo_path, tmp_path / "c", table="fill-then-openai")
    log = result.value("edit", "calls")
    assert log.engine == "openai:gpt-image-1"
    assert log.tried[0]["engine"] == "bfl:flux-pro-1.0-fill" and "HTTP 500" in log.tried[0]["failed"]
    assert routes.count("bfl") == 4 and routes.count("openai") == 1
    routes.reset()
    from editgraph.errors import NodeFailed

    with pytest.raises(NodeFailed, match="Request Moderated"):
        _run(workflow(), photo_path, tmp_path / "c", table="fill-then-openai", prompt="x [refuse]")
    assert routes.count("openai") == 0


def test_best_of_n_scores_candidates_with_distinct_seeds_and_caches_every_attempt(routes, tmp_path, photo_path):
    doc = workflow("edit.best", candidates=3)
    result, ledger = _run(doc, photo_path, tmp_path / "c", table="fill-then-openai", seed=0)
    log = result.value("edit", "calls")
    assert [s["seed"] for s in log.scores] == [0, 1, 2]
    assert [c["seed"] for c in log.calls] == [0, 1, 2]  # sent to BFL, recorded
    drifting = log.scores[1]  # the stand-in lifts the whole picture for seeds = 1 mod 3
    assert drifting["preserve"] > 0.02 and drifting["drift"] > 0.02 and not drifting["kept"]
    kept = [s for s in log.scores if s["kept"]]
    assert len(kept) == 1 and kept[0]["penalty"] == min(s["penalty"] for s in log.scores)
    assert routes.count("bfl", "/bfl/v1/flux-pro-1.0-fill") == 3 and ledger.spent == pytest.approx(0.15)
    # a threshold nothing meets: the three cached candidates, then two more attempts (seeds 3, 4)
    doc = workflow("edit.best", candidates=3, extra_attempts=2, max_penalty=0.0)
    result, ledger = _run(doc, photo_path, tmp_path / "c", table="fill-then-openai", seed=0)
    log = result.value("edit", "calls")
    assert [s["seed"] for s in log.scores] == [0, 1, 2, 3, 4]
    assert [s["cached"] for s in log.scores] == [True, True, True, False, False]
    assert routes.count("bfl", "/bfl/v1/flux-pro-1.0-fill") == 5
    assert ledger.spent == pytest.approx(0.10) and ledger.saved == pytest.approx(0.15)


def test_provenance_says_not_replayable_and_rerunning_the_image_needs_the_cache_or_spend_again(routes, wf, tmp_path, photo_path, cli):
    assert cli("run", wf, "--set", f"image={photo_path}", "--set", "table=openai-only", "--cache-dir", tmp_path / "c", "-q",
               "--out", tmp_path / "o")[0] == 0
    image = tmp_path / "o" / "edit.png"
    code, out, _ = cli("show", image, "-f", "json")
    assert code == 0
    info = json.loads(out)
    assert info["engines"]["edit"]["calls"][0]["request_id"] == "req-00001"
    assert info["engines"]["edit"]["replayable_from_seed"] is False
    assert cli("run", image, "--cache-dir", tmp_path / "c", "-q", "--out", tmp_path / "o2")[0] == 0  # the cache has it
    assert routes.count("openai") == 1
    code, _, err = cli("run", image, "--cache-dir", tmp_path / "other", "-q", "--out", tmp_path / "o3")
    assert code == 5
    assert "--spend-again" in err and routes.count("openai") == 1
    assert cli("run", image, "--cache-dir", tmp_path / "other", "-q", "--out", tmp_path / "o3", "--spend-again")[0] == 0
    assert routes.count("openai") == 2


@pytest.mark.slow
def test_the_same_edit_workflow_runs_offline_on_tiny_models_and_hosted_on_the_stand_in(routes, tmp_path, photo_path):
    import torch

    doc = workflow()
    offline, ledger = _run(doc, photo_path, tmp_path / "c", table="local-tiny")
    assert routes.count() == 0 and ledger.spent == 0
    log = offline.value("edit", "calls")
    assert log.engine == "local:tiny-sd-inpaint" and log.calls[0]["reproducible"] is True
    small, oval, out = offline.value("small"), offline.value("oval"), offline.value("edit")
    keep = (oval == 0).expand_as(small)
    assert torch.equal(out[keep], small[keep])  # outside the mask, bit for bit
    assert (out - small).abs()[~keep].mean() > 0.01
    again, _ = _run(doc, photo_path, tmp_path / "c2", table="local-tiny")  # a fresh cache: replays from the seed
    assert torch.equal(again.value("edit"), out)

    hosted, ledger = _run(doc, photo_path, tmp_path / "c", table="hosted")
    assert hosted.value("edit", "calls").engine == "bfl:flux-pro-1.0-fill"
    assert routes.count("bfl", "/bfl/v1/flux-pro-1.0-fill") == 1 and ledger.spent == pytest.approx(0.05)
    assert hosted.value("edit").shape == small.shape


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from editgraph.testing.tinyclip import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.slow
def test_best_of_n_adds_clip_similarity_when_a_clip_model_is_given(routes, tmp_path, photo_path, tiny_clip):
    doc = workflow("edit.best", candidates=3, clip_model=str(tiny_clip), clip_weight=2.0)
    result, _ = _run(doc, photo_path, tmp_path / "c", table="fill-then-openai")
    scores = result.value("edit", "calls").scores
    assert all(-1.0 <= s["clip"] <= 1.0 for s in scores)
    assert len({s["clip"] for s in scores}) == 3  # three different pictures, three similarities
    for s in scores:
        expected = s["preserve"] + s["seam"] + s["drift"] + 2.0 * (1 - s["clip"]) / 2
        assert s["penalty"] == pytest.approx(expected, abs=1e-5)
    # the same candidates without CLIP come from the cache: scoring never pays twice
    sent = routes.count("bfl", "/bfl/v1/flux-pro-1.0-fill")
    result, ledger = _run(workflow("edit.best", candidates=3), photo_path, tmp_path / "c", table="fill-then-openai")
    assert routes.count("bfl", "/bfl/v1/flux-pro-1.0-fill") == sent and ledger.spent == 0
    assert "clip" not in result.value("edit", "calls").scores[0]
