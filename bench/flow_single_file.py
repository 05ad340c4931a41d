"""Single-file and GGUF transformers for the flow families, on the tiny builds: file sizes, load
time, and how far the decoded picture of one edit (1 reference, 2 steps, 64 px) moves from the
folder's when the transformer comes from each file.

    PYTHONPATH=. python bench/flow_single_file.py [--gguf Q8_0 Q4_0 F16]

safetensors in diffusers' keys must show 0 (the folder's weights packed as the folder packs
them); in BFL's original keys ~1e-6 (same weights at other addresses: CPU kernels round by
address). GGUF shows the quantization's error on these toy widths (where a row is not a multiple
of the block size, a tensor stays float32, so small models are less quantized than real ones).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

CASES = [("tiny-flux2-klein", "original"), ("tiny-kontext", "original"), ("tiny-kontext", "diffusers"), ("tiny-qwen-edit-plus", "diffusers")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", nargs="+", default=["Q8_0", "Q4_0"], help="GGUF types to write and compare")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eg-bench-single-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["EDITGRAPH_MODELS_DIR"] = str(tmp / "models")

    import torch

    from editgraph.models import cache
    from editgraph.models.flow_single_file import write_gguf, write_safetensors
    from editgraph.models.loader import load_model, resolve
    from tests.models.test_flow_single_file import _edit

    print(f"torch threads {torch.get_num_threads()}\n")
    print("| model | file | keys | size | transformer load | max abs diff | mean abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name, layout in CASES:
        folder = resolve(name)
        expected = _edit(load_model(folder))
        files = [("safetensors", write_safetensors(folder, tmp / f"{name}-{layout}.safetensors", layout=layout))]
        files += [(f"GGUF {q}", write_gguf(folder, tmp / f"{name}-{layout}-{q}.gguf", q, layout=layout)) for q in args.gguf]
        for label, path in files:
            cache.release_all()
            model = load_model(folder, transformer=path)
            t = time.perf_counter()
            model.transformer  # noqa: B018  (the load being timed)
            load = time.perf_counter() - t
            diff = (_edit(model) - expected).abs()
            print(f"| {name} | {label} | {layout} | {path.stat().st_size / 1024:.0f} KiB | {load * 1000:.0f} ms "
                  f"| {diff.max().item():.2e} | {diff.mean().item():.2e} |")


if __name__ == "__main__":
    main()
