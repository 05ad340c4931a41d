"""Model-side timings: building the tiny models, loading them, and hashing (cold vs memoized).

    PYTHONPATH=. python bench/models.py                 # tiny + medium, a table on stdout
    PYTHONPATH=. python bench/models.py --full-sd1      # also a full-size SD 1.x single-file
                                                        # checkpoint (random fp16 weights, ~2 GB)

The --full-sd1 run checks what CI cannot afford: that a checkpoint in the original SD 1.x layout,
at real size, loads offline with the shipped sd1-base config folder (family detected from its
tensors) and that every weight arrives unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full-sd1", action="store_true", help="also build and load a full-size SD 1.x checkpoint")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="eg-bench-models-"))
    os.environ["EDITGRAPH_CACHE_DIR"] = str(tmp / "cache")

    import torch

    t = time.perf_counter()
    import diffusers  # noqa: F401  (timed on its own: every first load pays it)

    print(f"import diffusers: {time.perf_counter() - t:.2f} s, torch threads {torch.get_num_threads()}\n")

    from editgraph.models import cache, hashing
    from editgraph.models.loader import load_model, model_hash
    from editgraph.models.tiny import make_tiny, quiet_progress

    rows = []
    for name in ("tiny-sd", "tiny-sd-inpaint", "tiny-ip2p", "tiny-sdxl", "medium-sd"):
        # 1. Build into a scratch folder (what `make-tiny` does).
        t = time.perf_counter()
        with quiet_progress():
            folder = make_tiny(name, tmp / "built" / name)
        build = time.perf_counter() - t
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        # 2. Hash cold (reads every byte), then again from the memo (stat only).
        hashing._memo.clear()
        hashing._loaded_from = None
        hashing.memo_path().unlink(missing_ok=True)
        t = time.perf_counter()
        model_hash(folder)
        hash_cold = time.perf_counter() - t
        hashing._loaded_from = None  # as a new process would: memo from disk
        t = time.perf_counter()
        model_hash(folder)
        hash_memo = time.perf_counter() - t
        # 3. Load (first time in the process), then the cached handle.
        t = time.perf_counter()
        load_model(folder)
        load = time.perf_counter() - t
        t = time.perf_counter()
        load_model(folder)
        again = time.perf_counter() - t
        cache.release_all()
        rows.append((name, f"{size / 1e6:.1f} MB", build, hash_cold, hash_memo, load, again))

    print("| model | on disk | build s | hash cold ms | hash memo ms | load s | cached load ms |")
    print("|---|---|---|---|---|---|---|")
    for name, size, build, cold, memo, load, again in rows:
        print(f"| {name} | {size} | {build:.2f} | {cold * 1e3:.1f} | {memo * 1e3:.2f} | {load:.2f} | {again * 1e3:.2f} |")

    if args.full_sd1:
        full_sd1(tmp)


def full_sd1(tmp: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from editgraph.models.family_configs import SHIPPED
    from editgraph.models.loader import load_model
    from editgraph.models.single_file import CLIP_PREFIX, unet_to_original, vae_to_original

    # 1. Random full-size SD 1.x components from the shipped configs, in fp16 to halve the file.
    cfg = SHIPPED / "sd1-base"
    torch.manual_seed(0)
    t = time.perf_counter()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")).half()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")).half()
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")).half()
    print(f"\nfull-size SD 1.x: random init {time.perf_counter() - t:.1f} s")
    # 2. One original-layout checkpoint.
    state = {**unet_to_original(unet.state_dict(), dict(unet.config)), **vae_to_original(vae.state_dict(), dict(vae.config))}
    state.update({CLIP_PREFIX + k.removeprefix("text_model."): v for k, v in text.state_dict().items()})
    ckpt = tmp / "sd1-random.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    print(f"checkpoint: {len(state)} tensors, {ckpt.stat().st_size / 1e9:.2f} GB")
    # 3. Load it with no config given: the family comes from the tensors, the config is shipped.
    t = time.perf_counter()
    model = load_model(ckpt, dtype="float16")
    print(f"load_model: {time.perf_counter() - t:.1f} s (hash + convert + load), family {model.family}, kind {model.kind}")
    worst = 0.0
    for src, dst in ((unet, model.unet), (vae, model.vae), (text, model.text_encoder)):
        a = {k.removeprefix("text_model."): v for k, v in src.state_dict().items()}
        b = {k.removeprefix("text_model."): v for k, v in dst.state_dict().items()}
        if a.keys() != b.keys():
            sys.exit(f"key mismatch in {type(src).__name__}: {sorted(a.keys() ^ b.keys())[:5]}")
        worst = max(worst, max((a[k].float() - b[k].float()).abs().max().item() for k in a))
    print(f"largest weight difference after the round trip: {worst}")
    ids = model.tokenizer("a photo of an astronaut riding a horse").input_ids
    print(f"tokenizer ids: {ids}")


if __name__ == "__main__":
    main()
