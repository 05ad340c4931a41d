"""The flow-matching edit families: the engine's stages against diffusers' own pipelines.

    python bench/engines.py              # prints three markdown tables
    python bench/engines.py --repeats 9 --threads 1

1. Wall time per family on its tiny build, 64 px, 2 steps, one reference (Qwen: small reference
   areas): flow.prompt -> flow.reference -> flow.denoise -> flow.decode called as nodes, against the
   pipeline's __call__ on the very same loaded components, interleaved --repeats times (alternating
   which goes first); min and median of each, and the ratio of CPU times (steadier on a shared
   machine). The ratio's target is <= 1.03; on 2 busy cores use --repeats 30 or more.
2. Peak RSS of a fresh process that loads the model and runs the graph model.load -> stages (the
   engine) against one that loads the pipeline with from_pretrained and calls it; target <= 1.1x.
3. A 20-row batch of the bundled `edit` workflow (20 seeds, same photo, reference and prompt) with
   the cache on against every node rerun per row (use_cache=False): what the cached prompt and
   reference encodes save.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = {  # tiny model -> what its pipeline call needs besides prompt / steps / generator
    "tiny-flux2-klein": {"size": (64, 64)},
    "tiny-flux2": {"size": (64, 64)},
    "tiny-kontext": {"size": (64, 64), "pipe": {"_auto_resize": False, "max_area": 64 * 64}, "ref": {"auto_resize": False}},
    "tiny-qwen-edit-plus": {"size": (64, 64), "ref": {"condition_area": 56 * 56, "vae_area": 64 * 64}},
}
PROMPT, STEPS, SEED = "put the cup from picture 2 on the table", 2, 0


def _photo(w: int, h: int):
    from PIL import Image

    return Image.open(REPO / "editgraph" / "workflows" / "assets" / "coffee.png").convert("RGB").resize((w, h), Image.BICUBIC)


def _small_qwen() -> None:
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    plus.CONDITION_IMAGE_SIZE, plus.VAE_IMAGE_SIZE = 56 * 56, 64 * 64


def _engine(model, spec):
    """One run of the stages as nodes; returns the picture."""
    import torch

    from editgraph.nodes.context import RunContext
    from editgraph.diffusion.flow import pil_to_tensor
    from editgraph.nodes.builtin.flow import FlowDecode, FlowDenoise, FlowPrompt, FlowReference, FlowReferences

    c = RunContext("bench", "bench")
    w, h = spec["size"]
    ref = FlowReference(FlowReference.Params(**spec.get("ref", {}))).run(c, model=model, image=pil_to_tensor(_photo(w, h)))
    refs = FlowReferences(FlowReferences.Params()).run(c, ref1=ref)
    prompt = FlowPrompt(FlowPrompt.Params(prompt=PROMPT))
    cond = prompt.run(c, model=model, references=refs) if model.pipeline.startswith("Qwen") else prompt.run(c, model=model)
    latent = FlowDenoise(FlowDenoise.Params(steps=STEPS, seed=SEED, width=w, height=h)).run(c, model=model, cond=cond, references=refs)
    with torch.inference_mode():
        return FlowDecode(FlowDecode.Params()).run(c, model=model, latent=latent)


def _pipeline(pipe, model, spec):
    import torch

    w, h = spec["size"]
    image = _photo(w, h)
    image = [image] if model.pipeline.startswith(("Flux2", "Qwen")) else image
    kw = {"guidance_scale": 4.0} if not model.pipeline.startswith("Qwen") else {}
    return pipe(
        image=image, prompt=PROMPT, height=h, width=w, num_inference_steps=STEPS, output_type="pt",
        generator=torch.Generator().manual_seed(SEED), **kw, **spec.get("pipe", {}),
    ).images


def wall_table(repeats: int) -> list[str]:
    import torch

    from editgraph.models.loader import load_model

    sys.path.insert(0, str(REPO / "tests" / "diffusion"))
    from flow_support import pipeline_for  # the pipeline over the model's own components

    _small_qwen()
    rows = [
        "| family (tiny) | engine ms min / median | pipeline ms min / median | ratio of medians | ratio of mins | CPU-time ratio (median) | same pixels |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, spec in FAMILIES.items():
        model = load_model(name)
        pipe = pipeline_for(model)
        ours, theirs = _engine(model, spec), _pipeline(pipe, model, spec)  # warm both (and check)
        same = bool(torch.equal(ours, theirs))
        wall: dict[str, list[float]] = {"engine": [], "pipeline": []}
        cpu: dict[str, list[float]] = {"engine": [], "pipeline": []}
        runs = {"engine": lambda: _engine(model, spec), "pipeline": lambda: _pipeline(pipe, model, spec)}
        for i in range(repeats):
            # Interleaved, and each goes first every other time, so drifting load and warm caches hit
            # both alike. CPU time (all threads) is what a busy machine disturbs least.
            for side in ("engine", "pipeline") if i % 2 == 0 else ("pipeline", "engine"):
                t0, c0 = time.perf_counter(), time.process_time()
                runs[side]()
                wall[side].append(time.perf_counter() - t0)
                cpu[side].append(time.process_time() - c0)
        med, e, p = statistics.median, wall["engine"], wall["pipeline"]
        rows.append(
            f"| {name} | {min(e) * 1000:.0f} / {med(e) * 1000:.0f} | {min(p) * 1000:.0f} / {med(p) * 1000:.0f} | "
            f"{med(e) / med(p):.3f} | {min(e) / min(p):.3f} | {med(cpu['engine']) / med(cpu['pipeline']):.3f} | {same} |"
        )
    return rows


_RSS_CHILD = r"""
import json, resource, sys, os
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads({threads})
import bench.engines as b
from editgraph.models.loader import load_model
name, mode = sys.argv[1], sys.argv[2]
spec = b.FAMILIES[name]
b._small_qwen()
if mode == "engine":
    b._engine(load_model(name), spec)
else:
    import diffusers
    model = load_model(name)  # only to find the folder; from_pretrained loads every component itself
    extra = {{"processor": model.component("processor")}} if model.pipeline.startswith("Qwen") else {{}}
    if model.pipeline == "Flux2Pipeline":
        # its model_index names PixtralProcessor, which diffusers cannot import without
        # torchvision: every component through editgraph's loader instead (all of them loaded)
        from flow_support import pipeline_for
        pipe = pipeline_for(model)
    else:
        pipe = getattr(diffusers, model.pipeline).from_pretrained(model.path, local_files_only=True, **extra)
    b._pipeline(pipe, model, spec)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def rss_table(threads: int) -> list[str]:
    code = _RSS_CHILD.format(repo=str(REPO), tests=str(REPO / "tests" / "diffusion"), threads=threads)
    rows = ["| family (tiny) | engine peak RSS MB | pipeline peak RSS MB | ratio |", "|---|---|---|---|"]
    for name in FAMILIES:
        peaks = {}
        for mode in ("engine", "pipeline"):
            out = subprocess.run([sys.executable, "-c", code, name, mode], capture_output=True, text=True, env=os.environ.copy())
            if out.returncode != 0:
                peaks[mode] = float("nan")
                print(f"{name} {mode} failed: {out.stderr[-400:]}", file=sys.stderr)
                continue
            peaks[mode] = json.loads(out.stdout.strip().splitlines()[-1]) / 1024
        rows.append(f"| {name} | {peaks['engine']:.0f} | {peaks['pipeline']:.0f} | {peaks['engine'] / peaks['pipeline']:.3f} |")
    return rows


def batch_table(rows_n: int = 20) -> list[str]:
    from editgraph import workflows
    from editgraph.executor.cache import Cache
    from editgraph.executor.events import EventLog
    from editgraph.executor.run import Executor
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    wf = load_workflow(workflows.find("edit"))
    graphs = [bind(wf, {"steps": "2", "width": "96", "seed": str(i)}, base_dir=workflows.HERE) for i in range(rows_n)]
    out = ["| 20-row `edit` batch (seeds 0-19) | seconds | prompt encodes run | reference encodes run |", "|---|---|---|---|"]
    for label, use_cache in (("every node per row (no cache)", False), ("cached encodes (engine)", True)):
        with tempfile.TemporaryDirectory() as tmp:
            log = EventLog()
            ex = Executor(Cache.default(Path(tmp) / "cache"), listeners=[log], use_cache=use_cache)
            t0 = time.perf_counter()
            for g in graphs:
                ex.run(g)
            seconds = time.perf_counter() - t0
            ran = log.ran()
            out.append(f"| {label} | {seconds:.1f} | {ran.count('text')} | {ran.count('ref1') + ran.count('ref2')} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["wall", "rss", "batch"], action="append")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}; tiny builds; {STEPS} steps; 64 px\n")
    for part in args.only or ["wall", "rss", "batch"]:
        table = {"wall": lambda: wall_table(args.repeats), "rss": lambda: rss_table(args.threads), "batch": batch_table}[part]()
        print("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
