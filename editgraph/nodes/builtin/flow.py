"""Nodes for the flow-matching edit families (Flux 2 Klein, Flux Kontext, Qwen-Image-Edit and Plus).

The stages are separate nodes so each is cached on its own:

    flow.prompt      instruction -> Conditioning   (the LLM text encoder; the costly one)
    flow.reference   one picture -> Reference      (VAE encode; keyed by the picture's content)
    flow.references  Reference x N -> References   (an ordered list: "picture 1, picture 2 ...")
    flow.denoise     noise (or a masked source) -> Latent, conditioned on both
    flow.decode      Latent -> Image

Changing the prompt reruns flow.prompt and what follows, never a reference encode; changing one
reference reruns that reference's encode, never the others'. (Qwen-Image-Edit reads the pictures
while it encodes the instruction, so there flow.prompt takes the references too and reruns.)
The family maths live in editgraph/diffusion/{flux2,kontext,qwen}.py; the nodes only check and
route. Each stage loads only the components it uses (see models/flow_loader.py).
"""

from __future__ import annotations

from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.errors import NodeError
from editgraph.nodes.registry import Node, NodeParams, Seed, node
from editgraph.values.sockets import Conditioning, Image, Latent, Mask, Model, Reference, References

MAX_LIST = 8  # inputs of flow.references; no family takes more than this today
FLOW_KINDS = frozenset({"flow"})  # model.load's kind for Flux 2 / Kontext / Qwen-Image-Edit: validate refuses SD models here


def _stages(model: Model, what: str):
    from editgraph.diffusion.families import stages

    return stages(model, what)


def _same_family(what: str, model: Model, family: str) -> None:
    if family and family != model.family:
        raise NodeError(
            f"{what}: the input belongs to the {family!r} family but model {model.name!r} is {model.family!r}; "
            "encode it with the same model (latent spaces do not cross families)"
        )


@node("flow.prompt", version="1.0.0")
class FlowPrompt(Node):
    """Read the edit instruction ("replace the bottle with the product in picture 2") with the
    model's text encoder. Qwen-Image-Edit also looks at the connected references while reading."""

    cost_class = "expensive"  # model work: always worth a disk entry

    model_components = {"model": ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "processor")}
    model_kinds = FLOW_KINDS

    class Params(NodeParams):
        prompt: str = Field("", max_length=8000, description="the instruction or the picture's description")
        negative_prompt: str | None = Field(
            None, max_length=8000,
            description="what to steer away from (Kontext, Qwen: enables true_cfg; Klein always guides against the empty prompt)",
        )

    def run(self, ctx: RunContext, model: Model, references: References | None = None) -> Conditioning:
        import torch

        family = _stages(model, "flow.prompt")
        p = self.params
        ctx.check_cancelled()
        with torch.inference_mode():
            if family.__name__.endswith(".qwen"):
                if references is not None:
                    _same_family("flow.prompt", model, references.family)
                return family.encode_prompt(model, p.prompt, p.negative_prompt, references)
            if family.__name__.endswith(".kontext"):
                return family.encode_prompt(model, p.prompt, p.negative_prompt)
            if p.negative_prompt not in (None, ""):
                raise NodeError("flow.prompt: Flux 2 Klein guides against the empty prompt only; leave negative_prompt unset")
            return family.encode_prompt(model, p.prompt)


@node("flow.reference", version="1.0.0")
class FlowReference(Node):
    """Encode one reference picture (a product shot, a style sample, the photo to edit) into the
    model's latent space, resized the way its pipeline resizes references."""

    cost_class = "expensive"  # model work: always worth a disk entry

    model_components = {"model": ("vae",)}
    model_kinds = FLOW_KINDS

    class Params(NodeParams):
        auto_resize: bool = Field(True, description="Kontext: snap to the nearest resolution it was trained at")
        condition_area: int = Field(
            384 * 384, ge=28 * 28, le=4096 * 4096, description="Qwen-Image-Edit: pixels of the copy its text encoder sees"
        )
        vae_area: int = Field(
            1024 * 1024, ge=32 * 32, le=4096 * 4096, description="Qwen-Image-Edit: pixels of the copy its VAE encodes"
        )

    def run(self, ctx: RunContext, model: Model, image: Image) -> Reference:
        import torch

        family = _stages(model, "flow.reference")
        p = self.params
        ctx.check_cancelled()
        with torch.inference_mode():
            if family.__name__.endswith(".qwen"):
                return family.encode_reference(model, image, p.condition_area, p.vae_area)
            if family.__name__.endswith(".kontext"):
                return family.encode_reference(model, image, p.auto_resize)
            return family.encode_reference(model, image)


@node("flow.references", version="1.0.0")
class FlowReferences(Node):
    """Put encoded references in order (picture 1, picture 2 ...) for flow.prompt and flow.denoise;
    unconnected slots are skipped."""

    cost_class = "expensive"  # a few small latents: one index row, and a re-run needs none of the encodes' outputs

    class Params(NodeParams):
        pass

    def run(
        self, ctx: RunContext, ref1: Reference | None = None, ref2: Reference | None = None,
        ref3: Reference | None = None, ref4: Reference | None = None, ref5: Reference | None = None,
        ref6: Reference | None = None, ref7: Reference | None = None, ref8: Reference | None = None,
    ) -> References:
        items = tuple(r for r in (ref1, ref2, ref3, ref4, ref5, ref6, ref7, ref8) if r is not None)
        families = {r.family for r in items}
        if len(families) > 1:
            raise NodeError(f"flow.references: references from different families {sorted(families)} cannot be mixed")
        return References(items, family=families.pop() if families else "")


@node("flow.denoise", version="1.0.2")
class FlowDenoise(Node):
    """Paint the edited picture from noise, guided by the instruction and the references (Klein,
    Kontext, Qwen). With a `mask` and a `source` (Klein, Kontext, Qwen-Image-Edit: their inpaint pipelines), repaint
    only where the mask is white and keep the source elsewhere; crop to the mask first
    (image.crop_to_mask, multiple_of=16) and paste back, so every pixel outside stays as it was."""

    cost_class = "expensive"  # model work: always worth a disk entry

    generative = True  # pixels made by a trained model (drives the AI disclosure of saved files)
    model_components = {"model": ("transformer",)}
    model_kinds = FLOW_KINDS

    class Params(NodeParams):
        steps: int = Field(28, ge=1, le=1000, description="denoising steps over the whole schedule")
        guidance: float = Field(4.0, ge=0.0, le=50.0, description="guidance scale (Klein: CFG; Kontext: distilled guidance)")
        true_cfg: float = Field(
            4.0, ge=0.0, le=50.0, description="Kontext, Qwen: true classifier-free guidance, used when a negative prompt is set"
        )
        seed: Seed = Field(0, description="random seed (an integer, or 'random': drawn once and recorded)")
        width: int = Field(0, ge=0, le=16384, description="picture width in px; 0 = from the references (the pipeline's rule)")
        height: int = Field(0, ge=0, le=16384, description="picture height in px; 0 = from the references")
        strength: float = Field(1.0, gt=0.0, le=1.0, description="inpainting: share of the schedule to run; 1 repaints fully")

    def run(
        self, ctx: RunContext, model: Model, cond: Conditioning, references: References | None = None,
        source: Reference | None = None, mask: Mask | None = None,
    ) -> Latent:
        import torch

        family = _stages(model, "flow.denoise")
        p = self.params
        _same_family("flow.denoise", model, cond.family)
        if references is not None:
            _same_family("flow.denoise", model, references.family)
        if (source is None) != (mask is None):
            raise NodeError("flow.denoise: inpainting needs both `source` (the encoded picture) and `mask`; connect both or neither")
        common = {"steps": p.steps, "seed": int(p.seed), "progress": ctx.progress}
        ctx.check_cancelled()
        with torch.inference_mode():
            if source is not None:
                _same_family("flow.denoise", model, source.family)
                if not hasattr(family, "denoise_masked"):
                    raise NodeError(f"flow.denoise: masked edits are not supported for {model.pipeline} yet")
                masked = {"guidance": p.guidance, "strength": p.strength}
                if family.__name__.endswith((".kontext", ".qwen")):
                    masked["true_cfg"] = p.true_cfg
                samples = family.denoise_masked(model, cond, source, mask, references, **masked, **common)
            elif family.__name__.endswith(".qwen"):
                samples = family.denoise(model, cond, references, width=p.width, height=p.height, true_cfg=p.true_cfg, **common)
            elif family.__name__.endswith(".kontext"):
                samples = family.denoise(
                    model, cond, references, width=p.width, height=p.height, guidance=p.guidance, true_cfg=p.true_cfg, **common
                )
            else:
                samples = family.denoise(model, cond, references, width=p.width, height=p.height, guidance=p.guidance, **common)
        from editgraph.diffusion.flow import owned

        return Latent(owned(samples).contiguous(), family=model.family)


@node("flow.decode", version="1.0.0")
class FlowDecode(Node):
    """Turn a flow model's latent back into pixels with its VAE."""

    cost_class = "expensive"  # model work: always worth a disk entry

    generative = True  # pixels made by a trained model (drives the AI disclosure of saved files)
    model_components = {"model": ("vae",)}
    model_kinds = FLOW_KINDS

    class Params(NodeParams):
        pass

    def run(self, ctx: RunContext, model: Model, latent: Latent) -> Image:
        import torch

        from editgraph.diffusion.flow import owned

        family = _stages(model, "flow.decode")
        _same_family("flow.decode", model, latent.family)
        ctx.check_cancelled()
        with torch.inference_mode():
            return owned(family.decode(model, latent.samples).float())
