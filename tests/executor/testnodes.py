"""Small node types for executor tests: they make and change tiny images so caching is visible."""

from __future__ import annotations

import os

import torch
from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import Node, NodeParams, node
from editgraph.values.sockets import Image


@node("test.source", version="1.0.0")
class Source(Node):
    """A flat grey image of the given value."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    class Params(NodeParams):
        value: float = Field(0.5, ge=0, le=1, description="grey level")
        size: int = Field(8, ge=1, le=4096, description="width and height")

    def run(self, ctx: RunContext) -> Image:
        return torch.full((1, 3, self.params.size, self.params.size), self.params.value)


@node("test.add", version="1.0.0")
class Add(Node):
    """Add a constant to every pixel."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    class Params(NodeParams):
        amount: float = Field(0.0, description="added to every channel")

    def run(self, ctx: RunContext, image: Image) -> Image:
        return image + self.params.amount


@node("test.mix", version="1.0.0")
class Mix(Node):
    """Average two images."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    def run(self, ctx: RunContext, a: Image, b: Image) -> Image:
        return (a + b) / 2


@node("test.unstable", version="1.0.0", deterministic=False)
class Unstable(Node):
    """Declared non-deterministic (like a live capture); here it always yields the same bytes."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    def run(self, ctx: RunContext, image: Image) -> Image:
        return image.clone()


@node("test.fail", version="1.0.0")
class Fail(Node):
    """Raises while `fail` is true, or while the file named by EDITGRAPH_TEST_FAIL exists."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    class Params(NodeParams):
        fail: bool = Field(False, description="raise instead of passing the image through")

    def run(self, ctx: RunContext, image: Image) -> Image:
        flag = os.environ.get("EDITGRAPH_TEST_FAIL")
        if self.params.fail or (flag and os.path.exists(flag)):
            raise ValueError("told to fail")
        return image * 1


@node("test.steps", version="1.0.0")
class Steps(Node):
    """Pretends to denoise: reports progress for each step."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    class Params(NodeParams):
        steps: int = Field(3, ge=1, le=1000, description="progress events to emit")

    def run(self, ctx: RunContext, image: Image) -> Image:
        for k in range(1, self.params.steps + 1):
            ctx.progress(k, self.params.steps)
        return image * 0.5


def chain(amounts: list[float], prefix: str = "n", source_value: float = 0.5) -> dict:
    """source -> add(a0) -> add(a1) ... as a workflow dict."""
    nodes = {f"{prefix}0": {"type": "test.source", "params": {"value": source_value}}}
    for i, amount in enumerate(amounts, start=1):
        nodes[f"{prefix}{i}"] = {"type": "test.add", "inputs": {"image": f"{prefix}{i - 1}"}, "params": {"amount": amount}}
    return {"format": "editgraph/1", "name": "chain", "nodes": nodes}


@node("test.inplace", version="1.0.0")
class InPlace(Node):
    """Wrongly brightens its input in place."""

    cost_class = "expensive"  # stands in for real work: its outputs always get a disk entry

    def run(self, ctx: RunContext, image: Image) -> Image:
        return image.add_(0.1)


@node("test.quick", version="1.0.0")
class Quick(Node):
    """Add a constant; declares no cost class, so the executor decides from its measured time."""

    class Params(NodeParams):
        amount: float = Field(0.0, description="added to every channel")

    def run(self, ctx: RunContext, image: Image) -> Image:
        return image + self.params.amount


@node("test.cheap", version="1.0.0")
class Cheap(Node):
    """Add a constant; declared cheap: its output never gets a disk entry."""

    cost_class = "cheap"

    class Params(NodeParams):
        amount: float = Field(0.0, description="added to every channel")

    def run(self, ctx: RunContext, image: Image) -> Image:
        return image + self.params.amount
