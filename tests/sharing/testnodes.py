"""Test-only node types for the sharing tests: a seeded noise, a fake model and a node that fails on demand."""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
import torch
from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import Node, NodeParams, Seed, node
from editgraph.values.sockets import Image, Model


@node("sharetest.noise", version="1.0.0")
class Noise(Node):
    """Add seeded uniform noise (stands in for a denoiser: its pixels depend on the seed)."""

    generative = True  # a denoiser's stand-in: outputs downstream carry the AI disclosure

    class Params(NodeParams):
        seed: Seed = Field(0, description="noise seed, or 'random'")
        amount: float = Field(0.2, ge=0, le=1, description="noise strength")

    def run(self, ctx: RunContext, image: Image) -> Image:
        g = torch.Generator().manual_seed(int(self.params.seed))
        return (image + self.params.amount * (torch.rand(image.shape, generator=g) - 0.5)).clamp(0, 1)


@dataclass(eq=False)
class FakeModel(Model):
    name: str
    content_hash: str
    family: str = "fake"


@node("sharetest.model_load", version="1.0.0")
class LoadFakeModel(Node):
    """Pretend to load a model by name; its content hash is the hash of the name."""

    class Params(NodeParams):
        model: str = Field("fake-sd", description="model name")

    def run(self, ctx: RunContext) -> FakeModel:
        return FakeModel(self.params.model, blake3.blake3(self.params.model.encode()).hexdigest())


@node("sharetest.tint", version="1.0.0")
class Tint(Node):
    """Darken the image a little 'with the model'."""

    def run(self, ctx: RunContext, model: Model, image: Image) -> Image:
        return image * 0.9


@node("sharetest.fail_on", version="1.0.0")
class FailOn(Node):
    """Pass the image through, but fail while the file named by $SHARETEST_FAIL holds `value`."""

    class Params(NodeParams):
        value: int = Field(0, description="compared with the flag file's text")

    def run(self, ctx: RunContext, image: Image) -> Image:
        flag = os.environ.get("SHARETEST_FAIL")
        if flag and os.path.exists(flag) and open(flag).read().strip() == str(self.params.value):
            raise ValueError(f"told to fail at value {self.params.value}")
        return image * 1
