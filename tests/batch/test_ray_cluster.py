"""A two-node Ray cluster made on this machine (`ray start --head` plus `ray start --address` with
resources of its own, each node with its own disk tier), driven by the CLI as a user would, with the
local S3 as the only tier the nodes share. Torn down by the test: each `ray start --block` runs in a
process group of its own, and the group is ended by its id."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import FAST, files_under

import ray  # noqa: E402,F401  (in the test extra: a missing Ray fails, it is not skipped)

HOST = "127.0.0.2"  # loopback; Ray would turn 127.0.0.1 into this machine's network address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _ports(worker_base: int) -> list[str]:
    """Two nodes on one machine must not share any port Ray would otherwise default."""
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--runtime-env-agent-port")
    args = [a for name in names for a in (name, str(_free_port()))]
    return args + ["--min-worker-port", str(worker_base), "--max-worker-port", str(worker_base + 300)]


def _wait_started(proc: subprocess.Popen, log: Path) -> None:
    """Until `ray start` says its node is up (it has joined the cluster by then)."""
    for _ in range(1200):
        if "Ray runtime started." in log.read_text():
            return
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"no node after 120 s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """End a `ray start --block` and everything it started (its process group, ours by id)."""
    if proc.poll() is None:
        # SIGTERM to `ray start` alone: it drains its node and stops the node's processes in a second
        # or two. Sent to the whole group, the GCS and raylet died under the draining head, which
        # then sat out the 10 s below (11 s of each teardown).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the raylet's workers, if any outlived the drain
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture
def two_nodes(tmp_path, s3_server):
    """(address, {node: disk tier folder}); the nodes are stopped at the end."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # a cluster: nodes join
    # each raylet starts its workers at this process's priority, not Ray's default niceness 15
    # (starved by the other pytest-xdist worker; see conftest.ray_local)
    env["RAY_worker_niceness"] = str(os.nice(0))
    port = _free_port()
    common = ["--node-ip-address", HOST, "--num-cpus", "1", "--block", "--disable-usage-stats", "--object-store-memory", str(80 * 2**20)]
    procs, disks = [], {"head": tmp_path / "head-cache", "second": tmp_path / "second-cache"}
    try:
        head = subprocess.Popen(
            [ray_bin, "start", "--head", "--port", str(port), "--include-dashboard=false", *common, *_ports(31000)],
            env={**env, "EDITGRAPH_CACHE_DIR": str(disks["head"])}, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(head)
        for _ in range(600):  # the head's GCS answers: the second node can join while the head finishes starting
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
                time.sleep(0.2)
        second = subprocess.Popen(
            [ray_bin, "start", "--address", f"{HOST}:{port}", "--resources", '{"second": 1}', *common, *_ports(32000)],
            env={**env, "EDITGRAPH_CACHE_DIR": str(disks["second"])}, stdout=open(tmp_path / "second.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(second)
        # Both nodes up before the batch: with only the head up, its one worker could finish all 20
        # rows before the second node joined (it took ~15 s to, under load) and the other worker started.
        _wait_started(head, tmp_path / "head.log")
        _wait_started(second, tmp_path / "second.log")
        yield f"{HOST}:{port}", env, disks
    finally:
        for proc in reversed(procs):
            _stop(proc)


def differences(got: dict[str, bytes], want: dict[str, bytes], report: dict) -> list[str]:
    """Which files differ, and how (pixels or metadata), with the worker that made each."""
    import io

    import numpy as np
    from PIL import Image

    from editgraph.sharing.provenance import read

    out = []
    workers = {r["row"]: r["worker"] for r in report["rows"]}
    for name in sorted(set(got) | set(want)):
        if got.get(name) == want.get(name):
            continue
        if name not in got or name not in want:
            out.append(f"{name}: only in {'the Ray run' if name in got else 'the local run'}")
            continue
        a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB")) for x in (got[name], want[name]))
        pa, pb = read(got[name]), read(want[name])
        keys = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
        row = int(name.split("/")[0][4:])
        out.append(f"{name} (worker {workers.get(row)}): pixels {'equal' if np.array_equal(a, b) else 'differ'}; provenance differs in {keys}")
    return out


@pytest.mark.slow
def test_the_batch_on_two_nodes_shares_the_encode_through_s3(two_nodes, s3_bucket, table, local_outputs, tmp_path):
    address, env, disks = two_nodes
    cmd = [sys.executable, "-m", "editgraph.cli.main", "batch", "product-variant", "--table", str(table), *FAST, "--threads", "2",
           "--ray", address, "--workers", "2", "--cache", f"s3://{s3_bucket}/team", "--out", str(tmp_path / "out"),
           "--report", str(tmp_path / "r.json"), "-q"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert differences(files_under(tmp_path / "out"), local_outputs, report) == []
    workers = report["ray"]["workers"]
    assert len({w["node"] for w in workers.values()}) == 2  # one worker on each machine
    assert len({r["worker"] for r in report["rows"]}) == 2, "every row ran on one machine"
    s = report["summary"]
    # each machine has its own disk tier, so the one encode reached the other machine through S3
    assert s["node_runs"]["latent"] == 1 and s["ok"] == 20
    assert all(w["node_runs"].get("model") == 1 for w in workers.values())
    assert "20 of 20 rows ok on 2 Ray workers" in done.stdout
    assert all(p.is_dir() for p in disks.values())
