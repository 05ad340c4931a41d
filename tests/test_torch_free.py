"""Checking a shared workflow must be instant: validate (every bundled workflow), nodes, schema
and show never import torch, diffusers or transformers, nor Pillow (PNG and JPEG inputs' pixel
sizes are read from their headers: ops/budget.py), and build no tiny model. Running a
pixel-only workflow (the README's object removal) never imports torch either (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CODE = r"""
import contextlib, io, sys
from editgraph.cli.main import main
from editgraph import workflows
with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):
    for name in workflows.names():
        assert main(["validate", name]) == 0, name
    assert main(["nodes"]) == 0 and main(["nodes", "denoise"]) == 0
    assert main(["schema", "-o", sys.argv[1]]) == 0 and main(["show", "inpaint"]) == 0
from editgraph.nodes.registry import load_builtin_nodes
assert len(load_builtin_nodes()) >= 30
print(sorted(m for m in ("torch", "diffusers", "transformers", "PIL") if m in sys.modules))
"""


def test_validate_nodes_schema_show_import_no_torch(tmp_path):
    env = {**os.environ, "EDITGRAPH_MODELS_DIR": str(tmp_path / "models"), "EDITGRAPH_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "schema.json")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "models").exists()  # no tiny model was built to validate


RUN = r"""
import json, sys
from editgraph.cli.main import main
out, cache = sys.argv[1], sys.argv[2]
assert main(["run", "object-removal", "--out", out, "-q", "--cache-dir", cache, "--threads", "2", "--report", out + "/report.json"]) == 0
report = json.load(open(out + "/report.json"))
print(json.dumps({"torch": "torch" in sys.modules, "statuses": [n["status"] for n in report["nodes"].values()],
                  "threads": report["torch_threads"], "device": report["device"]}))
"""


@pytest.mark.slow
def test_object_removal_runs_without_torch_and_paints_the_same_pixels(tmp_path):
    """image.load, mask.load, fill (PatchMatch) and image.save take numpy arrays (Node.arrays):
    the README's main job never imports torch, in a cold run or a re-run from the cache, and
    paints the pixels the torch implementation painted (docs/images/object-removal.png)."""
    import json

    import numpy as np
    from PIL import Image as PILImage

    from editgraph.sharing.provenance import read_file

    env = {**os.environ, "EDITGRAPH_MODELS_DIR": str(tmp_path / "models")}
    seen = []
    for out in ("a", "b"):  # b: a new process, every node from a's cache
        done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / out), str(tmp_path / "cache")], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout.strip().splitlines()[-1]))
    # no node takes torch tensors: --threads cannot change these pixels, and none is recorded
    assert seen[0] == {"torch": False, "statuses": ["ran"] * 4, "threads": None, "device": "cpu"}
    assert seen[1] == {**seen[0], "statuses": ["cached"] * 4}
    a, b = (tmp_path / d / "object-removal.png" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    shown = np.asarray(PILImage.open(REPO / "docs" / "images" / "object-removal.png").convert("RGB"))
    assert np.array_equal(np.asarray(PILImage.open(a).convert("RGB")), shown)
    prov = read_file(a)
    assert prov["torch_threads"] is None and prov["device"] == "cpu"
    assert prov["torch"] and prov["torch"][0].isdigit()  # read from the installed package, not imported
