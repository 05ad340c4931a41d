"""`editgraph batch ... --ray [ADDRESS]`: the CLI side of the Ray runner (batch/ray.py). Parsing and
display only: the rows were bound by cmd_batch; this starts the run and prints what happened."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from editgraph.cli.common import EXIT_CANCELLED, EXIT_NODE_FAILED, EXIT_OK
from editgraph.cli.display import Display


class ClusterDisplay(Display):
    """The batch's one bar (rows done of rows); its description says what each worker runs now."""

    def statuses(self, now: dict) -> None:
        if self.progress is None:
            return
        parts = []
        for name, st in sorted(now.items()):
            if "row" not in st:
                continue
            where = f" {st['node']}" if st.get("node") else ""
            step = f" {st['step']}/{st['total']}" if st.get("step") else ""
            parts.append(f"{name}: row {st['row'] or 'shared'}{where}{step}")
        self.progress.update(self.overall, description=" · ".join(parts) or "batch")


def cmd_batch_ray(args, workflow, graphs: list, dirs: list[Path], base: Path, label: str, settings) -> int:
    """settings: the environment's with this command's options (--cache among them)."""
    from editgraph.atomic import write_atomic
    from editgraph.batch import ray as cluster
    from editgraph.executor.objectstore import open_shared

    shared = settings.shared_cache
    if shared:
        open_shared(shared, settings).close()  # a wrong bucket or endpoint fails here, not on every worker
    address = args.ray or None
    ray = cluster.import_ray(local=address is None)  # says how to install Ray before anything starts
    # On one machine the workers share this process's disk tier; on a cluster each machine uses its
    # own (--cache-dir, when given, names the same path on every machine).
    disk_dir = args.cache_dir or (str(settings.cache_dir) if address is None else None)
    if address is not None and not shared:
        print("note: no --cache shared tier: each machine of the cluster computes the shared nodes once for itself", file=sys.stderr)
    display = ClusterDisplay(rows=len(graphs), quiet=args.quiet)
    t0 = time.perf_counter()

    def write_report(batch) -> None:
        if args.report:
            batch.seconds = time.perf_counter() - t0
            write_atomic(Path(args.report), (json.dumps(batch.report(label, workflow), indent=2) + "\n").encode())

    with display:
        batch = cluster.run_on_ray(
            graphs, dirs, ray=ray, address=address, workers=args.workers, threads=args.threads, disk_dir=disk_dir,
            shared=shared, retries=args.retries, keep_going=args.keep_going, source=label, base_dir=base,
            device=None if args.device in (None, "", "auto") else args.device, allow_model_mismatch=settings.allow_model_mismatch,
            offload=settings.offload,
            on_row_start=display.row_start, on_row=lambda row, batch: (display.row_done(row), write_report(batch)),
            on_status=display.statuses,
        )
    write_report(batch)
    s = batch.summary()
    print(
        f"{s['ok']} of {s['rows']} rows ok on {s['workers']} Ray workers"
        + (f", {s['failed']} failed" if s["failed"] else "")
        + (f", {s['cancelled']} cancelled" if s["cancelled"] else "")
        + (f", {s['not run']} not run" if s["not run"] else "")
        + (f"; {s['retries']} retried after a worker died" if s["retries"] else "")
    )
    if s["shared"]:
        print("computed once for all rows: " + ", ".join(s["shared"]))
    if s["per_worker"]:
        print("once per worker (not storable): " + ", ".join(s["per_worker"]))
    for r in batch.rows:
        if r.status == "failed":
            print(f"row {r.row}: {r.error}", file=sys.stderr)
    if batch.cancelled:
        print("cancelled: finished rows and nodes are cached; run the same command to resume", file=sys.stderr)
        return EXIT_CANCELLED
    if s["failed"] or s["not run"]:
        print("(everything computed is cached: fix and run the batch again to resume)", file=sys.stderr)
        return EXIT_NODE_FAILED
    return EXIT_OK
