"""The command line: exit codes, reports, messages on stderr, schema usable by editors."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from editgraph import workflows
from editgraph.cli.main import EXIT_ERROR, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE, main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_bundled_workflow_writes_output_and_report_then_reruns_from_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "run", "look", "--out", "o", "--report", "r.json", "-q")
    assert code == EXIT_OK and (tmp_path / "o" / "look.png").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert {n: r["status"] for n, r in report["nodes"].items()} == dict.fromkeys(["photo", "ref", "graded", "matched", "save"], "ran")
    assert report["params"]["match_strength"] == 0.5 and report["torch_threads"] >= 1
    assert all(len(r["key"]) == 64 and r["seconds"] >= 0 for r in report["nodes"].values())
    code, _, _ = run_cli(capsys, "run", "look", "--out", "o", "--report", "r.json", "-q", "--set", "match_strength=0.2")
    report = json.loads((tmp_path / "r.json").read_text())
    statuses = {n: r["status"] for n, r in report["nodes"].items()}
    assert statuses == {"photo": "cached", "ref": "cached", "graded": "cached", "matched": "ran", "save": "ran"}


def test_invalid_workflow_exits_3_listing_problems(tmp_path, capsys):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"nodes": {"a": {"type": "image.lod"}, "b": {"type": "image.resize", "params": {"width": -1}, "inputs": {"image": "a"}}}}))
    code, _, err = run_cli(capsys, "validate", str(wf))
    assert code == EXIT_INVALID
    assert "workflow is invalid (2 problems)" in err and "unknown node type 'image.lod'" in err and "nodes.b.params.width" in err


def test_failed_node_exits_4_naming_it(tmp_path, capsys):
    wf = tmp_path / "w.json"
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    wf.write_text(json.dumps({"nodes": {"photo": {"type": "image.load", "params": {"path": "broken.png"}}}}))
    code, _, err = run_cli(capsys, "run", str(wf), "--out", str(tmp_path / "o"), "-q")
    assert code == EXIT_NODE_FAILED
    assert "node 'photo' (image.load) failed" in err and "broken.png" in err


def test_run_refuses_missing_input_files_before_anything_runs(tmp_path, capsys):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"nodes": {"photo": {"type": "image.load", "params": {"path": "missing.png"}}}}))
    code, out, err = run_cli(capsys, "run", str(wf), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"))
    assert code == EXIT_INVALID
    assert "nodes.photo.params.path [node 'photo' (image.load)]: input file not found:" in err and "missing.png" in err
    assert not (tmp_path / "r.json").exists() and "ran" not in out


def test_validate_reports_params_still_to_set(tmp_path, capsys):
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"params": {"image": {"type": "path"}}, "nodes": {"photo": {"type": "image.load", "params": {"path": "$image"}}}}))
    code, out, _ = run_cli(capsys, "validate", str(wf))
    assert code == EXIT_OK and out.strip().endswith("valid (1 nodes); params to set when running: image")


def test_nodes_lists_and_describes(capsys):
    code, out, _ = run_cli(capsys, "nodes")
    assert code == EXIT_OK and "image.composite" in out and "image.load" in out
    code, out, _ = run_cli(capsys, "nodes", "image.resize")
    assert "multiple_of: integer, default 1, minimum 1, maximum 256" in out and "inputs:\n  image: Image" in out
    code, _, err = run_cli(capsys, "nodes", "grde")
    assert code == EXIT_USAGE and "unknown node type 'grde'; did you mean grade" in err


def test_schema_validates_bundled_workflows_and_catches_typos(capsys):
    code, out, _ = run_cli(capsys, "schema")
    schema = json.loads(out)
    for name in workflows.names():
        jsonschema.validate(json.loads(workflows.find(name).read_text()), schema)
    bad = json.loads(workflows.find("look").read_text())
    bad["nodes"]["graded"]["params"]["exposre"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


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


def test_bad_surroundings_are_errors_with_exit_codes_not_tracebacks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "run", "look", "--out", "afile", "-q")
    assert code == EXIT_ERROR and err.startswith("error: File exists: ") and "Traceback" not in err
    monkeypatch.setenv("EDITGRAPH_CACHE_SIZE", "lots")
    code, _, err = run_cli(capsys, "cache", "info")
    assert code == EXIT_ERROR and "EDITGRAPH_CACHE_SIZE must be a byte count like 2048, 512M or 20G, got 'lots'" in err
    monkeypatch.delenv("EDITGRAPH_CACHE_SIZE")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "look", "--threads", "0"])
    assert exit_.value.code == EXIT_USAGE and "expected a whole number of threads, 1 or more, got '0'" in capsys.readouterr().err
    (tmp_path / "deep.json").write_text("[" * 100_000)
    code, _, err = run_cli(capsys, "validate", "deep.json")
    assert code == EXIT_INVALID and "JSON nested too deeply" in err
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"nodes": {}}).encode())
    assert run_cli(capsys, "validate", "bom.json")[0] == EXIT_OK  # as Windows editors save it


def test_a_damaged_cache_index_is_set_aside_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "index.sqlite").write_text("garbage")
    code, _, err = run_cli(capsys, "run", "look", "--out", "o", "--cache-dir", str(cache), "--report", "r.json", "-q")
    assert code == EXIT_OK and "the cache index was damaged and has been set aside as" in err
    assert [p.name.startswith("index.sqlite.damaged-") for p in cache.iterdir() if p.name.startswith("index.sqlite.")] == [True]
    code, _, _ = run_cli(capsys, "run", "look", "--out", "o", "--cache-dir", str(cache), "--report", "r.json", "-q")
    assert {n["status"] for n in json.loads((tmp_path / "r.json").read_text())["nodes"].values()} == {"cached"}


def test_progress_counts_each_node_once_even_when_a_cached_one_reruns(capsys):
    from editgraph.cli.display import Display
    from editgraph.executor.events import NodeFinished, RunPlanned

    display = Display(quiet=False)
    with display:
        display(RunPlanned(("model", "text")))
        display(NodeFinished("model", "model.load", "cached", 0.0, "k1", 0))
        display(NodeFinished("model", "model.load", "ran", 0.5, "k1", 0))  # its value was memory-only: loaded again
        display(NodeFinished("text", "prompt.encode", "ran", 0.1, "k2", 0))
        overall = display.progress.tasks[0]
        assert (overall.completed, overall.total) == (2, 2)
    assert "model (model.load) 500.0 ms again (not stored)" in capsys.readouterr().err


def test_models_list_says_what_is_built_and_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDITGRAPH_MODELS", f"gone={tmp_path / 'nope'}")
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == EXIT_OK
    assert f"gone                 {tmp_path / 'nope'}   MISSING: nothing at this path" in out
    assert "tiny-sd              built in: " in out
