"""Shared fixtures. Every test gets its own cache directory and pinned torch threads
(1 vs 2 threads changes float rounding; byte comparisons need the same count)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Before torch starts its OpenMP threads: idle threads sleep instead of spinning. Results are the
# same; on a shared CPU, spinning threads made tiny-model tests 5-15x slower (measured: a tiny
# Qwen3 prompt encode 28 s spinning, 2 s passive, under load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any test module imports huggingface_hub
torch.set_num_threads(2)

def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for the diffusion equivalence tests: cpu (default), cuda, cuda:N, mps")
    parser.addoption("--diff-log", default=None, help="append each equivalence check's max abs diff to this file (bench/gpu_check.py)")


def pytest_configure(config):
    from tests.nodes import diffusion_support

    diffusion_support.DEVICE = torch.device(config.getoption("--device"))
    log = config.getoption("--diff-log")
    diffusion_support.DIFF_LOG = Path(log) if log else None


ASSETS = Path(__file__).resolve().parents[1] / "editgraph" / "workflows" / "assets"


def _models_dir(tmp_path_factory) -> Path:
    """One tiny-model folder per test run. Under pytest-xdist every worker process shares it (the
    builders take a lock per model, so a model is built by one worker and loaded by the others)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "models"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("models")


def pytest_itemcollected(item):
    """Under pytest-xdist (`-n 2 --dist loadgroup`), the Ray tests share one worker: they use one
    session Ray and the two-node cluster test's fixed ports, and they must not run two clusters at once.
    The tests comparing tiny models with a build in another process share one worker too, so that
    their one child process (tests/models/conftest.py built_in_another_process) runs once.
    (xdist hands out the biggest groups first: the long Ray group starts at once.)"""
    if item.nodeid.startswith("tests/batch/test_ray"):
        item.add_marker(pytest.mark.xdist_group("ray"))
    elif "built_in_another_process" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group("tiny-other-process"))


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own (a fixed xdist has then done it already)
def pytest_collection_modifyitems(config, items):
    """Put each item in its xdist_group. pytest-xdist does it by appending "@group" to the item's
    node id, which pytest 9.2's structured node ids no longer see (pytest-dev/pytest-xdist#1386):
    every group was silently spread over both workers (two session Rays, two local reference
    batches, the cluster test beside another Ray). Here the same suffix goes onto the structured id;
    if that stops working too, collection fails rather than ungrouping quietly."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        return
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if not groups or item.nodeid.endswith(suffix):
            continue
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(item.nodeid + suffix)
        if not item.nodeid.endswith(suffix):
            raise pytest.UsageError(f"cannot put {item.nodeid} in its xdist_group {suffix[1:]!r}: see tests/conftest.py")


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory):
    """Tiny models are built once per test session, outside the per-test caches; any node writing
    into a shared cached input fails loudly; every storable output gets a disk entry. The
    environment is restored at the end.

    EDITGRAPH_PERSIST=always: cost-aware persistence prices files at the disk's measured write
    rate, so on a slow disk (a loaded CI machine) a cheap node's output of a real-size photo is
    not stored, and a test asserting which nodes a fresh executor or process re-runs would flip
    with the disk's speed. Tests of the cost decision itself pass a Persistence and pin the rate
    (tests/executor/test_persistence.py), or set EDITGRAPH_PERSIST=cost for their own run."""
    saved = dict(os.environ)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["EDITGRAPH_CHECK_INPUTS"] = "1"
    os.environ["EDITGRAPH_PERSIST"] = "always"
    os.environ["EDITGRAPH_MODELS_DIR"] = str(_models_dir(tmp_path_factory))
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each test's call report on it: _isolated_cache keeps a failed test's cache to look at."""
    report = yield
    if report.when == "call":
        item._editgraph_call_report = report
    return report


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Each test its own cache folder, removed after it unless it failed (as tmp_path is)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("EDITGRAPH_CACHE_DIR", str(folder))
    yield
    report = getattr(request.node, "_editgraph_call_report", None)
    if report is None or report.passed:
        shutil.rmtree(folder, ignore_errors=True)


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


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 (moto's server mode) on 127.0.0.1, for the shared cache tier: its endpoint URL.
    boto3 finds it through AWS_ENDPOINT_URL, set here for the whole session (and so inherited by a
    Ray started afterwards, whose workers open the same tier), with dummy credentials."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if server is None:  # a missing local S3 fails the shared-tier tests; it never skips them
        raise RuntimeError("the shared-tier tests need moto's server: pip install -e '.[test]' installs moto[server]")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {proc.returncode}")
                time.sleep(0.1)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in locals().get("before", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket for one test: its name."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-" + os.urandom(3).hex()
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from editgraph.cli.main import main

    def call(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call
