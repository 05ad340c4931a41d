"""Shared fixtures. Every test gets its own cache directory and pinned torch threads
(1 vs 2 threads changes float rounding; byte comparisons need the same count)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any test module imports huggingface_hub
torch.set_num_threads(2)

def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for the diffusion equivalence tests: cpu (default), cuda, cuda:N, mps")


def pytest_configure(config):
    from tests.nodes import diffusion_support

    diffusion_support.DEVICE = torch.device(config.getoption("--device"))


ASSETS = Path(__file__).resolve().parents[1] / "editgraph" / "workflows" / "assets"


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory):
    """Tiny models are built once per test session, outside the per-test caches; any node writing
    into a shared cached input fails loudly. The environment is restored at the end."""
    saved = dict(os.environ)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["EDITGRAPH_CHECK_INPUTS"] = "1"
    os.environ["EDITGRAPH_MODELS_DIR"] = str(tmp_path_factory.mktemp("models"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _restore_registry():
    """A test that registers node types leaves the registry as it found it."""
    from editgraph.nodes.registry import REGISTRY, load_builtin_nodes

    load_builtin_nodes()  # registered once per process, on import: part of what is restored
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _no_signing_identity(tmp_path_factory, monkeypatch):
    """Tests run unsigned unless they configure a throwaway C2PA identity: a developer's real one
    (environment or ~/.config/editgraph/c2pa.toml) must neither sign test outputs nor be needed."""
    for name in list(os.environ):
        if name.startswith("EDITGRAPH_C2PA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDITGRAPH_C2PA_CONFIG", str(tmp_path_factory.getbasetemp() / "no-c2pa.toml"))


@pytest.fixture
def photo_path() -> Path:
    """The bundled real photo (600x400 coffee cup, CC0)."""
    return ASSETS / "coffee.png"
