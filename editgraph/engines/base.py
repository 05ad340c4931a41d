"""The contract every edit engine meets, local or hosted.

An engine takes an EditJob (source picture, optional mask and references, an instruction, a seed
when it takes one) and returns an EditResult: the pictures and one record per call that says what
the provider reported (request id, usage), what it cost and whether the seed reproduces it.
Engines are named "provider:model" (openai:gpt-image-1, gemini:gemini-2.5-flash-image,
bfl:flux-kontext-pro, local:tiny-sd-inpaint); names are what routing tables list.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from editgraph.engines.errors import MalformedResponse
from editgraph.errors import NodeError

if TYPE_CHECKING:  # pixels are torch tensors; declaring jobs and routes must not import torch
    import torch

Operation = Literal["inpaint", "reference", "instruction", "generate"]


@dataclass(frozen=True)
class EditJob:
    instruction: str
    image: torch.Tensor | None  # (1, 3, H, W) 0..1; None: generate from the instruction alone
    mask: torch.Tensor | None = None  # (1, 1, H, W) 0..1, 1 = change (our convention; engines convert)
    references: tuple[torch.Tensor, ...] = ()  # each (1, 3, h, w)
    seed: int | None = None
    n: int = 1
    size: str = "auto"  # "auto" (the source's size, or the engine's default), "WxH" or an aspect "16:9"
    quality: str = "auto"  # OpenAI: low / medium / high / auto; others ignore it

    @property
    def operation(self) -> Operation:
        if self.image is None:
            return "generate"
        if self.mask is not None:
            return "inpaint"
        if self.references:
            return "reference"
        return "instruction"


@dataclass
class CallRecord:
    """What one engine call did; goes to the report and the provenance (never a key)."""

    engine: str  # provider:model
    provider: str
    model: str
    request_id: str | None
    usage: dict[str, Any]
    cost_usd: float
    seed: int | None  # the seed sent, when the provider takes one
    reproducible: bool  # True only where the same seed gives the same pixels (local engines)
    images: int = 1

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EditResult:
    images: list[torch.Tensor]  # each (1, 3, H, W) 0..1
    calls: list[CallRecord] = field(default_factory=list)


@dataclass
class Services:
    """What a run lends an engine: a cancel event, a ledger that authorizes and records spend,
    and a gate that lets other rows' local work proceed while this call waits on the network."""

    cancel: Any = None
    ledger: Any = None  # editgraph.engines.spend.Ledger | None
    node_id: str = ""
    waiting: Callable[[], AbstractContextManager] = nullcontext
    progress: Callable[[int, int], None] | None = None


class Engine:
    """Base of engines. Subclasses set the class attributes and implement run() and estimate()."""

    provider: ClassVar[str]
    supports: ClassVar[frozenset[str]]  # operations it can do: inpaint, reference, instruction, generate
    takes_seed: ClassVar[bool] = False
    reproducible: ClassVar[bool] = False  # same seed, same pixels
    max_references: ClassVar[int] = 0

    def __init__(self, model: str):
        self.model = model

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def check(self, job: EditJob) -> None:
        """Refuse a job this engine cannot do, before anything is sent or paid for."""
        if job.operation not in self.supports:
            raise NodeError(f"engine {self.name} cannot do a {job.operation} edit; it supports {', '.join(sorted(self.supports))}")
        if len(job.references) > self.max_references:
            raise NodeError(f"engine {self.name} takes at most {self.max_references} reference images, got {len(job.references)}")

    def estimate(self, job: "JobShape") -> float:
        raise NotImplementedError

    def run(self, job: EditJob, services: Services) -> EditResult:
        raise NotImplementedError


@dataclass(frozen=True)
class JobShape:
    """What an estimate knows before anything runs: sizes and counts, no pixels."""

    operation: Operation
    width: int = 1024
    height: int = 1024
    references: int = 0
    n: int = 1
    size: str = "auto"
    quality: str = "auto"
    instruction_chars: int = 200


def shape_of(job: EditJob) -> JobShape:
    h, w = job.image.shape[-2:] if job.image is not None else (1024, 1024)
    return JobShape(job.operation, int(w), int(h), len(job.references), job.n, job.size, job.quality, len(job.instruction))


# --- pixels <-> bytes ------------------------------------------------------------------------


def png_bytes(image: torch.Tensor, alpha: torch.Tensor | None = None) -> bytes:
    """(1, C, H, W) 0..1 -> PNG bytes (RGB, or RGBA with `alpha` (1, 1, H, W))."""
    import torch
    from PIL import Image as PILImage

    planes = image[0] if alpha is None else torch.cat([image[0], alpha[0]], 0)
    arr = (planes.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    PILImage.fromarray(arr, "RGB" if alpha is None else "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes, provider: str) -> torch.Tensor:
    """Image bytes a provider returned -> (1, 3, H, W) float32 0..1, or MalformedResponse."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as pil:
            arr = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for garbage
        raise MalformedResponse(provider, f"the returned image does not decode ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def fit_to(image: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
    """A provider's picture resized to the source's size (providers return their own sizes), so
    the result drops into paste-back and composite nodes."""
    if like is None or image.shape[-2:] == like.shape[-2:]:
        return image
    import torch.nn.functional as F

    return F.interpolate(image, size=tuple(like.shape[-2:]), mode="bicubic", antialias=True).clamp(0, 1)


def one_image(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dim() != 4 or t.shape[0] != 1:
        raise NodeError(f"{what}: hosted engines take one picture at a time, got a batch of shape {tuple(t.shape)}")
    return t
