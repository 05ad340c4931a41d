"""Fixtures for the model tests: tiny models built once per session, and no model kept loaded
between tests (the in-process cache would otherwise hold every test's models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from editgraph.models import cache
from editgraph.models.tiny import make_tiny


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
