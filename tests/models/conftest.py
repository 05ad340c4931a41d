"""Fixtures for the model tests: tiny models built once per session, and no model kept loaded
between tests (the in-process cache would otherwise hold every test's models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from editgraph.models import cache
from editgraph.models.tiny import make_tiny

REPO = Path(__file__).resolve().parents[2]
# What the "a build in another process is byte identical" tests compare (tiny-sd, the IP-Adapter and
# one flow model per family): one child interpreter builds them all (tests/conftest.py keeps those
# tests on one pytest-xdist worker, so it runs once per test run). One process per test paid ~5 s of
# torch/diffusers/transformers imports each for a second or two of building.
OTHER_PROCESS = ("tiny-sd", "tiny-ip-adapter", "tiny-flux2-klein", "tiny-flux2", "tiny-kontext", "tiny-qwen-edit-plus")


@pytest.fixture(autouse=True)
def _release_models():
    yield
    cache.release_all()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """The three tiny models built into one session folder: {name: folder}."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: make_tiny(name, root / name) for name in ("tiny-sd", "tiny-sd-inpaint", "tiny-ip2p")}


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tree_bytes():
    """folder -> {relative name: bytes} of every file under it: what "byte-identical" compares."""
    return _tree_bytes


@pytest.fixture(scope="session")
def built_in_another_process(tmp_path_factory) -> Path:
    """The folder where a fresh interpreter built each of OTHER_PROCESS into <folder>/<name>.
    Its own PYTHONHASHSEED (this one's is random): hash randomization differing per process is what
    caught the library BPE trainer's tie order (the same process twice agreed, two processes did not)."""
    root = tmp_path_factory.mktemp("other-process")
    code = "import sys; from editgraph.models.tiny import make_tiny_all; make_tiny_all(sys.argv[1], sys.argv[2:])"
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(root), *OTHER_PROCESS], check=True, env=env, capture_output=True)
    return root
