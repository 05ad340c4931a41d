"""The command line: exit codes, reports, messages on stderr, schema usable by editors."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from editgraph import workflows
from editgraph.cli.main import EXIT_ERROR, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE, main


def test_run_bundled_workflow_writes_output_and_report_then_reruns_from_cache(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("run", "look", "--out", "o", "--report", "r.json", "-q")
    assert code == EXIT_OK and (tmp_path / "o" / "look.png").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert {n: r["status"] for n, r in report["nodes"].items()} == dict.fromkeys(["photo", "ref", "graded", "matched", "save"], "ran")
    assert report["params"]["match_strength"] == 0.5 and report["torch_threads"] >= 1
    assert all(len(r["key"]) == 64 and r["seconds"] >= 0 for r in report["nodes"].values())
    code, _, _ = cli("run", "look", "--out", "o", "--report", "r.json", "-q", "--set", "match_strength=0.2")
    report = json.loads((tmp_path / "r.json").read_text())
    statuses = {n: r["status"] for n, r in report["nodes"].items()}
    assert statuses == {"photo": "cached", "ref": "cached", "graded": "cached", "matched": "ran", "save": "ran"}


def test_invalid_workflow_exits_3_listing_problems(tmp_path, cli):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"nodes": {"a": {"type": "image.lod"}, "b": {"type": "image.resize", "params": {"width": -1}, "inputs": {"image": "a"}}}}))
    code, _, err = cli("validate", str(wf))
    assert code == EXIT_INVALID
    assert "workflow is invalid (2 problems)" in err and "unknown node type 'image.lod'" in err and "nodes.b.params.width" in err


def test_failed_node_exits_4_naming_it(tmp_path, cli):
    wf = tmp_path / "w.json"
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    wf.write_text(json.dumps({"nodes": {"photo": {"type": "image.load", "params": {"path": "broken.png"}}}}))
    code, _, err = cli("run", str(wf), "--out", str(tmp_path / "o"), "-q")
    assert code == EXIT_NODE_FAILED
    assert "node 'photo' (image.load) failed" in err and "broken.png" in err


def test_run_refuses_missing_input_files_before_anything_runs(tmp_path, cli):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"nodes": {"photo": {"type": "image.load", "params": {"path": "missing.png"}}}}))
    code, out, err = cli("run", str(wf), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"))
    assert code == EXIT_INVALID
    assert "nodes.photo.params.path [node 'photo' (image.load)]: input file not found:" in err and "missing.png" in err
    assert not (tmp_path / "r.json").exists() and "ran" not in out


def test_validate_reports_params_still_to_set(tmp_path, cli):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"params": {"image": {"type": "path"}}, "nodes": {"photo": {"type": "image.load", "params": {"path": "$image"}}}}))
    code, out, _ = cli("validate", str(wf))
    assert code == EXIT_OK and out.strip().endswith("valid (1 nodes); params to set when running: image")


def test_nodes_lists_and_describes(cli):
    code, out, _ = cli("nodes")
    assert code == EXIT_OK and "image.composite" in out and "image.load" in out
    code, out, _ = cli("nodes", "image.resize")
    assert "multiple_of: integer, default 1, minimum 1, maximum 256" in out and "inputs:\n  image: Image" in out
    code, _, err = cli("nodes", "grde")
    assert code == EXIT_USAGE and "unknown node type 'grde'; did you mean grade" in err


def test_schema_validates_bundled_workflows_and_catches_typos(cli):
    code, out, _ = cli("schema")
    schema = json.loads(out)
    # one validator, its schema checked against the metaschema once (jsonschema.validate checks it
    # on every call: 24 of this test's 26 s)
    check = jsonschema.validators.validator_for(schema)
    check.check_schema(schema)
    validator = check(schema)
    for name in workflows.names():
        validator.validate(json.loads(workflows.find(name).read_text()))
    bad = json.loads(workflows.find("look").read_text())
    bad["nodes"]["graded"]["params"]["exposre"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_console_script_help_is_fast_and_works():
    out = subprocess.run([sys.executable, "-m", "editgraph.cli.main", "--help"], capture_output=True, text=True, check=True)
    assert "validate" in out.stdout and "schema" in out.stdout
    probe = "import sys, editgraph.cli.main; editgraph.cli.main._parser(); print('torch' in sys.modules, 'diffusers' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", probe], text=True).split() == ["False", "False"]


def test_outputs_get_the_usual_file_mode_not_mkstemps(tmp_path):
    """Atomic writes go through a private (0o600) temp file; the renamed output gets 0o666 less the umask."""
    import os

    from editgraph.atomic import write_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    write_atomic(tmp_path / "a.png", [b"a", b"b"])
    assert (tmp_path / "a.png").read_bytes() == b"ab"
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~mask != 0o600


def test_bad_surroundings_are_errors_with_exit_codes_not_tracebacks(tmp_path, capsys, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("run", "look", "--out", "afile", "-q")
    assert code == EXIT_ERROR and err.startswith("error: File exists: ") and "Traceback" not in err
    monkeypatch.setenv("EDITGRAPH_CACHE_SIZE", "lots")
    code, _, err = cli("cache", "info")
    assert code == EXIT_ERROR and "EDITGRAPH_CACHE_SIZE must be a byte count like 2048, 512M or 20G, got 'lots'" in err
    monkeypatch.delenv("EDITGRAPH_CACHE_SIZE")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "look", "--threads", "0"])
    assert exit_.value.code == EXIT_USAGE and "expected a whole number of threads, 1 or more, got '0'" in capsys.readouterr().err
    (tmp_path / "deep.json").write_text("[" * 100_000)
    code, _, err = cli("validate", "deep.json")
    assert code == EXIT_INVALID and "JSON nested too deeply" in err
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"nodes": {}}).encode())
    assert cli("validate", "bom.json")[0] == EXIT_OK  # as Windows editors save it


def test_a_damaged_cache_index_is_set_aside_and_the_run_goes_on(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "index.sqlite").write_text("garbage")
    code, _, err = cli("run", "look", "--out", "o", "--cache-dir", str(cache), "--report", "r.json", "-q")
    assert code == EXIT_OK and "the cache index was damaged and has been set aside as" in err
    assert [p.name.startswith("index.sqlite.damaged-") for p in cache.iterdir() if p.name.startswith("index.sqlite.")] == [True]
    code, _, _ = cli("run", "look", "--out", "o", "--cache-dir", str(cache), "--report", "r.json", "-q")
    assert {n["status"] for n in json.loads((tmp_path / "r.json").read_text())["nodes"].values()} == {"cached"}


def test_progress_counts_each_node_once_even_when_a_cached_one_reruns(capsys):
    from editgraph.cli.display import Display
    from editgraph.executor.events import NodeFinished, RunPlanned

    display = Display(quiet=False)
    with display:
        display(RunPlanned(("model", "text")))
        display(NodeFinished("model", "model.load", "cached", 0.0, "k1", 0))
        display(NodeFinished("model", "model.load", "ran", 0.5, "k1", 0, "models are not stored"))
        display(NodeFinished("text", "prompt.encode", "ran", 0.1, "k2", 0))
        overall = display.progress.tasks[0]
        assert (overall.completed, overall.total) == (2, 2)
    assert "model (model.load) 500.0 ms again (models are not stored)" in capsys.readouterr().err


def test_models_list_says_what_is_built_and_what_is_missing(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("EDITGRAPH_MODELS", f"gone={tmp_path / 'nope'}")
    code, out, _ = cli("models", "list")
    assert code == EXIT_OK
    assert f"gone                 {tmp_path / 'nope'}   MISSING: nothing at this path" in out
    assert "tiny-sd              built in: " in out


def test_rough_edges_exit_with_the_codes_the_readme_gives(tmp_path, capsys, monkeypatch, photo_path, cli):
    """Issue 10, defect 8: each of these used to exit with another code than the README's."""
    monkeypatch.chdir(tmp_path)
    save = {"type": "image.save", "inputs": {"image": "p"}, "params": {"path": "a\x00b.png"}}
    (tmp_path / "nul.json").write_text(json.dumps({"nodes": {"p": {"type": "image.load", "params": {"path": str(photo_path)}}, "s": save}}))
    code, _, err = cli("validate", "nul.json")  # was: valid, then exit 5 "an editgraph bug"
    assert code == EXIT_INVALID and "nodes.s.params.path" in err and "control characters" in err
    with pytest.raises(SystemExit) as exit_:  # was: exit 3, an invalid workflow
        main(["run", "look", "--set", "prompt"])
    assert exit_.value.code == EXIT_USAGE and "expected NAME=VALUE, got 'prompt'" in capsys.readouterr().err
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04pickle")
    (tmp_path / "pk.json").write_text(json.dumps({"nodes": {"m": {"type": "model.load", "params": {"model": "model.ckpt"}}}}))
    for command in ("validate", "run"):  # was: 3 under validate (now: 0) and 4 under run
        code, _, err = cli(command, "pk.json", *(["--out", "o", "-q"] if command == "run" else []))
        assert code == EXIT_INVALID and "nodes.m.params.model" in err and "not a .safetensors file" in err, (command, err)


def test_cache_info_prints_sizes_in_a_fitting_unit(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("EDITGRAPH_CACHE_SIZE", "1M")
    code, out, _ = cli("cache", "info", "--cache-dir", str(tmp_path / "c"))
    assert code == EXIT_OK and "size:    0 B of 1.0 MiB" in out  # was "0.0 MiB of 0.0 GiB"


def test_cache_clear_removes_what_dead_writers_left(tmp_path, monkeypatch, cli):
    """Issue 10, defect 6: leftovers of killed writers (a blob temp file, a tiny-model build
    folder, a damaged index set aside) go with `cache clear`, not only with `gc` after an hour."""
    models = tmp_path / "models"
    monkeypatch.setenv("EDITGRAPH_MODELS_DIR", str(models))
    cache = tmp_path / "c"
    (cache / "blobs" / "ab").mkdir(parents=True)
    (cache / "blobs" / "ab" / ".abcd.x1.tmp").write_bytes(b"half")  # an old-style temp beside the blobs
    (cache / "tmp").mkdir()
    (cache / "tmp" / ".abcd.x2.tmp").write_bytes(b"half")
    (cache / "index.sqlite.damaged-1").write_bytes(b"junk")
    (models / ".tiny-sd.building-999999").mkdir(parents=True)
    code, _, _ = cli("cache", "clear", "--cache-dir", str(cache))
    assert code == EXIT_OK
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() or p.name.startswith("."))
    assert [p for p in left if "tmp" in p or "damaged" in p or "building" in p] == []
