"""Three processes build and load the same tiny model from an empty models folder, N rounds
(issue 10, defect 2). Prints a table: round, per-process outcome, seconds. Run from a checkout:

    python bench/tiny_race.py --rounds 10 --procs 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time


def _worker(root: str, rounds: int, barrier, results) -> None:
    import torch

    torch.set_num_threads(1)
    from editgraph.models import cache
    from editgraph.models.loader import load_model

    for r in range(rounds):
        os.environ["EDITGRAPH_MODELS_DIR"] = os.path.join(root, f"round-{r}")
        barrier.wait()
        t0 = time.perf_counter()
        try:
            model = load_model("tiny-sd")
            results.put((r, os.getpid(), "ok " + model.content_hash[:12], time.perf_counter() - t0))
        except Exception as exc:
            results.put((r, os.getpid(), f"FAILED: {type(exc).__name__}: {str(exc)[:80]}", time.perf_counter() - t0))
        cache.release_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--procs", type=int, default=3)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as root:
        barrier, results = ctx.Barrier(args.procs), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(root, args.rounds, barrier, results)) for _ in range(args.procs)]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=900) for _ in range(args.procs * args.rounds))
        for p in procs:
            p.join()
    print(f"| round | {' | '.join(f'process {i + 1}' for i in range(args.procs))} | slowest s |")
    print("|---|" + "---|" * args.procs + "---|")
    for r in range(args.rounds):
        row = [g for g in got if g[0] == r]
        print(f"| {r + 1} | " + " | ".join(g[2] for g in row) + f" | {max(g[3] for g in row):.1f} |")
    failed = sum(1 for g in got if g[2].startswith("FAILED"))
    print(f"\n{len(got) - failed} of {len(got)} loads succeeded; {failed} failed")


if __name__ == "__main__":
    main()
