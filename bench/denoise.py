"""The engine's img2img workflow vs diffusers' StableDiffusionImg2ImgPipeline doing the same edit.

    PYTHONPATH=. python bench/denoise.py [--repeat 5] [--steps 20] [--models tiny-sd,medium-sd]

For each model and size: wall time of the workflow (image.load -> model.load -> prompt.encode ->
vae.encode -> denoise -> vae.decode, run by the executor into a fresh, empty disk cache, so every
node computes and stores its output) against the pipeline called on the same file, both with the
model already loaded; the best of --repeat runs each, interleaved. Then whether the two decoded
pictures are bit-identical. Then peak RSS (VmHWM; see peak_rss_mib) of a fresh process running a workflow with
two denoise nodes on one model, against a fresh process running one pipeline call.
Targets: wall ratio <= 1.03, RSS ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "editgraph" / "workflows" / "assets" / "coffee.png"
PROMPT = "a red cup on a wooden table"
STRENGTH, CFG, SEED, SCHEDULER = 0.6, 7.5, 11, "euler_a"


def workflow(model_dir: Path, image: Path, steps: int, denoisers: int = 1) -> dict:
    nodes: dict = {
        "photo": {"type": "image.load", "params": {"path": str(image)}},
        "model": {"type": "model.load", "params": {"model": str(model_dir)}},
        "text": {"type": "prompt.encode", "inputs": {"model": "model"}, "params": {"prompt": PROMPT}},
        "latent": {"type": "vae.encode", "inputs": {"model": "model", "image": "photo.image"}},
    }
    for i in range(denoisers):
        nodes[f"denoise{i}"] = {
            "type": "denoise",
            "inputs": {"model": "model", "cond": "text", "latent": "latent"},
            "params": {"steps": steps, "cfg": CFG, "strength": STRENGTH, "seed": SEED + i, "scheduler": SCHEDULER},
        }
        nodes[f"pixels{i}"] = {"type": "vae.decode", "inputs": {"model": "model", "latent": f"denoise{i}"}}
    return {"format": "editgraph/1", "name": "bench-img2img", "nodes": nodes}


def make_pipeline(model):
    from diffusers import StableDiffusionImg2ImgPipeline

    from editgraph.diffusion.denoise import make_scheduler

    return StableDiffusionImg2ImgPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=make_scheduler(SCHEDULER, model.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


def run_pipeline(pipe, image: Path, steps: int, seed: int = SEED):
    from PIL import Image as PILImage

    with PILImage.open(image) as pil:
        pil = pil.convert("RGB")
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=PROMPT, image=pil, strength=STRENGTH, num_inference_steps=steps, guidance_scale=CFG,
        generator=torch.Generator().manual_seed(seed), output_type="pt",
    ).images


def open_cache(root: Path):
    from editgraph.executor.cache import Cache

    return Cache.default(root)


def run_engine(doc: dict, cache) -> list[torch.Tensor]:
    """Bind and run the workflow (a CLI run minus process start and opening the cache)."""
    from editgraph.executor.run import Executor
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    graph = bind(load_workflow(doc), {}, base_dir=REPO)
    result = Executor(cache).run(graph)
    return [result.value(n) for n in graph.nodes if n.startswith("pixels")]


def rss_child(kind: str, model_dir: Path, image: Path, steps: int, scratch: Path, threads: int) -> None:
    """Runs in a fresh process: one edit, then print peak RSS in MiB."""
    torch.set_num_threads(threads)
    if kind == "engine":
        # an empty cache, so both denoise nodes (and everything else) really run
        run_engine(workflow(model_dir, image, steps, denoisers=2), open_cache(Path(tempfile.mkdtemp(dir=scratch))))
    else:
        from editgraph.models.loader import load_model

        run_pipeline(make_pipeline(load_model(model_dir)), image, steps)
    print(json.dumps({"rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux carries ru_maxrss across fork+exec, so a child of this big
    benchmark process would report at least the parent's peak; VmHWM belongs to the process's own
    address space (reset at exec) and is what we want. ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(kind: str, model_dir: Path, image: Path, steps: int, scratch: Path, threads: int) -> float:
    cmd = [sys.executable, __file__, "--rss-child", kind, "--model-dir", str(model_dir), "--image", str(image),
           "--steps", str(steps), "--scratch", str(scratch), "--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", default="tiny-sd,medium-sd")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["time", "rss"], help="run only the wall-time or only the RSS comparison")
    ap.add_argument("--rss-child", choices=["engine", "pipeline"], help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.model_dir, args.image, args.steps, args.scratch, args.threads)
        return

    from PIL import Image as PILImage

    from editgraph.models.loader import load_model
    from editgraph.models.tiny import build_into

    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="editgraph-bench-"))
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        images = {}
        for size in sizes:
            images[size] = scratch / f"photo{size}.png"
            with PILImage.open(PHOTO) as pil:
                pil.convert("RGB").resize((size, size), PILImage.BICUBIC).save(images[size])
        rows, rss_rows = [], []
        for name in args.models.split(","):
            model_dir = build_into(name, scratch / "models" / name)
            model = load_model(model_dir)
            pipe = make_pipeline(model)
            for size in sizes if args.only != "rss" else ():
                doc = workflow(model_dir, images[size], args.steps)
                run_engine(doc, open_cache(scratch / "warm"))  # warm-up: first-call allocations, lazy imports
                run_pipeline(pipe, images[size], args.steps)
                t_engine, t_pipe, c_engine, c_pipe = [], [], [], []
                for r in range(args.repeat):
                    # an empty cache each time, so every node computes (and stores) its output
                    root = scratch / f"cache-{name}-{size}-{r}"
                    cache = open_cache(root)
                    t0, c0 = time.perf_counter(), time.process_time()
                    (ours,) = run_engine(doc, cache)
                    t_engine.append(time.perf_counter() - t0)
                    c_engine.append(time.process_time() - c0)
                    cache.close()
                    shutil.rmtree(root, ignore_errors=True)
                    t0, c0 = time.perf_counter(), time.process_time()
                    theirs = run_pipeline(pipe, images[size], args.steps)
                    t_pipe.append(time.perf_counter() - t0)
                    c_pipe.append(time.process_time() - c0)
                same = torch.equal(ours, theirs)
                rows.append((name, size, min(t_engine), min(t_pipe), min(t_engine) / min(t_pipe),
                             median(t_engine) / median(t_pipe), min(c_engine) / min(c_pipe), same))
            if args.only == "time":
                continue
            big = max(sizes)
            rss_e = peak_rss("engine", model_dir, images[big], args.steps, scratch, args.threads)
            rss_p = peak_rss("pipeline", model_dir, images[big], args.steps, scratch, args.threads)
            rss_rows.append((name, big, rss_e, rss_p, rss_e / rss_p))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    steps_run = min(int(args.steps * STRENGTH), args.steps)
    print(f"img2img, {args.steps} steps at strength {STRENGTH} ({steps_run} run), cfg {CFG}, {SCHEDULER}, "
          f"{args.threads} threads, {args.repeat} interleaved runs each; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| model | px | workflow s (best) | pipeline s (best) | wall ratio best | wall ratio median | CPU ratio best | bit-identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, te, tp, ratio, mratio, cratio, same in rows:
        print(f"| {name} | {size} | {te:.3f} | {tp:.3f} | {ratio:.3f} | {mratio:.3f} | {cratio:.3f} | {'yes' if same else 'NO'} |")
    print()
    print("| model | px | workflow, 2 denoise nodes: peak RSS MiB | one pipeline call: peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|")
    for name, size, re_, rp, ratio in rss_rows:
        print(f"| {name} | {size} | {re_:.1f} | {rp:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
