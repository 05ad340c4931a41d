"""Which nodes run: the executor's whole reason to exist, asserted node by node."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from editgraph.errors import NodeFailed
from editgraph.executor.events import NodeFinished, NodeProgress, RunPlanned

from .testnodes import chain

REPO = Path(__file__).resolve().parents[2]


def test_first_run_runs_everything_then_nothing(runner):
    doc = chain([0.1, 0.1, 0.1])
    result = runner(doc)
    assert runner.log.ran() == ["n0", "n1", "n2", "n3"]
    assert torch.allclose(result.value("n3"), torch.full((1, 3, 8, 8), 0.8))
    runner(doc)
    assert runner.log.ran() == []
    assert runner.log.cached() == ["n0", "n1", "n2", "n3"]


def test_changing_the_last_node_runs_only_it(runner):
    doc = chain([0.1, 0.1, 0.1])
    runner(doc)
    doc["nodes"]["n3"]["params"]["amount"] = 0.2
    result = runner(doc)
    assert runner.log.ran() == ["n3"]
    assert torch.allclose(result.value("n3"), torch.full((1, 3, 8, 8), 0.9))


def test_changing_a_middle_node_runs_it_and_descendants_not_ancestors(runner):
    doc = chain([0.1, 0.1, 0.1, 0.1])
    runner(doc)
    doc["nodes"]["n2"]["params"]["amount"] = 0.05  # (0.0 would equal n1's bytes: content keys reuse that)
    runner(doc)
    assert runner.log.ran() == ["n2", "n3", "n4"]
    assert runner.log.cached() == ["n0", "n1"]


def test_renaming_every_node_id_runs_nothing(runner):
    runner(chain([0.1, 0.2]))
    runner(chain([0.1, 0.2], prefix="other_"))
    assert runner.log.ran() == []
    assert runner.log.cached() == ["other_0", "other_1", "other_2"]


def test_same_subgraph_in_two_workflows_shares_entries(runner):
    runner(chain([0.1, 0.2]))
    doc = chain([0.1, 0.2, 0.3])
    runner(doc)
    assert runner.log.ran() == ["n3"]


def test_fresh_executor_on_same_disk_cache_runs_nothing(runner):
    doc = chain([0.1, 0.1])
    runner(doc)
    result = runner(doc, fresh=True)
    assert runner.log.ran() == []
    assert torch.allclose(result.value("n2"), torch.full((1, 3, 8, 8), 0.7))


@pytest.mark.slow  # a new process (and a tiny-model build or torch import): over 5 s
def test_second_process_runs_nothing(tmp_path):
    """Keys are stable across processes (no salted hash(), no ids, no memory addresses)."""
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
        r = Executor(Cache.default({str(tmp_path / 'cache')!r}), listeners=[log]).run(
            bind(load_workflow(testnodes.chain([0.1, 0.2, 0.05]))))
        print(json.dumps({{"ran": log.ran(), "value": r.value("n3").flatten()[0].item()}}))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    runs = [json.loads(subprocess.check_output([sys.executable, "-c", script], env=env, text=True)) for _ in range(2)]
    assert runs[0]["ran"] == ["n0", "n1", "n2", "n3"]
    assert runs[1]["ran"] == []
    assert runs[0]["value"] == runs[1]["value"]


def test_rerun_with_identical_bytes_invalidates_nothing_downstream(runner):
    """test.unstable is never served from cache, but its output fingerprint is unchanged,
    so the nodes after it keep their keys."""
    doc = chain([0.1])
    doc["nodes"]["u"] = {"type": "test.unstable", "inputs": {"image": "n1"}}
    doc["nodes"]["d1"] = {"type": "test.add", "inputs": {"image": "u"}, "params": {"amount": 0.3}}
    doc["nodes"]["d2"] = {"type": "test.add", "inputs": {"image": "d1"}, "params": {"amount": 0.1}}
    runner(doc)
    runner(doc)
    assert runner.log.ran() == ["u"]
    assert runner.log.cached() == ["n0", "n1", "d1", "d2"]


def test_upstream_change_with_same_output_bytes_keeps_descendants_cached(runner):
    """Two different params that produce identical pixels: the node reruns, its children do not."""
    doc = chain([0.25, 0.1])
    runner(doc)
    doc["nodes"]["n0"]["params"]["value"] = 0.25
    doc["nodes"]["n1"]["params"]["amount"] = 0.5  # 0.25 + 0.5 == 0.5 + 0.25
    runner(doc)
    assert runner.log.ran() == ["n0", "n1"]
    assert runner.log.cached() == ["n2"]


def test_cached_values_not_needed_are_never_loaded(runner, monkeypatch):
    doc = chain([0.1, 0.1, 0.1])
    runner(doc)
    doc["nodes"]["n3"]["params"]["amount"] = 0.3
    runner(doc, fresh=True)  # empty memory tier: every load would hit the disk
    loaded = []
    disk = runner.executor.cache.disk
    original = disk.get_blob
    monkeypatch.setattr(disk, "get_blob", lambda fp: loaded.append(fp) or original(fp))
    runner.executor.cache.memory.clear()
    doc["nodes"]["n3"]["params"]["amount"] = 0.4
    runner.log.clear()
    result = runner.executor.run(runner_bind(doc))
    assert runner.log.ran() == ["n3"]
    assert loaded == [result.fingerprints[("n2", "image")]]  # only n3's input, not n0/n1's outputs


def runner_bind(doc):
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    return bind(load_workflow(doc))


def test_failure_names_node_and_keeps_earlier_work(runner):
    doc = chain([0.1, 0.1])
    doc["nodes"]["bad"] = {"type": "test.fail", "inputs": {"image": "n2"}, "params": {"fail": True}}
    doc["nodes"]["after"] = {"type": "test.add", "inputs": {"image": "bad"}, "params": {"amount": 0.1}}
    with pytest.raises(NodeFailed) as info:
        runner(doc)
    assert info.value.node_id == "bad" and info.value.node_type == "test.fail"
    assert "node 'bad' (test.fail) failed: ValueError: told to fail" in str(info.value)
    assert runner.log.ran() == ["n0", "n1", "n2"]
    fixed = copy.deepcopy(doc)
    fixed["nodes"]["bad"]["params"]["fail"] = False
    runner(fixed, fresh=True)  # a new process after the fix: disk tier only
    assert runner.log.ran() == ["bad", "after"]
    assert runner.log.cached() == ["n0", "n1", "n2"]


def test_events_carry_plan_progress_and_timing(runner):
    doc = chain([0.1])
    doc["nodes"]["s"] = {"type": "test.steps", "inputs": {"image": "n1"}, "params": {"steps": 4}}
    runner(doc)
    events = list(runner.log)
    assert events[0] == RunPlanned(("n0", "n1", "s"))
    steps = [(e.step, e.total) for e in events if isinstance(e, NodeProgress)]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert [e.node_id for e in finished] == ["n0", "n1", "s"]
    assert all(e.seconds >= 0 and len(e.key) == 64 for e in finished)
    assert finished[-1].nbytes > 8 * 8 * 3 * 4  # the encoded image: header + float32 pixels


def test_only_needed_nodes_run(runner):
    doc = chain([0.1, 0.1])
    doc["nodes"]["side"] = {"type": "test.add", "inputs": {"image": "n0"}, "params": {"amount": 0.9}}
    runner(doc, targets=["n2"])
    assert runner.log.ran() == ["n0", "n1", "n2"]


def test_no_cache_runs_everything(tmp_path):
    from editgraph.executor.cache import Cache
    from editgraph.executor.events import EventLog
    from editgraph.executor.run import Executor

    log = EventLog()
    ex = Executor(Cache.default(tmp_path / "c"), listeners=[log], use_cache=False)
    g = runner_bind(chain([0.1]))
    ex.run(g)
    ex.run(g)
    assert log.ran() == ["n0", "n1", "n0", "n1"]


def test_node_writing_into_its_input_is_caught(runner):
    doc = chain([0.1])
    doc["nodes"]["bad"] = {"type": "test.inplace", "inputs": {"image": "n1"}}
    with pytest.raises(NodeFailed, match=r"node 'bad' \(test.inplace\) failed: RuntimeError: run\(\) modified its input 'image' in place"):
        runner(doc)
