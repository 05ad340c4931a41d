"""Edit engines as nodes: one per hosted provider, the `edit` router, and `edit.best`.

Every node here outputs the picture(s) and a CallLog (what each call reported: request id, usage,
cost, seed). They are cached by content key like any node (type, version, params, input
fingerprints; the router adds its routing table's content), so a re-run sends no request and
costs nothing. They are marked not replayable: a hosted model can change behind its name, so a
seed does not reproduce the pixels; provenance records that per call (local engines replay).

Keys, endpoints and limits come from the environment or the engines config file, never from
params: see editgraph/engines/credentials.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import Field

from editgraph.nodes.context import RunContext
from editgraph.nodes.registry import InputPath, Node, NodeParams, Seed, node
from editgraph.values.sockets import CallLog, Image, Mask

if TYPE_CHECKING:  # node declarations stay torch-free: engines (and torch) load when a node runs
    import torch

    from editgraph.engines.base import EditJob, JobShape, Services

ASPECTS = Literal["auto", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
_REFS = ("reference", "reference_2", "reference_3")


class EditOut(NamedTuple):
    image: Image  # (n, 3, H, W): the source's size
    calls: CallLog


def _services(ctx: RunContext) -> Services:
    from editgraph.engines.base import Services

    return Services(cancel=ctx.cancel, ledger=ctx.ledger, node_id=ctx.node_id, waiting=ctx.waiting, progress=ctx.on_progress)


def _job(instruction: str, image, mask, refs, *, seed=None, n=1, size="auto", quality="auto") -> EditJob:
    from editgraph.engines.base import EditJob, one_image

    return EditJob(
        instruction=instruction,
        image=None if image is None else one_image(image, "image"),
        mask=None if mask is None else one_image(mask, "mask"),
        references=tuple(one_image(r, "reference") for r in refs if r is not None),
        seed=seed, n=n, size=size, quality=quality,
    )


def _operation(connected: frozenset[str]) -> str:
    if "image" not in connected:
        return "generate"
    if "mask" in connected:
        return "inpaint"
    return "reference" if connected & set(_REFS) else "instruction"


def _shape(params, connected: frozenset[str], n: int = 1) -> JobShape:
    from editgraph.engines.base import JobShape

    # sizes are unknown before anything runs: estimates assume a 1024x1024 source
    return JobShape(
        _operation(connected), references=len(connected & set(_REFS)), n=n, size=getattr(params, "size", "auto"),
        quality=getattr(params, "quality", "auto"), instruction_chars=len(params.instruction),
    )


def _out(images: list[torch.Tensor], log: CallLog) -> EditOut:
    import torch

    return EditOut(torch.cat(images, 0).contiguous(), log)


class _Hosted(Node):
    generative = True  # a hosted model made the pixels (C2PA / XMP AI disclosure)
    replayable = False
    billing = "calls"
    cost_class = "expensive"  # paid, slow network work: its outputs always get a disk entry
    provider = ""

    @classmethod
    def estimate_cost(cls, params, connected):
        from editgraph.engines.registry import make_engine

        engine = make_engine(f"{cls.provider}:{params.model}")
        return engine.name, engine.estimate(_shape(params, connected, params.n))

    def _run(self, ctx: RunContext, job: EditJob) -> EditOut:
        from editgraph.engines.registry import make_engine

        engine = make_engine(f"{self.provider}:{self.params.model}")
        result = engine.run(job, _services(ctx))
        return _out(result.images, CallLog([c.as_dict() for c in result.calls], engine.name))


@node("edit.openai", version="1.0.0")
class OpenAIEdit(_Hosted):
    """Edit the picture with an OpenAI GPT Image model: repaint the masked region (or the whole
    picture by instruction), optionally guided by up to three reference pictures; with no source
    connected, generate one. Results come back at the source's size."""

    provider = "openai"

    class Params(NodeParams):
        instruction: str = Field(..., min_length=1, max_length=32000, description="what to change, in words")
        model: str = Field("gpt-image-1", pattern=r"^gpt-image-[a-z0-9.\-]+$", description="GPT Image model name")
        size: Literal["auto", "1024x1024", "1536x1024", "1024x1536"] = Field("auto", description="size the model works at")
        quality: Literal["auto", "low", "medium", "high"] = Field("auto", description="quality tier (drives the price)")
        n: int = Field(1, ge=1, le=10, description="how many pictures")

    def run(self, ctx: RunContext, image: Image | None = None, mask: Mask | None = None, reference: Image | None = None,
            reference_2: Image | None = None, reference_3: Image | None = None) -> EditOut:
        p = self.params
        return self._run(ctx, _job(p.instruction, image, mask, (reference, reference_2, reference_3), n=p.n, size=p.size, quality=p.quality))


@node("edit.gemini", version="1.0.0")
class GeminiEdit(_Hosted):
    """Edit the picture by instruction with a Gemini image model ("Nano Banana"), optionally guided
    by reference pictures; with no source connected, generate one. No mask: route masked edits to
    an inpainting engine."""

    provider = "gemini"

    class Params(NodeParams):
        instruction: str = Field(..., min_length=1, max_length=32000, description="what to change, in words")
        model: str = Field("gemini-2.5-flash-image", pattern=r"^gemini-[a-z0-9.\-]+$", description="Gemini image model name")
        aspect_ratio: ASPECTS = Field("auto", description="output aspect ratio; auto follows the source")
        seed: Seed = Field(0, description="sent as generationConfig.seed (recorded; does not replay a hosted model)")
        n: int = Field(1, ge=1, le=8, description="how many pictures (one call each, seeds seed, seed+1, ...)")

    def run(self, ctx: RunContext, image: Image | None = None, reference: Image | None = None,
            reference_2: Image | None = None) -> EditOut:
        p = self.params
        return self._run(ctx, _job(p.instruction, image, None, (reference, reference_2), seed=int(p.seed), n=p.n, size=p.aspect_ratio))


@node("edit.bfl", version="1.0.0")
class BFLEdit(_Hosted):
    """Edit the picture with Black Forest Labs' FLUX API: Kontext or FLUX.2 by instruction (with
    reference pictures), FLUX.1 Fill to repaint the masked region. Submits a task and polls it."""

    provider = "bfl"

    class Params(NodeParams):
        instruction: str = Field(..., min_length=1, max_length=32000, description="what to change, in words")
        model: Literal["flux-kontext-pro", "flux-kontext-max", "flux-2-pro", "flux-pro-1.0-fill"] = Field(
            "flux-kontext-pro", description="FLUX endpoint; flux-pro-1.0-fill needs a mask"
        )
        aspect_ratio: ASPECTS = Field("auto", description="Kontext output aspect ratio; auto follows the source")
        seed: Seed = Field(0, description="sent to BFL (recorded; does not replay a hosted model)")
        n: int = Field(1, ge=1, le=8, description="how many pictures (one task each, seeds seed, seed+1, ...)")

    def run(self, ctx: RunContext, image: Image | None = None, mask: Mask | None = None, reference: Image | None = None,
            reference_2: Image | None = None, reference_3: Image | None = None) -> EditOut:
        p = self.params
        job = _job(p.instruction, image, mask, (reference, reference_2, reference_3), seed=int(p.seed), n=p.n, size=p.aspect_ratio)
        return self._run(ctx, job)


class _RouteParams(NodeParams):
    instruction: str = Field(..., min_length=1, max_length=32000, description="what to change, in words")
    table: str = Field("hosted", pattern=r"^[A-Za-z0-9_.\-]+$", description="routing table: hosted, local-tiny, or one from the engines config")
    seed: Seed = Field(0, description="seed for engines that take one (local engines replay from it)")
    size: str = Field("auto", pattern=r"^(auto|\d+x\d+|\d+:\d+)$", description="auto (the source's), WxH, or an aspect ratio W:H")
    quality: Literal["auto", "low", "medium", "high"] = Field("auto", description="quality tier where the engine has one")


@node("edit", version="1.0.0")
class RoutedEdit(Node):
    """Edit the picture with whichever engine the routing table picks for the operation: a mask
    connected -> inpaint engine, references -> reference-capable engine, instruction only ->
    instruction engine; the next engine in the table takes over when one is down. Switching the
    table moves the same workflow between hosted providers and local models."""

    generative = True
    replayable = False  # depends on the engine chosen: the call log records it per call
    billing = "calls"
    cost_class = "expensive"  # paid, slow network work: its outputs always get a disk entry
    Params = _RouteParams

    @classmethod
    def source_token(cls, params) -> str | None:
        from editgraph.engines import router

        return router.table_token(params.table)  # what the table says, not its name

    @classmethod
    def check_sources(cls, params, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """Before anything runs: the routing table exists and is well formed."""
        return _table_problems(params.table)

    @classmethod
    def estimate_cost(cls, params, connected):
        from editgraph.engines import router

        return router.estimate(params.table, _shape(params, connected))

    def run(self, ctx: RunContext, image: Image | None = None, mask: Mask | None = None, reference: Image | None = None,
            reference_2: Image | None = None, reference_3: Image | None = None) -> EditOut:
        p = self.params
        from editgraph.engines import router

        job = _job(p.instruction, image, mask, (reference, reference_2, reference_3), seed=int(p.seed), size=p.size, quality=p.quality)
        routed = router.route(p.table, job, _services(ctx))
        return _out(routed.result.images, CallLog([c.as_dict() for c in routed.result.calls], routed.engine, routed.tried))


class _BestParams(_RouteParams):
    candidates: int = Field(3, ge=1, le=16, description="candidates made first, with seeds seed, seed+1, ...")
    extra_attempts: int = Field(0, ge=0, le=16, description="more attempts, one at a time, while no candidate meets max_penalty")
    max_penalty: float | None = Field(None, ge=0, description="a candidate passes at or below this penalty; None: keep the best of the candidates")
    preserve_weight: float = Field(1.0, ge=0, description="weight of change outside the mask")
    seam_weight: float = Field(1.0, ge=0, description="weight of edge strength added along the mask border")
    drift_weight: float = Field(1.0, ge=0, description="weight of mean colour drift of the kept region")
    clip_model: InputPath | None = Field(None, description="a CLIP model folder (transformers layout): also score text-image similarity to the instruction")
    clip_weight: float = Field(1.0, ge=0, description="weight of (1 - CLIP similarity) / 2, when clip_model is set")


@node("edit.best", version="1.0.0")
class BestEdit(Node):
    """Make several candidate edits (routed like `edit`, each with its own recorded seed), score
    each against the source (pixels outside the mask preserved, no seam along the mask border, no
    colour drift; with a CLIP model, similarity to the instruction) and keep the best; while none
    meets max_penalty, try the next seed, up to extra_attempts more. Every attempt is cached on
    its own, so raising the bar never repays."""

    generative = True
    replayable = False
    billing = "calls"
    cost_class = "expensive"  # paid, slow network work: its outputs always get a disk entry
    relocatable = False  # clip_model is a folder: nothing to look for by one file's name and hash
    Params = _BestParams

    @classmethod
    def source_token(cls, params) -> str | None:
        from editgraph.engines import router

        token = router.table_token(params.table)
        if params.clip_model:
            from editgraph.engines.clip import clip_hash

            token += ":clip:" + clip_hash(params.clip_model)  # the CLIP files, not their path
        return token

    @classmethod
    def check_sources(cls, params, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """Before anything runs: the routing table exists; the CLIP model, if any, is a model folder."""
        problems = _table_problems(params.table)
        if params.clip_model:
            from pathlib import Path

            if not (Path(params.clip_model) / "config.json").is_file():
                problems.append(("clip_model", f"not a CLIP model folder (no config.json): {params.clip_model}"))
        return problems

    @classmethod
    def estimate_cost(cls, params, connected):
        from editgraph.engines import router

        engine, usd = router.estimate(params.table, _shape(params, connected))
        return engine, usd * params.candidates  # extra attempts are not counted: they may not happen

    def run(self, ctx: RunContext, image: Image, mask: Mask | None = None, reference: Image | None = None) -> EditOut:
        from editgraph.engines import router, scoring

        p = self.params
        weights = {"preserve": p.preserve_weight, "seam": p.seam_weight, "drift": p.drift_weight, "clip": p.clip_weight}
        services = _services(ctx)
        attempts: list[dict] = []
        images: list = []
        calls: list[dict] = []
        table_token = router.table_token(p.table)
        for i in range(p.candidates + p.extra_attempts):
            if i >= p.candidates and (p.max_penalty is None or min(a["penalty"] for a in attempts) <= p.max_penalty):
                break  # the candidates are made; more only while none passes
            seed = int(p.seed) + i
            job = _job(p.instruction, image, mask, (reference,), seed=seed, size=p.size, quality=p.quality)

            def attempt(job=job) -> dict:
                routed = router.route(p.table, job, services)
                return {"image": routed.result.images[0], "engine": routed.engine, "calls": [c.as_dict() for c in routed.result.calls]}

            key = _attempt_key(ctx, table_token, p, seed)
            value, cached = ctx.memo(key, attempt) if ctx.memo is not None else (attempt(), False)
            if cached and ctx.ledger is not None:
                ctx.ledger.credit_saved(sum(float(c.get("cost_usd") or 0) for c in value["calls"]))
            m = scoring.measures(value["image"], image, mask)
            if p.clip_model:
                from editgraph.engines.clip import similarity

                m["clip"] = similarity(value["image"], p.instruction, p.clip_model)
            attempts.append({"attempt": i + 1, "seed": seed, "engine": value["engine"], **m,
                             "penalty": scoring.penalty(m, weights), "cached": cached})
            images.append(value["image"])
            calls.extend(value["calls"])
        best = min(range(len(attempts)), key=lambda j: (attempts[j]["penalty"], j))
        for j, a in enumerate(attempts):
            a["kept"] = j == best
        return EditOut(images[best].contiguous(), CallLog(calls, attempts[best]["engine"], [], attempts))


def _table_problems(name: str) -> list[tuple[str, str]]:
    from editgraph.engines import router

    try:
        router.table(name)
    except Exception as exc:  # noqa: BLE001 - an unknown or malformed table, reported on the param
        return [("table", str(exc))]
    return []


def _attempt_key(ctx: RunContext, table_token: str, p: _BestParams, seed: int) -> str:
    """One attempt's identity: what it routes and sends, never the scoring params around it."""
    import blake3

    ident = {
        "what": "edit.best/attempt/1", "table": table_token, "instruction": p.instruction, "seed": seed,
        "size": p.size, "quality": p.quality, "inputs": sorted(ctx.input_fps.items()),
    }
    return blake3.blake3(json.dumps(ident, sort_keys=True).encode()).hexdigest()
