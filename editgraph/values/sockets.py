"""Socket types: what flows along an edge of the graph.

Images and masks are plain float32 tensors (annotated, so a node's signature still says which one
it takes); the richer values are small dataclasses the cache knows how to encode.

| socket        | value                                              |
|---------------|----------------------------------------------------|
| Image         | float32 tensor (B, 3, H, W), 0..1, sRGB             |
| Mask          | float32 tensor (B, 1, H, W), 0..1, 1 = change       |
| Latent        | Latent(samples (B, C, h, w), family)               |
| Conditioning  | Conditioning(embeds, negative, pooled ...)         |
| Model         | a handle to loaded components; never stored        |
| Artifact      | finished files (name -> bytes) for the output folder |
| CallLog       | what an engine node's calls did (request ids, usage, cost, scores) |
| Reference(s)  | encoded reference picture(s) for the flow-matching edit families |
| ImageEmbeds   | reference picture(s) encoded by an IP-Adapter's image encoder (SD 1.x, SDXL) |
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

from editgraph.values.structs import storable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SocketType:
    name: str
    doc: str

    def __repr__(self) -> str:
        return self.name


IMAGE = SocketType("Image", "float32 tensor (B, 3, H, W), values 0..1, sRGB")
MASK = SocketType("Mask", "float32 tensor (B, 1, H, W), values 0..1, 1 = the region to change")

# Node signatures are read at registration, which must not import torch (`validate` stays
# instant); type checkers see the tensor type.
if TYPE_CHECKING:
    Image = Annotated[torch.Tensor, IMAGE]
    Mask = Annotated[torch.Tensor, MASK]
else:
    Image = Annotated[object, IMAGE]
    Mask = Annotated[object, MASK]


@storable
@dataclass(frozen=True)
class Latent:
    """Latent samples and the model family whose VAE made them (latents do not cross families)."""

    samples: torch.Tensor  # (B, C, h, w)
    family: str
    # (B, 2C, h, w) VAE posterior moments (mean, logvar), set only by vae.encode: denoise draws
    # the image latent from them with its own seed, as diffusers' img2img and inpaint pipelines do
    # (samples then holds the posterior's mode, for nodes that just want a latent).
    moments: torch.Tensor | None = None
    # The memory layout diffusers' pipeline would decode these samples from (img2img's latents are
    # channels-last): it changes the VAE decoder's float rounding (~1e-6), and the cache stores
    # values contiguous, so vae.decode restores the layout from this flag to match bit for bit.
    channels_last: bool = False


@storable
@dataclass(frozen=True)
class Conditioning:
    """Prompt embeddings for classifier-free guidance."""

    embeds: torch.Tensor  # (B, tokens, dim)
    negative: torch.Tensor | None = None
    pooled: torch.Tensor | None = None  # SDXL only
    negative_pooled: torch.Tensor | None = None
    family: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. SDXL time ids


@storable
@dataclass(frozen=True)
class Reference:
    """One reference picture encoded for a flow-matching edit model (Flux 2, Kontext, Qwen-Image-Edit)."""

    latents: torch.Tensor  # (1, C, h, w) the family's normalised VAE latents (Flux 2: 2x2-patchified)
    family: str
    # Qwen-Image-Edit: the picture resized for the vision-language encoder (1, 3, H, W), 0..1;
    # its prompt encode reads it, so the instruction is encoded knowing what the pictures show.
    condition: torch.Tensor | None = None
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels of what the VAE encoded
    source_size: tuple[int, int] = (0, 0)  # (width, height) of the picture as it came in
    # Qwen-Image-Edit (non-Plus) and its inpaint pipeline: the VAE posterior's mean and std, before
    # normalisation, stacked (2, C, 1, h, w). The inpaint pipeline samples the source's latents with
    # the run's seed; keeping the posterior lets the encode stay a cached stage of its own.
    posterior: torch.Tensor | None = None


@storable
@dataclass(frozen=True)
class References:
    """An ordered list of encoded references: the order is the model's "picture 1, picture 2 ..."."""

    items: tuple[Reference, ...]
    family: str = ""


@storable
@dataclass(frozen=True)
class ImageEmbeds:
    """Reference picture(s) encoded by an IP-Adapter's CLIP image encoder, for SD 1.x / SDXL."""

    embeds: torch.Tensor  # (n, D): one row per reference picture
    negative: torch.Tensor  # (n, D): what guidance steers away from (zeros for the plain IP-Adapter)
    adapter: str  # content hash of the adapter whose encoder made them (embeddings do not cross encoders)


@storable
@dataclass(frozen=True)
class Artifact:
    """Finished files. The executor writes them (atomically) under the run's output folder."""

    files: dict[str, bytes]  # relative path inside the output folder -> encoded bytes


@storable
@dataclass(frozen=True)
class CallLog:
    """What an engine node did: one entry per engine call (engine, provider, model, request id,
    usage, cost, seed, whether the seed reproduces it), the engine a router chose and the ones it
    passed over, and the scores of the candidates a best-of node weighed."""

    calls: list = field(default_factory=list)
    engine: str = ""
    tried: list = field(default_factory=list)
    scores: list = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return round(sum(float(c.get("cost_usd") or 0.0) for c in self.calls), 6)


class Model:
    """Base for loaded-model handles. Kept in memory only; its fingerprint is its files' hash."""

    name: str = ""
    family: str = ""
    content_hash: str = ""

    def __fingerprint__(self) -> str:
        return f"model:{self.content_hash}"

    def using(self, components: tuple[str, ...] | None = None) -> AbstractContextManager[Any]:
        """Entered by the executor around a node that takes this model and uses `components` of it
        (None: any): a model whose modules several handles share (LoRA variants) puts them in
        this handle's state for the node's duration."""
        return nullcontext()


def fingerprint_for(fp: str, components: tuple[str, ...]) -> str:
    """A model's fingerprint as seen by a node that uses only `components` of it: the LoRA
    segments (`+lora[unet,text_encoder]<hash>*<scale>`, see models/lora.py) of other components
    are dropped, so a UNet-only LoRA, or its scale, leaves a prompt encode's key alone."""
    if "+lora[" not in fp:
        return fp
    head, *segments = fp.split("+lora[")
    wanted = set(components)
    kept = [s for s in segments if wanted.intersection(s.split("]", 1)[0].split(","))]
    return head + "".join("+lora[" + s for s in kept)


_CLASS_SOCKETS: dict[type, SocketType] = {
    Latent: SocketType("Latent", "Latent(samples (B, C, h, w), family)"),
    Conditioning: SocketType("Conditioning", "prompt embeddings (+ negative, + pooled)"),
    Artifact: SocketType("Artifact", "a file for the output folder"),
    CallLog: SocketType("CallLog", "what engine calls a node made: provider, request ids, usage, cost, scores"),
    Reference: SocketType("Reference", "one reference picture encoded for a flow-matching edit model"),
    References: SocketType("References", "an ordered list of encoded reference pictures"),
    ImageEmbeds: SocketType("ImageEmbeds", "reference picture(s) encoded by an IP-Adapter's image encoder"),
    Model: SocketType("Model", "a loaded model (never stored; keyed by its files' hash)"),
}

SOCKET_TYPES: dict[str, SocketType] = {s.name: s for s in (IMAGE, MASK, *_CLASS_SOCKETS.values())}


def socket_of(annotation: Any) -> SocketType | None:
    """The socket type an annotation declares, or None if it declares none."""
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            if isinstance(meta, SocketType):
                return meta
        return None
    if isinstance(annotation, type):
        for cls, sock in _CLASS_SOCKETS.items():
            if issubclass(annotation, cls):
                return sock
    return None
