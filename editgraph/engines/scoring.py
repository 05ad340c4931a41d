"""Local measures of how well an edit kept what it should keep (lower is better, 0 = perfect):

    preserve  mean absolute change of the pixels outside the mask (they should not move at all)
    seam      how much stronger edges are along the mask border than in the source there: a
              visible outline where the edit meets the photo
    drift     how far the mean colour of the kept region moved (the whole picture without a mask)

Each is in 0..1 units of pixel value. With a CLIP model (engines/clip.py) a fourth measure, `clip`,
the cosine similarity of picture and instruction (-1..1, higher is better), enters the penalty as
(1 - clip) / 2. penalty() weighs them into one number to rank candidates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BAND_PX = 3  # half-width of the border band the seam is measured in


def _edges(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (1, 1, H, W) gradient magnitude (sum of |dx| and |dy|, channel mean)."""
    dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs(), (0, 1, 0, 0))
    dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs(), (0, 0, 0, 1))
    return (dx + dy).mean(1, keepdim=True)


def measures(candidate: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None) -> dict[str, float]:
    if candidate.shape != source.shape:
        raise ValueError(f"candidate {tuple(candidate.shape)} and source {tuple(source.shape)} differ in shape")
    if mask is None:
        drift = (candidate.mean((-2, -1)) - source.mean((-2, -1))).abs().mean()
        return {"preserve": 0.0, "seam": 0.0, "drift": round(float(drift), 6)}
    inside = (mask >= 0.5).float()  # (1, 1, H, W)
    keep = 1.0 - inside
    kept = keep.sum().clamp(min=1.0)
    preserve = ((candidate - source).abs() * keep).sum() / (kept * candidate.shape[1])
    k = 2 * BAND_PX + 1
    grown = F.max_pool2d(inside, k, 1, BAND_PX)
    shrunk = 1.0 - F.max_pool2d(keep, k, 1, BAND_PX)
    band = (grown - shrunk).clamp(0, 1)
    in_band = band.sum().clamp(min=1.0)
    seam = ((_edges(candidate) - _edges(source)) * band).sum() / in_band
    mean_c = lambda x: (x * keep).sum((-2, -1)) / kept  # noqa: E731  (1, C)
    drift = (mean_c(candidate) - mean_c(source)).abs().mean()
    return {"preserve": round(float(preserve), 6), "seam": round(max(0.0, float(seam)), 6), "drift": round(float(drift), 6)}


def penalty(m: dict[str, float], weights: dict[str, float]) -> float:
    terms = {k: (1.0 - v) / 2 if k == "clip" else v for k, v in m.items()}
    return round(sum(weights.get(k, 0.0) * v for k, v in terms.items()), 6)
