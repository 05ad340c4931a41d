"""A local Ray for the session (2 CPUs, loopback only) whose workers see the session's S3 server,
and the reference outputs of the 20-row product-variant batch run locally."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from editgraph.cli.main import main

# Read by Ray when it is imported (test modules import it while being collected): a Ray started here
# listens on 127.0.0.1 only, with a token of its own (nothing written under ~/.ray).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

FAST = ["--set", "steps=2", "--set", "working_size=64"]  # tiny-sd at 64 px: a row in well under a second
PROMPTS = [f"a {c} {t} espresso cup" for c in ("red", "blue", "green", "white", "black") for t in ("glossy", "matte", "speckled", "striped")]


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """ray.init with 2 CPUs, started after the S3 server so its workers inherit the endpoint.
    Loopback only; a token of its own (nothing written under ~/.ray). Its workers run at this
    process's priority, as a Ray that `editgraph batch --ray` starts does (batch/ray.py connect):
    at Ray's default niceness 15 they got a few per cent of a CPU that the other pytest-xdist
    worker keeps busy, and the Ray tests were the critical path of the suite."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", object_store_memory=100 * 2**20,
             _system_config={"worker_niceness": os.nice(0)})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> Path:
    """20 SKUs of the product-variant workflow: one prompt and one output name each."""
    path = tmp_path_factory.mktemp("table") / "rows.csv"
    path.write_text("prompt,output\n" + "".join(f"{p},sku-{i:02d}.png\n" for i, p in enumerate(PROMPTS, start=1)))
    return path


@pytest.fixture(scope="session")
def local_outputs(tmp_path_factory, table, _session_environment) -> dict[str, bytes]:
    """The local batch's files (row-N/sku-NN.png -> bytes): what every Ray run must reproduce."""
    root = tmp_path_factory.mktemp("local")
    os.environ["EDITGRAPH_CACHE_DIR"] = str(root / "cache")
    try:
        code = main(["batch", "product-variant", "--table", str(table), *FAST, "--out", str(root / "out"), "-q"])
    finally:
        os.environ.pop("EDITGRAPH_CACHE_DIR", None)
    assert code == 0
    return files_under(root / "out")


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}

