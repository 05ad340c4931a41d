"""Checking a shared workflow must be instant: validate (every bundled workflow), nodes, schema
and show never import torch, diffusers or transformers, and build no tiny model."""

from __future__ import annotations

import os
import subprocess
import sys

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
print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
"""


def test_validate_nodes_schema_show_import_no_torch(tmp_path):
    env = {**os.environ, "EDITGRAPH_MODELS_DIR": str(tmp_path / "models"), "EDITGRAPH_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "schema.json")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "models").exists()  # no tiny model was built to validate
