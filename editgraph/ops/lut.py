"""3D LUTs in the Adobe/Resolve `.cube` text format: parsing (errors carry the line number) and
trilinear application."""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from editgraph.errors import NodeError
from editgraph.ops.budget import MAX_LUT_SIZE as _MAX_SIZE
from editgraph.ops.budget import cube_file_problem
from editgraph.ops.imaging import file_hash


@dataclass(frozen=True)
class Cube:
    table: torch.Tensor  # (3, N, N, N) float32, indexed [channel, blue, green, red]
    domain_min: tuple[float, float, float]
    domain_max: tuple[float, float, float]

    @property
    def size(self) -> int:
        return self.table.shape[-1]


_MEMO: dict[str, Cube] = {}


def _floats(parts: list[str], n: int, where: str) -> list[float]:
    if len(parts) != n:
        raise NodeError(f"{where}: expected {n} numbers, got {len(parts)}: {' '.join(parts)!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise NodeError(f"{where}: not a number in {' '.join(parts)!r}") from None
    if not all(math.isfinite(v) for v in values):  # float() reads "nan" and "inf"; a LUT cannot hold them
        raise NodeError(f"{where}: not a finite number in {' '.join(parts)!r}")
    return values


def parse_cube(text: str, name: str = "<cube>") -> Cube:
    """Parse a .cube 3D LUT. Keywords: TITLE, LUT_3D_SIZE, DOMAIN_MIN, DOMAIN_MAX; data rows are
    'r g b' with red varying fastest. Anything else is an error naming the line."""
    size: int | None = None
    dmin, dmax = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rows: list[list[float]] = []
    last_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        last_line = lineno
        where = f"{name} line {lineno}"
        parts = line.split()
        key = parts[0].upper()
        if key == "TITLE":
            continue
        if key == "LUT_3D_SIZE":
            if rows:
                raise NodeError(f"{where}: LUT_3D_SIZE must come before the data rows")
            if len(parts) != 2 or not parts[1].isdigit() or not 2 <= int(parts[1]) <= _MAX_SIZE:
                raise NodeError(f"{where}: LUT_3D_SIZE must be one integer in 2..{_MAX_SIZE}, got {line!r}")
            size = int(parts[1])
        elif key in ("DOMAIN_MIN", "DOMAIN_MAX"):
            vals = tuple(_floats(parts[1:], 3, where))
            dmin, dmax = (vals, dmax) if key == "DOMAIN_MIN" else (dmin, vals)
        elif key == "LUT_1D_SIZE":
            raise NodeError(f"{where}: 1D LUTs are not supported; the grade node reads 3D .cube files")
        elif key[0].isalpha() and not key.startswith(("NAN", "INF")):
            raise NodeError(f"{where}: unknown keyword {parts[0]!r}")
        else:
            if size is None:
                raise NodeError(f"{where}: data row before LUT_3D_SIZE")
            rows.append(_floats(parts, 3, where))
            if len(rows) > size**3:
                raise NodeError(f"{where}: more than LUT_3D_SIZE^3 = {size**3} data rows")
    if size is None:
        raise NodeError(f"{name}: no LUT_3D_SIZE line; not a 3D .cube file")
    if len(rows) != size**3:
        raise NodeError(
            f"{name} line {last_line}: file ends after {len(rows)} data rows, LUT_3D_SIZE {size} needs {size**3}"
        )
    if any(hi <= lo for lo, hi in zip(dmin, dmax)):
        raise NodeError(f"{name}: DOMAIN_MIN {dmin} must be below DOMAIN_MAX {dmax} in every channel")
    table = torch.tensor(rows, dtype=torch.float32).view(size, size, size, 3)  # (b, g, r, 3)
    return Cube(table.permute(3, 0, 1, 2).contiguous(), dmin, dmax)


def load_cube(path: str | Path) -> Cube:
    """Parse a .cube file once per content hash (its length checked before it is read)."""
    problem = cube_file_problem(path)
    if problem is not None:
        raise NodeError(problem)
    digest = file_hash(path)
    cube = _MEMO.get(digest)
    if cube is None:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise NodeError(f"{path}: not a text .cube file ({exc.reason} at byte {exc.start})") from None
        cube = _MEMO[digest] = parse_cube(text, str(path))
    return cube


def apply_cube(cube: Cube, image: torch.Tensor) -> torch.Tensor:
    """Look every pixel of (B, 3, H, W) up in the cube with trilinear interpolation; values outside
    the domain take the nearest edge of the cube."""
    b, _, h, w = image.shape
    lo = torch.tensor(cube.domain_min, dtype=image.dtype).view(1, 3, 1, 1)
    hi = torch.tensor(cube.domain_max, dtype=image.dtype).view(1, 3, 1, 1)
    # 1. map the domain onto grid_sample's [-1, 1] (align_corners: -1 and 1 are the end samples)
    coords = ((image - lo) / (hi - lo)).clamp(0, 1) * 2 - 1
    # 2. grid_sample wants (x, y, z) = (red, green, blue) last: (1, 1, B*H, W, 3)
    grid = coords.permute(0, 2, 3, 1).reshape(1, 1, b * h, w, 3)
    out = F.grid_sample(cube.table[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    # (1, 3, 1, B*H, W) -> (B, 3, H, W)
    return out.view(3, b, h, w).permute(1, 0, 2, 3).contiguous()


def identity_cube_text(size: int) -> str:
    """An identity LUT as .cube text (for tests and as a template)."""
    t = torch.linspace(0, 1, size)
    lines = [f"LUT_3D_SIZE {size}"]
    lines += [f"{t[r]:.6f} {t[g]:.6f} {t[bl]:.6f}" for bl in range(size) for g in range(size) for r in range(size)]
    return "\n".join(lines) + "\n"
