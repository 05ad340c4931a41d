"""Issue 5's end-to-end promises on the real diffusion workflows (tiny models)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from editgraph.cli.main import EXIT_INVALID, EXIT_OK, main

FAST = ["--set", "steps=2", "--set", "working_size=64", "-q"]
PROMPT_NODES = {"text", "denoise", "pixels", "result", "save"}


def _table(path, prompts):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "output"])
        for i, p in enumerate(prompts):
            w.writerow([p, f"sku-{i:02d}.png"])


@pytest.mark.slow
def test_product_variant_batch_shares_upstream_and_reruns_only_the_changed_row(tmp_path, capsys):
    prompts = [f"a {c} espresso cup" for c in ("red", "blue", "green", "white", "black", "yellow", "pink", "teal", "grey", "orange") * 2]
    prompts = [f"{p}, shot {i}" for i, p in enumerate(prompts)]  # 20 distinct rows
    _table(tmp_path / "skus.csv", prompts)
    args = ["batch", "product-variant", "--table", str(tmp_path / "skus.csv"), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "r.json"), *FAST]
    assert main(args) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    runs = report["summary"]["node_runs"]
    assert runs["model"] == 1 and runs["latent"] == 1 and runs["photo"] == 1 and runs["crop"] == 1
    assert runs["text"] == 20 and runs["denoise"] == 20
    assert len(list((tmp_path / "out").rglob("sku-*.png"))) == 20

    prompts[7] = "a gold espresso cup, shot 7"
    _table(tmp_path / "skus.csv", prompts)
    assert main(args) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    ran = {i: {n for n, rec in row["nodes"].items() if rec["status"] == "ran"} for i, row in enumerate(report["rows"])}
    # A loaded model is never stored on disk: the new invocation re-runs model.load to hand it to
    # row 7's prompt encoder (weights come from the process's model cache), and only for that row.
    assert ran[7] == PROMPT_NODES | {"model"}
    assert all(not ran[i] for i in ran if i != 7)


@pytest.mark.slow
def test_shared_png_reruns_to_identical_pixels_elsewhere_and_pins_the_model(tmp_path, capsys, monkeypatch):
    first = tmp_path / "alice"
    first.mkdir()
    monkeypatch.chdir(first)
    assert main(["run", "inpaint", "--out", "out", *FAST]) == EXIT_OK
    png = first / "out" / "inpaint.png"
    bob = tmp_path / "bob"
    bob.mkdir()
    shutil.copy(png, bob / "from-alice.png")
    monkeypatch.chdir(bob)
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path / "bob-cache"))  # nothing cached on this machine
    assert main(["run", "from-alice.png", "--out", "again", "-q"]) == EXIT_OK
    a, b = (np.asarray(PILImage.open(p).convert("RGB")) for p in (png, bob / "again" / "inpaint.png"))
    assert np.array_equal(a, b)
    capsys.readouterr()
    assert main(["extract", "from-alice.png", "-o", "wf.json"]) == EXIT_OK
    doc = json.loads((bob / "wf.json").read_text())
    assert len(doc["nodes"]["model"]["params"]["hash"]) == 64  # the weights it was made with


@pytest.mark.slow
def test_model_hash_mismatch_names_both_hashes_and_the_flag_overrides(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wf = json.loads((__import__("editgraph.workflows", fromlist=["HERE"]).HERE / "img2img.json").read_text())
    wf["nodes"]["model"]["params"]["hash"] = "0123456789abcdef0123"
    wf["params"]["image"]["default"] = str(__import__("editgraph.workflows", fromlist=["HERE"]).HERE / "assets" / "coffee.png")
    (tmp_path / "shared.json").write_text(json.dumps(wf))
    fast = ["--set", "steps=2", "--set", "width=64", "-q"]
    assert main(["validate", "shared.json"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "expected content hash 0123456789abcdef0123, found " in err and "--allow-model-mismatch" in err
    assert main(["run", "shared.json", *fast]) == EXIT_INVALID  # refused before any node runs
    assert "node 'model' (model.load)" in capsys.readouterr().err
    assert main(["run", "shared.json", "--allow-model-mismatch", *fast]) == EXIT_OK
    assert (tmp_path / "out" / "img2img.png").is_file()
