"""Hosted-engine batch benchmark: how much a batch gains from overlapping provider calls.

    python bench/hosted.py            # prints a markdown table

A 20-row batch (load a photo, resize, mask an oval, `edit` routed to openai:gpt-image-1, save)
against the local stand-in server answering each call in 200 ms, run:
  1. serially (--jobs 1: one call at a time),
  2. with 8 rows in flight and a per-provider limit of 4 (the default batch mode for hosted
     workflows): expected about a quarter of the serial time,
  3. the same batch again: everything from the cache, zero requests, $0 spent.
Each run uses a fresh cache (except 3, which reuses 2's), after a one-row warm-up run that pays
for imports. The stand-in's request count and the
most calls it saw at once are printed with the times.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from editgraph.cli.main import main  # noqa: E402
from editgraph.testing.standin import StandIn  # noqa: E402

ROWS, DELAY_S, LIMIT = 20, 0.2, 4

WORKFLOW = {
    "format": "editgraph/1",
    "name": "routed-edit",
    "params": {"image": {"type": "path"}, "prompt": {"type": "string", "default": "a red apple"}},
    "nodes": {
        "photo": {"type": "image.load", "params": {"path": "$image"}},
        "small": {"type": "image.resize", "inputs": {"image": "photo.image"}, "params": {"width": 256, "height": 170}},
        "oval": {"type": "mask.ellipse", "inputs": {"image": "small"}, "params": {"rx": 0.2, "ry": 0.3}},
        "edit": {"type": "edit", "inputs": {"image": "small", "mask": "oval"}, "params": {"instruction": "$prompt", "table": "bench"}},
        "save": {"type": "image.save", "inputs": {"image": "edit.image"}, "params": {"path": "edit.png"}},
    },
}


def run(tmp: Path, s: StandIn, jobs: int, cache: str, table: str = "rows.csv") -> tuple[float, int, int, dict]:
    s.reset()
    t0 = time.perf_counter()
    code = main([
        "batch", str(tmp / "wf.json"), "--table", str(tmp / table), "--set", f"image={REPO / 'editgraph/workflows/assets/coffee.png'}",
        "--cache-dir", str(tmp / cache), "--out", str(tmp / f"out-{cache}-{jobs}"), "--report", str(tmp / "r.json"), "-q", "--jobs", str(jobs),
    ])
    wall = time.perf_counter() - t0
    assert code == 0, code
    report = json.loads((tmp / "r.json").read_text())
    return wall, s.count("openai"), s.max_in_flight["openai"], report["cost"]


def main_() -> None:
    with tempfile.TemporaryDirectory() as d, StandIn(delay_s=DELAY_S) as s:
        tmp = Path(d)
        (tmp / "wf.json").write_text(json.dumps(WORKFLOW))
        with open(tmp / "rows.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["prompt"])
            w.writerows([f"a fruit, variant {i}"] for i in range(ROWS))
        (tmp / "engines.json").write_text(json.dumps({"routes": {"bench": {"inpaint": ["openai:gpt-image-1"]}}}))
        os.environ.update(s.environ())
        os.environ.update({"OPENAI_API_KEY": "sk-bench-not-a-real-key-000000", "EDITGRAPH_ENGINES_CONFIG": str(tmp / "engines.json"),
                           "EDITGRAPH_OPENAI_MAX_CONCURRENCY": str(LIMIT)})
        with open(tmp / "warm.csv", "w", newline="") as f:
            csv.writer(f).writerows([["prompt"], ["warm-up"]])
        run(tmp, s, 1, "warm", "warm.csv")  # imports, tiny caches: not part of any figure
        serial = run(tmp, s, 1, "a")
        overlapped = run(tmp, s, 8, "b")
        again = run(tmp, s, 8, "b")
    print(f"{ROWS}-row batch, stand-in answers each call in {DELAY_S * 1000:.0f} ms, openai limit {LIMIT}\n")
    print("| run | wall | requests | most at once | spent | saved by cache |")
    print("|---|---|---|---|---|---|")
    for name, (wall, n, peak, cost) in (("serial (--jobs 1)", serial), (f"overlapped (--jobs 8, limit {LIMIT})", overlapped), ("re-run (cached)", again)):
        print(f"| {name} | {wall:.2f} s | {n} | {peak} | ${cost['spent_usd']:.4f} | ${cost['saved_by_cache_usd']:.4f} |")
    print(f"\noverlapped / serial: {overlapped[0] / serial[0]:.2f}")


if __name__ == "__main__":
    main_()
