"""ComfyUI's API format ({id: {class_type, inputs}}) translated into an editgraph/1 document.

ComfyUI wires small steps (a checkpoint's MODEL, CLIP and VAE apart; positive and negative prompts
apart; a latent with a noise mask) where editgraph has one node per stage (model.load holds all
three; prompt.encode takes both prompts; denoise takes the mask). So the translation is driven by
what is consumed: from each SaveImage / PreviewImage back to its sources, every ComfyUI output
becomes a value (a model, pixels, a mask, a prompt, a latent still to be made) and the sampler
that consumes them writes the editgraph nodes.

Settings that change meaning on the way, each said where it happens:
- KSampler denoise d -> denoise strength d. ComfyUI runs `steps` steps over the last d of a longer
  schedule; editgraph's steps count the whole schedule and run int(steps * strength) of them, so
  steps become the smallest N with int(N * d) >= steps: the same number of steps run.
- sampler names map to editgraph's (euler, euler_ancestral -> euler_a, ddim, dpmpp_2m -> dpm++ 2m,
  uni_pc -> unipc); the schedulers "normal", "simple", "sgm_uniform", "ddim_uniform" become the
  model's own timestep spacing; others (karras, exponential, ...) have no equivalent.
- a seed whose UI control is "randomize" arrives as "random": drawn at run time and recorded.
- checkpoint file names become model names (the file's stem: what EDITGRAPH_MODELS registers).
- LoraLoader / LoraLoaderModelOnly become model.lora nodes (the LoRA file's stem a workflow param,
  like a checkpoint's): MODEL at strength_model feeds the sampler, CLIP at strength_clip feeds the
  prompt encode (one node when both strengths match). editgraph keys each node by the LoRAs of the
  parts it uses, so the CLIP side's model.lora changes only the text encode and the MODEL side's
  only the denoise, as in ComfyUI. A strength of 0 leaves the model as it is (no node).
- Flux Kontext / Qwen-Image-Edit graphs (UNETLoader and its part loaders) become flow.* stages:
  see api_flow.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Callable

OUTPUT_TYPES = ("SaveImage", "PreviewImage")
CHECKPOINT_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader")
SAMPLERS = {"euler": "euler", "euler_ancestral": "euler_a", "ddim": "ddim", "dpmpp_2m": "dpm++ 2m", "uni_pc": "unipc", "uni_pc_bh2": "unipc"}
SPACINGS = {"normal", "simple", "sgm_uniform", "ddim_uniform"}
SCALE_FILTERS = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}
UNET_LOADERS = ("UNETLoader",)
PART_LOADERS = ("VAELoader", "CLIPLoader", "DualCLIPLoader")


class Untranslatable(Exception):
    def __init__(self, node_id: str, class_type: str, why: str):
        super().__init__(why)
        self.node_id, self.class_type, self.why = node_id, class_type, why


@dataclass(frozen=True)
class Issue:
    node_id: str
    class_type: str
    why: str
    action: str  # "left out", "bypassed", "approximated"

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.class_type}): {self.why} [{self.action}]"


# --- values flowing along ComfyUI edges ---------------------------------------------------------


@dataclass(frozen=True)
class ModelV:  # MODEL, CLIP or VAE of one checkpoint: editgraph's model.load holds all three
    ref: str
    clip_skip: int | None = None
    flow: bool = False  # a flow-matching edit model (UNETLoader + its text encoders and VAE): flow.* nodes
    base: str = ""  # behind LoRA loaders (model.lora nodes): the model.load they apply to

    @property
    def root(self) -> str:
        """The model.load this value comes from, through any LoRAs."""
        return self.base or self.ref


@dataclass(frozen=True)
class Pixels:
    ref: str


@dataclass(frozen=True)
class MaskV:
    ref: str


@dataclass(frozen=True)
class Prompt:  # CONDITIONING: a prompt not yet encoded (prompt.encode takes both prompts at once)
    text: str
    model: ModelV


@dataclass(frozen=True)
class LatentV:
    kind: str  # "empty", "encoded", "sampled"
    model: ModelV | None = None
    ref: str | None = None  # sampled: the editgraph node holding it
    image: Pixels | None = None  # encoded: the pixels
    mask: MaskV | None = None  # a noise mask: only this region is repainted
    inpaint_image: bool = False  # the pixels go to the denoise too (inpainting models need them)
    instruct: bool = False  # encoded for InstructPix2Pix
    size: tuple[int, int, int] = (512, 512, 1)  # empty: width, height, batch


@dataclass(frozen=True)
class ScaledPixels:  # FluxKontextImageScale's output: snapped to a Kontext resolution where it is encoded
    image: Pixels


@dataclass(frozen=True)
class FlowRef:  # a picture an edit model is given as a reference (one flow.reference node)
    image: Pixels
    params: tuple[tuple[str, Any], ...] = ()  # flow.reference params, sorted


@dataclass(frozen=True)
class FlowCond:  # CONDITIONING of a flow edit model: an instruction not yet encoded, with its references
    text: str
    model: ModelV
    refs: tuple[FlowRef, ...] = ()
    guidance: float | None = None  # FluxGuidance
    zero: bool = False  # ConditioningZeroOut: "no negative prompt"
    reads_refs: bool = False  # Qwen's text encoder reads the reference pictures with the instruction


@dataclass
class Literal_:
    value: Any


_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _eg_id(role: str, comfy_id: str) -> str:
    return f"{role}_{_ID_SAFE.sub('_', str(comfy_id))}"


def comfy_file(name: Any) -> str:
    """A file name as ComfyUI's widgets hold it, without the " [input]" folder tag it may carry."""
    return re.sub(r" \[(input|output|temp)\]$", "", str(name))


def _stem(file_name: str) -> str:
    name = PureWindowsPath(str(file_name)).name if "\\" in str(file_name) else PurePosixPath(str(file_name)).name
    return name.rsplit(".", 1)[0] if "." in name else name


@dataclass
class Translator:
    prompt: dict[str, dict[str, Any]]
    partial: bool
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    _values: dict[tuple[str, int], Any] = field(default_factory=dict)
    _active: set[str] = field(default_factory=set)
    _failed: dict[str, Untranslatable] = field(default_factory=dict)

    # --- driving --------------------------------------------------------------------------------

    def translate(self) -> None:
        for nid in sorted(self.prompt, key=_id_order):
            ct = self.prompt[nid].get("class_type")
            if ct not in HANDLERS and ct not in OUTPUT_TYPES:
                why = "unknown node type (a custom node, or one editgraph does not translate)"
                self._failed[nid] = Untranslatable(nid, str(ct), why)
        for nid in sorted(self.prompt, key=_id_order):
            if self.prompt[nid].get("class_type") in OUTPUT_TYPES:
                try:
                    self.output(nid)
                except Untranslatable as exc:
                    self.fail(exc)
        if self.issues and not self.partial:
            # the import fails: look at every node, not only those the first failure reached, so
            # one attempt lists every problem
            for nid in sorted(self.prompt, key=_id_order):
                if nid not in self._failed and not any(k[0] == nid for k in self._values) and self.class_type(nid) in HANDLERS:
                    try:
                        self.value(nid, 0, object, consumer=nid)
                    except Untranslatable as exc:
                        self.fail(exc)
        # unknown nodes nothing asked for are still reported: the file holds them
        for nid, exc in self._failed.items():
            if not any(i.node_id == nid for i in self.issues):
                self.issues.append(Issue(nid, exc.class_type, exc.why, "left out"))

    def fail(self, exc: Untranslatable) -> None:
        if not any(i.node_id == exc.node_id and i.action != "approximated" for i in self.issues):
            self.issues.append(Issue(exc.node_id, exc.class_type, exc.why, "left out"))

    def approximate(self, nid: str, why: str) -> None:
        """A setting with no exact equivalent: an error, or with --partial a note and the nearest."""
        exc = Untranslatable(nid, self.class_type(nid), why)
        if not self.partial:
            raise exc
        self.issues.append(Issue(nid, exc.class_type, why, "approximated"))

    def class_type(self, nid: str) -> str:
        return str(self.prompt.get(nid, {}).get("class_type"))

    # --- values ---------------------------------------------------------------------------------

    def input(self, nid: str, name: str, want: type | tuple[type, ...], *, default: Any = ..., optional: bool = False) -> Any:
        """The value of input `name` of node `nid`: a link's value, or a literal."""
        raw = self.prompt[nid].get("inputs", {}).get(name, ...)
        if raw is ...:
            if optional:
                return None
            if default is not ...:
                return default
            raise Untranslatable(nid, self.class_type(nid), f"input '{name}' is missing")
        if _is_link(raw):
            value = self.value(str(raw[0]), int(raw[1]), want, consumer=nid)
        else:
            value = raw
        if want in (int, float, str, bool) or (isinstance(want, tuple) and all(w in (int, float, str, bool) for w in want)):
            if isinstance(value, Literal_):
                value = value.value
            return value
        if not isinstance(value, want):
            raise Untranslatable(nid, self.class_type(nid), f"input '{name}' gets {type(value).__name__}, expected {_names(want)}")
        return value

    def value(self, nid: str, slot: int, want: Any, consumer: str) -> Any:
        if nid not in self.prompt:
            raise Untranslatable(consumer, self.class_type(consumer), f"links to node {nid}, which is not in the workflow")
        key = (nid, slot)
        if key in self._values:
            return self._values[key]
        if nid in self._failed:
            return self._bypass(nid, want, self._failed[nid], consumer)
        if nid in self._active:
            raise Untranslatable(nid, self.class_type(nid), "is part of a cycle")
        self._active.add(nid)
        try:
            handler = HANDLERS[self.class_type(nid)]
            value = handler(self, nid, slot)
        except Untranslatable as exc:
            if exc.node_id != nid:
                raise
            self._failed[nid] = exc
            return self._bypass(nid, want, exc, consumer)
        finally:
            self._active.discard(nid)
        self._values[key] = value
        return value

    def _bypass(self, nid: str, want: Any, exc: Untranslatable, consumer: str) -> Any:
        """With --partial, a node that cannot be translated passes through its first input that
        gives what the consumer wants (as ComfyUI's bypass does); else the consumer fails too."""
        if self.partial and not isinstance(want, tuple) and want not in (int, float, str, bool):
            for name, raw in self.prompt[nid].get("inputs", {}).items():
                if not _is_link(raw):
                    continue
                try:
                    got = self.value(str(raw[0]), int(raw[1]), want, consumer=nid)
                except Untranslatable:
                    continue
                if isinstance(got, want):
                    self.issues.append(Issue(nid, exc.class_type, f"{exc.why}; its input '{name}' passes through", "bypassed"))
                    return got
            checkpoints = [c for c in self.prompt if self.class_type(c) in CHECKPOINT_LOADERS]
            if want is ModelV and len(checkpoints) == 1:
                # a separate VAE / text encoder file: the one checkpoint's own part stands in
                got = self.value(checkpoints[0], 0, ModelV, consumer=nid)
                self.issues.append(Issue(nid, exc.class_type, f"{exc.why}; the one checkpoint's own (node {checkpoints[0]}) stands in", "bypassed"))
                return got
        self.fail(exc)
        raise Untranslatable(consumer, self.class_type(consumer), f"needs the output of node {nid} ({exc.class_type}), which could not be translated")

    # --- writing editgraph nodes -----------------------------------------------------------------

    def add(self, eg_id: str, type_: str, params: dict[str, Any] | None = None, inputs: dict[str, str] | None = None) -> str:
        spec: dict[str, Any] = {"type": type_}
        if inputs:
            spec["inputs"] = inputs
        if params:
            spec["params"] = params
        self.nodes[eg_id] = spec
        return eg_id

    def param(self, base: str, spec: dict[str, Any]) -> str:
        """A workflow param named base, base_2, ... (one per distinct default); returns "$name"."""
        for name, existing in self.params.items():
            if (name == base or name.startswith(base + "_")) and existing == spec:
                return f"${name}"
        name, n = base, 1
        while name in self.params:
            n += 1
            name = f"{base}_{n}"
        self.params[name] = spec
        return f"${name}"

    def latent_ref(self, latent: LatentV, model: ModelV, consumer: str) -> str:
        """The editgraph node holding `latent`, made now for a latent still to be made."""
        if latent.kind == "sampled":
            return latent.ref  # type: ignore[return-value]
        if latent.kind == "empty":
            w, h, b = latent.size
            return self.add(_eg_id("latent", consumer), "latent.empty", {"width": w, "height": h, "batch": b}, {"model": model.ref})
        return self.add(_eg_id("encode", consumer), "vae.encode", inputs={"model": (latent.model or model).ref, "image": latent.image.ref})  # type: ignore[union-attr]

    def output(self, nid: str) -> None:
        ct = self.class_type(nid)
        images = self.input(nid, "images", Pixels)
        if ct == "SaveImage":
            prefix = str(self.input(nid, "filename_prefix", str, default="ComfyUI"))
            path = _safe_name(prefix) + ".png"
        else:
            path = f"preview-{_ID_SAFE.sub('_', nid)}.png"
        self.add(_eg_id("save", nid), "image.save", {"path": path}, {"image": images.ref})


def _id_order(nid: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(nid).split(":"))


def _is_link(raw: Any) -> bool:
    return isinstance(raw, list) and len(raw) == 2 and isinstance(raw[1], int) and isinstance(raw[0], (str, int))


def _names(want: Any) -> str:
    return " or ".join(w.__name__ for w in want) if isinstance(want, tuple) else want.__name__


def _safe_name(prefix: str) -> str:
    parts = [_ID_SAFE.sub("_", p) for p in re.split(r"[\\/]+", prefix) if p not in ("", ".", "..")]
    return "/".join(p for p in parts if p) or "ComfyUI"


Handler = Callable[[Translator, str, int], Any]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str):
    def register(fn: Handler) -> Handler:
        for n in names:
            HANDLERS[n] = fn
        return fn

    return register


# the node handlers live in api_nodes.py and api_flow.py (imported for their registrations)
from editgraph.sharing.comfy import api_flow as _api_flow  # noqa: E402,F401
from editgraph.sharing.comfy import api_nodes as _api_nodes  # noqa: E402,F401

