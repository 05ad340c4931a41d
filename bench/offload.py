"""What each CPU offload mode costs, per model: wall time of a txt2img run (no cache), and on CUDA
the device's peak memory, which is what the modes are for.

    python bench/offload.py                         # CPU: the tiny SD and Flux 2 Klein builds
    python bench/offload.py --device cuda --model /models/FLUX.2-klein-4B --steps 20 --size 1024

On a CPU the onload device is the CPU: the hooks run and move nothing, so the table shows only
their bookkeeping cost and no memory column. The workflow is tests/models/test_offload.py's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from editgraph import api  # noqa: E402
from editgraph.models.offload import MODES  # noqa: E402
from editgraph.models.flow_loader import is_flow_index  # noqa: E402


def doc(model: str, steps: int, size: int, flow: bool) -> dict:
    if flow:
        nodes = {
            "text": {"type": "flow.prompt", "inputs": {"model": "model"}, "params": {"prompt": "a red cup on a table"}},
            "denoise": {"type": "flow.denoise", "inputs": {"model": "model", "cond": "text"},
                        "params": {"steps": steps, "seed": 3, "width": size, "height": size}},
            "pixels": {"type": "flow.decode", "inputs": {"model": "model", "latent": "denoise"}},
        }
    else:
        nodes = {
            "text": {"type": "prompt.encode", "inputs": {"model": "model"}, "params": {"prompt": "a red cup on a table"}},
            "empty": {"type": "latent.empty", "inputs": {"model": "model"}, "params": {"width": size, "height": size}},
            "denoise": {"type": "denoise", "inputs": {"model": "model", "cond": "text", "latent": "empty"},
                        "params": {"steps": steps, "seed": 3}},
            "pixels": {"type": "vae.decode", "inputs": {"model": "model", "latent": "denoise"}},
        }
    return {"format": "editgraph/1", "name": "bench-offload", "nodes": {"model": {"type": "model.load", "params": {"model": model}}, **nodes}}


def is_flow(model: str) -> bool:
    import json

    from editgraph.models.loader import resolve

    index = Path(resolve(model)) / "model_index.json"
    return index.is_file() and is_flow_index(json.loads(index.read_text()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", action="append", help="model names or folders (default: tiny-sd, tiny-flux2-klein)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    print(f"torch threads {torch.get_num_threads()}, device {args.device}, {args.steps} steps, {args.size} px\n")
    print("| model | mode | min s | median s | same pixels as none |" + (" device peak GiB |" if cuda else ""))
    print("|---|---|---|---|---|" + ("---|" if cuda else ""))
    for model in args.model or ["tiny-sd", "tiny-flux2-klein"]:
        workflow = doc(model, args.steps, args.size, is_flow(model))
        reference = None
        api.run(workflow, cache=False, device=args.device)  # warm-up: the model's first load and torch's first calls
        for mode in MODES:
            times, peak = [], 0
            for _ in range(args.repeats):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                pixels = api.run(workflow, cache=False, device=args.device, offload=mode).value("pixels")
                times.append(time.perf_counter() - t0)
                if cuda:
                    peak = max(peak, torch.cuda.max_memory_allocated())
            reference = pixels if reference is None else reference
            same = "yes" if torch.equal(pixels, reference) else "NO"
            row = f"| {model} | {mode} | {min(times):.3f} | {statistics.median(times):.3f} | {same} |"
            print(row + (f" {peak / 2**30:.2f} |" if cuda else ""))


if __name__ == "__main__":
    main()
