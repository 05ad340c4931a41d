"""Write-behind and cost-aware persistence (issue 16): a killed run leaves only whole entries,
outputs not worth storing are recomputed from their stored parents, and the report says which
outputs were stored and why not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
import pytest
import torch

from editgraph.cli.main import main
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.persist import Persistence
from editgraph.executor.run import Executor
from editgraph.executor.store import MISSING, DiskStore
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

from . import indexrows
from .testnodes import chain

REPO = Path(__file__).resolve().parents[2]
NEVER_WORTH_IT = Persistence(file_s=3600.0, row_s=3600.0)  # every measured output stays in memory


def _doc(nodes: dict) -> dict:
    return {"format": "editgraph/1", "name": "t", "nodes": nodes}


@pytest.mark.slow
def test_sigkill_with_writes_pending_leaves_no_torn_entry_and_the_rerun_is_correct(tmp_path):
    """A chain of large outputs (48 MiB each) is killed while the writer still has files queued.
    Whatever the index lists must be whole and right; files under their final names must match
    their names; a fresh run finishes the chain with the right pixels."""
    cache = tmp_path / "cache"
    doc = chain([0.01] * 12)
    doc["nodes"]["n0"]["params"]["size"] = 2048
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.executor import testnodes
        from editgraph.executor.cache import Cache
        from editgraph.executor.events import NodeFinished
        from editgraph.executor.run import Executor
        from editgraph.graph.document import load_workflow
        from editgraph.graph.validate import bind
        cache = Cache.default({str(cache)!r})
        def report(event):
            if isinstance(event, NodeFinished):
                print(json.dumps({{"node": event.node_id, "pending": cache.disk.pending()}}), flush=True)
        Executor(cache, listeners=[report]).run(bind(load_workflow({doc!r})))
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    killed_with = None
    for line in proc.stdout:
        if line.startswith("done"):
            break
        state = json.loads(line)
        if state["pending"] > 0 and int(state["node"][1:]) >= 4:  # several files queued or being written
            os.kill(proc.pid, signal.SIGKILL)
            killed_with = state
            break
    proc.wait()
    assert killed_with is not None, "the writer was never behind: nothing was pending to lose"

    store = DiskStore(cache, 1 << 40)
    nrefs = indexrows.committed(store._db)
    listed = [fp for (fp,) in store._db.execute("SELECT fp FROM blobs")]
    for fp in listed:  # every listed entry is whole and decodes
        assert store.get_blob(fp) is not MISSING
    for path in (cache / "blobs").rglob("*"):
        if path.is_file() and not path.name.endswith(".tmp"):
            assert blake3.blake3(path.read_bytes()).hexdigest() == path.name  # no torn file under a final name
    stored_values = sorted(round(store.get_blob(fp).flatten()[0].item(), 4) for fp in listed)
    assert stored_values == [round(0.5 + 0.01 * i, 4) for i in range(len(listed))]  # a prefix of the chain, right values
    assert len(listed) < 13  # the kill did lose queued work
    store.close()

    log = EventLog()
    ex = Executor(Cache.default(cache), listeners=[log])
    result = ex.run(bind(load_workflow(doc)))
    assert torch.allclose(result.value("n12"), torch.full((1, 3, 2048, 2048), 0.62))
    assert log.ran()[-1] == "n12" and len(log.ran()) + len(log.cached()) == 13
    assert log.cached() == [f"n{i}" for i in range(len(log.cached()))]  # what survived is reused, in order
    ex.cache.close()


@pytest.mark.slow
def test_output_below_the_threshold_is_recomputed_in_a_new_process_from_its_stored_parent(tmp_path):
    cache = tmp_path / "cache"
    doc = _doc(
        {
            "src": {"type": "test.source", "params": {"value": 0.2, "size": 64}},
            "quick": {"type": "test.quick", "inputs": {"image": "src"}, "params": {"amount": 0.1}},
            "after": {"type": "test.add", "inputs": {"image": "quick"}, "params": {"amount": 0.3}},
        }
    )
    ex = Executor(Cache.default(cache), persistence=NEVER_WORTH_IT)
    result = ex.run(bind(load_workflow(doc)))
    assert result.records["src"].persisted is True and result.records["after"].persisted is True  # declared expensive
    assert result.records["quick"].persisted is False
    assert ex.cache.disk.info()["outputs_recompute"] == 1
    ex.cache.close()

    doc["nodes"]["after"]["params"]["amount"] = 0.4  # needs quick's value, which only memory had
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.executor import testnodes
        from editgraph.executor.cache import Cache
        from editgraph.executor.events import EventLog
        from editgraph.executor.run import Executor
        from editgraph.graph.document import load_workflow
        from editgraph.graph.validate import bind
        log = EventLog()
        r = Executor(Cache.default({str(cache)!r}), listeners=[log]).run(bind(load_workflow({doc!r})))
        print(json.dumps({{"ran": log.ran(), "cached": log.cached(), "value": r.value("after").flatten()[0].item()}}))
        """
    )
    out = json.loads(subprocess.check_output([sys.executable, "-c", script], text=True))
    assert out["ran"] == ["quick", "after"]  # quick re-run from src's stored output; src did not run
    assert out["cached"] == ["src", "quick"]  # quick's key was known (its ref is stored), its value was not
    assert abs(out["value"] - 0.7) < 1e-6


def test_report_records_each_nodes_persistence_decision(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.json").write_text(
        json.dumps(
            _doc(
                {
                    "src": {"type": "test.source", "params": {"value": 0.2, "size": 64}},
                    "cheap": {"type": "test.cheap", "inputs": {"image": "src"}, "params": {"amount": 0.1}},
                }
            )
        )
    )
    assert main(["run", "wf.json", "--cache-dir", "c", "--report", "r.json", "-q"]) == 0
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert nodes["src"]["persisted"] is True and "why_not" not in nodes["src"]
    assert nodes["cheap"]["persisted"] is False and nodes["cheap"]["why_not"] == "declared cheap: recomputing beats reading back"

    assert main(["run", "wf.json", "--cache-dir", "c", "--report", "r.json", "-q"]) == 0
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert nodes["src"]["status"] == "cached" and "persisted" not in nodes["src"]  # decided by the run that made it

    assert main(["run", "wf.json", "--no-cache", "--report", "r.json", "-q"]) == 0
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert nodes["src"]["persisted"] is False and nodes["src"]["why_not"] == "no disk tier"

    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", "c"]) == 0
    assert "outputs: 2 named by entries; 1 stored, 1 recomputed when needed" in capsys.readouterr().out


def test_back_pressure_bounds_pending_bytes_and_flush_makes_writes_durable(tmp_path):
    """With room for one pending file, every queued blob still lands, and after flush() a
    second store (as another process would) reads each one."""
    store = DiskStore(tmp_path, 1 << 40, max_pending_bytes=1)
    from editgraph.values.codec import encode

    fps = []
    for i in range(6):
        enc = encode(torch.full((1, 3, 64, 64), float(i)))
        store.put_blob(enc.fingerprint(), enc)
        assert store._queued_bytes <= enc.nbytes  # never more than one file's bytes queued
        fps.append(enc.fingerprint())
    store.put_ref("k", {"image": fps[-1]})
    store.flush()
    assert store.pending() == 0
    other = DiskStore(tmp_path, 1 << 40)
    assert other.get_ref("k") == {"image": fps[-1]}
    assert [other.get_blob(fp).flatten()[0].item() for fp in fps] == [float(i) for i in range(6)]
    store.close()
    other.close()


def test_the_disk_tier_measures_its_write_rate_and_a_new_process_starts_from_it(tmp_path):
    """Large files time the disk's sustained write rate (small ones do not: fixed costs dominate
    them); the rate is kept in the index, so the next store on that folder starts from it."""
    from editgraph.values.codec import encode

    store = DiskStore(tmp_path, 1 << 40)
    assert store.write_bps is None  # nothing measured yet: the persistence defaults apply
    small = encode(torch.zeros(1, 3, 64, 64))  # 48 KiB: a file, but below the measured size
    store.put_blob(small.fingerprint(), small)
    store.flush()
    assert store.write_bps is None
    big = encode(torch.ones(1, 3, 512, 512))  # 3 MiB
    store.put_blob(big.fingerprint(), big)
    store.flush()
    measured = store.write_bps
    assert measured is not None and measured > 0
    store.close()
    again = DiskStore(tmp_path, 1 << 40)
    assert again.write_bps == measured
    again.close()


def test_outputs_are_priced_at_the_disk_tiers_measured_rate(tmp_path):
    """The same measured node, the same 768 KiB output: stored while the disk is fast (the default
    rate), kept in memory once the disk tier has measured a slow one; the report says why. (Files
    under 1 MiB are not timed, so this run's own writes leave the rate as set.)"""
    fast = Persistence(file_s=0.0, write_bps=1e15, read_bps=float("inf"), budget=float("inf"))  # storing costs ~nothing
    doc = _doc(
        {
            "src": {"type": "test.source", "params": {"value": 0.2, "size": 256}},
            "quick": {"type": "test.quick", "inputs": {"image": "src"}, "params": {"amount": 0.1}},
        }
    )
    ex = Executor(Cache.default(tmp_path / "a"), persistence=fast)
    assert ex.cache.disk.write_bps is None
    result = ex.run(bind(load_workflow(doc)))
    assert result.records["quick"].persisted is True
    ex.cache.close()

    ex = Executor(Cache.default(tmp_path / "b"), persistence=fast)
    ex.cache.disk.write_bps = 1e3  # as its writer measures on a disk that takes 1 KB/s
    result = ex.run(bind(load_workflow(doc)))
    assert result.records["src"].persisted is True  # declared expensive: stored whatever the disk
    assert result.records["quick"].persisted is False
    assert "writing and reading back 786" in result.records["quick"].why_not
    ex.cache.close()


@pytest.mark.parametrize("mode, stored", [("cost", False), ("always", True)])
def test_the_persist_setting_picks_cost_aware_or_always_on_a_disk_pinned_slow(tmp_path, monkeypatch, mode, stored):
    """EDITGRAPH_PERSIST: "cost" (the users' default) prices a measured node's 768 KiB output at the
    disk's rate, pinned here at 1 KB/s, and keeps it in memory; "always" (the test suite's, so
    re-run assertions do not follow the disk's speed) stores it whatever the disk. A new process
    then re-runs the node only where it was not stored."""
    from editgraph.settings import Settings

    monkeypatch.setenv("EDITGRAPH_PERSIST", mode)
    doc = _doc(
        {
            "src": {"type": "test.source", "params": {"value": 0.2, "size": 256}},
            "quick": {"type": "test.quick", "inputs": {"image": "src"}, "params": {"amount": 0.1}},
            "after": {"type": "test.add", "inputs": {"image": "quick"}, "params": {"amount": 0.3}},
        }
    )
    ex = Executor(Cache.default(tmp_path / "c"))
    ex.cache.disk.write_bps = 1e3  # as its writer measures on a disk that takes 1 KB/s
    result = ex.run(bind(load_workflow(doc)))
    assert result.records["quick"].persisted is stored
    assert (result.records["quick"].why_not is None) is stored
    ex.cache.close()

    doc["nodes"]["after"]["params"]["amount"] = 0.4  # needs quick's value: from disk, or re-made
    log = EventLog()
    fresh = Executor(Cache.default(tmp_path / "c"), listeners=[log])  # a new memory tier, as a new process has
    assert abs(fresh.run(bind(load_workflow(doc))).value("after").flatten()[0].item() - 0.7) < 1e-6
    assert log.ran() == (["after"] if stored else ["quick", "after"])
    fresh.cache.close()

    monkeypatch.setenv("EDITGRAPH_PERSIST", "sometimes")
    with pytest.raises(Exception, match=r"persist \(EDITGRAPH_PERSIST\) must be one of cost, always, got 'sometimes'"):
        Settings.from_env()


def test_a_runs_writes_of_measured_outputs_stay_within_its_budget():
    """Each write worth making is granted while the run's measured writes stay within 5 % of the
    time its nodes ran; declared-expensive outputs and ALWAYS are not held to it."""
    from editgraph.executor.persist import ALWAYS, RunBudget

    p = Persistence(file_s=1e-3, write_bps=1e9, read_bps=float("inf"), budget=0.05)
    budget = RunBudget(p.budget)
    budget.ran_s = 0.1  # the run's nodes took 100 ms so far: 5 ms of writes
    nbytes = 1 << 20  # 1 ms a file + 1.049 ms of bytes
    assert p.why_not("measured", 10.0, nbytes, None, budget) is None
    assert p.why_not("measured", 10.0, nbytes, None, budget) is None
    assert p.why_not("measured", 10.0, nbytes, None, budget) == (
        "over the run's write budget: writing 1048576 bytes (2.049 ms) would pass 5% of its nodes' 100.0 ms"
    )
    assert p.why_not("expensive", 0.0, nbytes, None, budget) is None
    assert ALWAYS.why_not("measured", 0.0, nbytes, 1.0, RunBudget(ALWAYS.budget)) is None


def test_an_output_cheaper_to_recompute_than_to_store_says_both_costs_and_the_rate_used():
    """A file costs its fixed cost, its bytes at the disk's measured rate (once measured) and their
    read back; an inline row its row cost. The reason names both sides in ms."""
    p = Persistence(file_s=1e-3, row_s=30e-6, write_bps=1e9, read_bps=0.5e9)
    big = 1 << 20  # 1 ms + 1.049 ms written at 1 GB/s + 2.097 ms read back
    assert p.why_not("measured", 2e-3, big) == (
        "recomputing (2.000 ms) costs less than writing and reading back 1048576 bytes (4.146 ms)")
    assert p.why_not("measured", 5e-3, big) is None
    # measured at 250 MB/s: the write takes 4.194 ms
    assert p.why_not("measured", 5e-3, big, write_bps=250e6) == (
        "recomputing (5.000 ms) costs less than writing and reading back 1048576 bytes (7.291 ms)")
    assert Persistence(measured=False).why_not("measured", 5e-3, big, write_bps=250e6) is None
    # an inline row: 30 us + 1 us written + 2 us read back
    assert p.why_not("measured", 20e-6, 1000) == (
        "recomputing (0.020 ms) costs less than writing and reading back 1000 bytes (0.033 ms)")
    assert p.why_not("cheap", 1.0, 1000) == "declared cheap: recomputing beats reading back"


def test_the_report_says_when_the_runs_write_budget_kept_an_output_in_memory(tmp_path):
    worth_it_but_no_budget = Persistence(factor=0.0, budget=0.0)
    doc = _doc(
        {
            "src": {"type": "test.source", "params": {"value": 0.2, "size": 8}},  # index rows: no file queued
            "quick": {"type": "test.quick", "inputs": {"image": "src"}, "params": {"amount": 0.1}},
        }
    )
    ex = Executor(Cache.default(tmp_path / "c"), persistence=worth_it_but_no_budget)
    result = ex.run(bind(load_workflow(doc)))
    assert result.records["src"].persisted is True  # declared expensive
    assert result.records["quick"].persisted is False
    assert result.records["quick"].why_not.startswith("over the run's write budget: writing 8")
    ex.cache.close()


def test_a_measured_output_does_not_queue_behind_the_writers_unfinished_files():
    """On a disk slower than priced, optional files must not build a queue the run's end waits
    for: while the writer has file bytes queued, a measured file output stays in memory; small
    (inline) outputs, expensive outputs and ALWAYS are unaffected."""
    from editgraph.executor.persist import ALWAYS, RunBudget

    p = Persistence(file_s=0.0, write_bps=1e12, read_bps=float("inf"))
    budget = RunBudget(p.budget)
    budget.ran_s = 1.0
    big = 1 << 20
    assert p.why_not("measured", 1.0, big, None, budget, queued=0) is None
    assert p.why_not("measured", 1.0, big, None, budget, queued=3 << 20) == (
        "the disk tier's writer is still busy (3145728 bytes queued): a measured output does not wait in line"
    )
    assert p.why_not("measured", 1.0, 1000, None, budget, queued=3 << 20) is None  # an index row, not a file
    assert p.why_not("expensive", 0.0, big, None, budget, queued=3 << 20) is None
    assert ALWAYS.why_not("measured", 0.0, big, None, RunBudget(ALWAYS.budget), queued=3 << 20) is None
