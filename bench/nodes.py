"""Per-node milliseconds for the mask / canvas / grade / outpaint nodes at 1024 px and 4096 px.

    PYTHONPATH=$PWD python bench/nodes.py [--sizes 1024 4096] [--repeat 3] [--only grade mask.feather]

The input is the bundled photo scaled to a square of the given side (batch 1). Each node runs
once to warm up, then `repeat` times (once at 4096 px and up); the table shows the median
wall-clock time and the least CPU time. Not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from editgraph.nodes.context import RunContext
from editgraph.ops.imaging import read_image
from editgraph.ops.lut import identity_cube_text
from editgraph.nodes.builtin.canvas import BlendImage, CropImage, CropToMask, PadImage, PasteBack
from editgraph.nodes.builtin.grade import Grade, MatchColors
from editgraph.nodes.builtin.mask import (
    CombineMask,
    EllipseMask,
    FeatherMask,
    GrowMask,
    InvertMask,
    MaskFromColor,
    RectMask,
    ThresholdMask,
)
from editgraph.nodes.builtin.outpaint import OutpaintPad

ASSETS = Path(__file__).resolve().parents[1] / "editgraph" / "workflows" / "assets"


def cases(size: int, lut_path: str):
    """(label, callable) pairs; every callable runs one node on `size` x `size` inputs."""
    ctx = RunContext("bench", "bench")
    photo = read_image(ASSETS / "coffee.png").image
    img = F.interpolate(photo, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    ref = F.interpolate(read_image(ASSETS / "chelsea.png").image, size=(size, size), mode="bilinear").clamp_(0, 1)
    oval = EllipseMask(EllipseMask.Params(rx=0.2, ry=0.25)).run(ctx, image=img)
    small = EllipseMask(EllipseMask.Params(cx=0.6, cy=0.4, rx=0.06, ry=0.06)).run(ctx, image=img)
    r = max(1, size // 128)  # radii scale with the picture: 8 px at 1024, 32 px at 4096
    crop_p = dict(margin=4 * r, working_size=1024)
    crop = CropToMask(CropToMask.Params(**crop_p)).run(ctx, image=img, mask=small).image

    def n(cls, **params):
        return cls(cls.Params(**params))

    return [
        ("mask.ellipse", lambda: n(EllipseMask, rx=0.2, ry=0.25).run(ctx, image=img)),
        ("mask.rect", lambda: n(RectMask, x=10, y=10, rect_width=size // 2, rect_height=size // 3).run(ctx, image=img)),
        ("mask.threshold", lambda: n(ThresholdMask).run(ctx, mask=oval)),
        ("mask.invert", lambda: n(InvertMask).run(ctx, mask=oval)),
        ("mask.combine subtract", lambda: n(CombineMask, mode="subtract").run(ctx, a=oval, b=small)),
        ("mask.from_color", lambda: n(MaskFromColor, color=(0.5, 0.4, 0.3)).run(ctx, image=img)),
        ("mask.feather r=R", lambda: n(FeatherMask, radius=r).run(ctx, mask=oval)),
        ("mask.feather r=4R", lambda: n(FeatherMask, radius=4 * r).run(ctx, mask=oval)),
        ("mask.grow disc +R", lambda: n(GrowMask, pixels=r).run(ctx, mask=oval)),
        ("mask.grow disc +4R", lambda: n(GrowMask, pixels=4 * r).run(ctx, mask=oval)),
        ("mask.grow square -4R", lambda: n(GrowMask, pixels=-4 * r, shape="square").run(ctx, mask=oval)),
        ("image.crop", lambda: n(CropImage, x=0, y=0, width=size // 2, height=size // 2).run(ctx, image=img)),
        ("image.pad mirror", lambda: n(PadImage, left=size // 4, right=size // 4, fill="mirror").run(ctx, image=img)),
        ("image.blend overlay+mask", lambda: n(BlendImage, mode="overlay").run(ctx, base=img, top=ref, mask=oval)),
        ("image.crop_to_mask", lambda: n(CropToMask, **crop_p).run(ctx, image=img, mask=small)),
        ("image.paste_back", lambda: n(PasteBack, **crop_p).run(ctx, base=img, crop=crop, mask=small)),
        ("grade identity", lambda: n(Grade).run(ctx, image=img)),
        ("grade exposure", lambda: n(Grade, exposure=0.5).run(ctx, image=img)),
        ("grade contrast+lgg", lambda: n(Grade, contrast=1.2, lift=(0.02, 0, 0), gamma=(1.1, 1, 1)).run(ctx, image=img)),
        ("grade saturation", lambda: n(Grade, saturation=1.2, vibrance=0.2).run(ctx, image=img)),
        ("grade lut 33", lambda: n(Grade, lut=lut_path).run(ctx, image=img)),
        ("grade all", lambda: n(Grade, exposure=0.3, temperature=0.2, contrast=1.1, saturation=1.1, lut=lut_path).run(ctx, image=img)),
        ("grade.match", lambda: n(MatchColors).run(ctx, image=img, reference=ref)),
        ("outpaint.pad 9:16 edge", lambda: n(OutpaintPad, aspect="9:16").run(ctx, image=img)),
        ("outpaint.pad 9:16 blur 4R", lambda: n(OutpaintPad, aspect="9:16", fill="blur", blur_radius=4 * r).run(ctx, image=img)),
    ]


def time_ms(fn, repeat: int) -> tuple[float, float]:
    """(median wall ms, least process-CPU ms). CPU time counts both threads but not time spent
    descheduled, so it is the steadier number on a shared machine."""
    fn()  # warm-up: allocator, LUT parse memo, FFT plans
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="labels starting with any of these")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lut_path = str(Path(tmp) / "identity33.cube")
        Path(lut_path).write_text(identity_cube_text(33))
        table: dict[str, dict[int, float]] = {}
        for size in args.sizes:
            for label, fn in cases(size, lut_path):
                if args.only and not any(label.startswith(o) for o in args.only):
                    continue
                table.setdefault(label, {})[size] = time_ms(fn, args.repeat if size <= 1024 else 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; R = side/128 px (8 at 1024, 32 at 4096)")
    print("wall = median wall-clock ms; cpu = least process CPU ms (both threads summed)")
    print("| node | " + " | ".join(f"{s} wall | {s} cpu" for s in args.sizes) + " |")
    print("|" + "---|" * (2 * len(args.sizes) + 1))
    for label, row in table.items():
        cells = [f"{row[s][0]:.0f} | {row[s][1]:.0f}" if s in row else "- | -" for s in args.sizes]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
