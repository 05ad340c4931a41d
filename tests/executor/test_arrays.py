"""Numpy and torch values in one run (Node.arrays, issue 13): each node is handed the kind of array
it declares, both kinds encode to the same bytes (so keys and cache entries do not depend on which
kind carried a value), and what leaves the engine is a torch tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import Node, NodeDefinitionError, NodeParams, node
from editgraph.values.codec import decode, encode, fingerprint
from editgraph.values.sockets import Image, Latent

SEEN: dict[str, type] = {}  # node id -> the type of array its run() was handed


@node("test.np_ramp", version="1.0.0")
class NpRamp(Node):
    """A horizontal ramp, made with numpy."""

    arrays = "numpy"
    cost_class = "expensive"

    class Params(NodeParams):
        width: int = Field(8, ge=1, le=64, description="width in px")

    def run(self, ctx: RunContext) -> Image:
        row = np.arange(self.params.width, dtype=np.float32) / np.float32(self.params.width)
        return np.ascontiguousarray(np.broadcast_to(row, (1, 3, 4, self.params.width)))


@node("test.np_invert", version="1.0.0")
class NpInvert(Node):
    """1 - image, with numpy; records what it was handed."""

    arrays = "numpy"
    cost_class = "expensive"

    def run(self, ctx: RunContext, image: Image) -> Image:
        SEEN[ctx.node_id] = type(image)
        return np.float32(1.0) - image


@node("test.torch_half", version="1.0.0")
class TorchHalf(Node):
    """image / 2, with torch; records what it was handed."""

    cost_class = "expensive"

    def run(self, ctx: RunContext, image: Image) -> Image:
        SEEN[ctx.node_id] = type(image)
        return image / 2


def doc() -> dict:
    return {
        "format": "editgraph/1",
        "nodes": {
            "ramp": {"type": "test.np_ramp"},
            "half": {"type": "test.torch_half", "inputs": {"image": "ramp"}},
            "inv": {"type": "test.np_invert", "inputs": {"image": "half"}},
            "half2": {"type": "test.torch_half", "inputs": {"image": "inv"}},
        },
    }


def expected() -> np.ndarray:
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32) / np.float32(8), (1, 3, 4, 8))
    return ((np.float32(1.0) - ramp / np.float32(2)) / np.float32(2)).astype(np.float32)


def test_each_node_gets_the_arrays_it_declares_and_results_are_tensors(runner):
    SEEN.clear()
    result = runner(doc())
    assert SEEN == {"half": torch.Tensor, "inv": np.ndarray, "half2": torch.Tensor}
    out = result.value("half2")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), expected())
    ramp = result.value("ramp")  # made by a numpy node, handed out as a tensor
    assert isinstance(ramp, torch.Tensor) and ramp.shape == (1, 3, 4, 8)


def test_a_new_process_reads_numpy_made_entries_back_as_the_same_values(runner):
    first = runner(doc())
    keys = {nid: rec.key for nid, rec in first.records.items()}
    SEEN.clear()
    again = runner(doc(), fresh=True, targets=["half2"])
    assert runner.log.cached() == ["ramp", "half", "inv", "half2"]
    assert {nid: rec.key for nid, rec in again.records.items()} == keys
    assert np.array_equal(again.value("half2").numpy(), expected())
    # a changed torch node downstream of a numpy node: reads the numpy node's entry from disk
    changed = doc()
    changed["nodes"]["inv"]["inputs"] = {"image": "ramp"}
    SEEN.clear()
    out = runner(changed, fresh=True).value("half2")
    assert runner.log.ran() == ["inv", "half2"]
    assert SEEN == {"inv": np.ndarray, "half2": torch.Tensor}
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32) / np.float32(8), (1, 3, 4, 8))
    assert np.array_equal(out.numpy(), (np.float32(1.0) - ramp) / np.float32(2))


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "bool", "int64"])
def test_numpy_and_torch_encode_to_the_same_bytes(dtype):
    arr = (np.arange(24).reshape(1, 2, 3, 4) % 3).astype(dtype)
    t = torch.from_numpy(arr.copy())
    assert encode(arr).tobytes() == encode(t).tobytes()
    assert fingerprint(arr) == fingerprint(t)
    back = decode(encode(arr).tobytes())  # this process has torch: tensors come back
    assert isinstance(back, torch.Tensor) and torch.equal(back, t)
    # inside a struct, and a non-contiguous view, too
    lat = Latent(samples=torch.from_numpy(arr.astype(np.float32)), family="sd1")
    assert encode(lat).tobytes() == encode(Latent(samples=arr.astype(np.float32), family="sd1")).tobytes()
    view = arr.transpose(0, 1, 3, 2)
    assert fingerprint(view) == fingerprint(torch.from_numpy(arr).transpose(2, 3))


def test_an_unknown_array_kind_is_refused_at_definition():
    with pytest.raises(NodeDefinitionError, match="arrays must be one of"):

        @node("test.bad_arrays", version="1.0.0")
        class Bad(Node):
            """Declares an array library the executor does not know."""

            arrays = "jax"

            def run(self, ctx: RunContext) -> Image:
                raise AssertionError


def test_threads_asked_before_torch_was_imported_apply_when_a_torch_node_needs_the_device(monkeypatch):
    """`--threads N` with torch not yet imported waits (devices.set_threads); a named device
    imports torch at once, and the count must still be applied before the first torch node."""
    from editgraph.executor import devices

    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "_pending_threads", [before + 1])  # as set_threads leaves it without torch
    try:
        device = devices.RunDevice(torch.device("cpu"))  # named: resolved at once
        assert torch.get_num_threads() == before
        assert device.get() == torch.device("cpu")
        assert torch.get_num_threads() == before + 1 and devices._pending_threads == []
        assert devices.torch_threads() == before + 1 and devices.torch_threads(uses_torch=False) is None
    finally:
        torch.set_num_threads(before)
