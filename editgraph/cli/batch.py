"""`editgraph batch`: a workflow once per row of params, on one cache (or on Ray: cli/cluster.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from editgraph.cli import spend as cli_spend
from editgraph.cli.common import (
    EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE, count_of, err, executor_args, load_to_run, mismatch_arg, name_value, note_problems,
    open_cache, parse_sets, settings_for,
)


def configure(batch: argparse.ArgumentParser) -> None:
    batch.add_argument("workflow")
    batch.add_argument("--table", help="CSV: a header of workflow param names, one row per run; empty cell = default")
    batch.add_argument("--zip", dest="zips", action="append", default=[], metavar="NAME=A,B,C", help="lists walked together (equal lengths)")
    batch.add_argument("--product", dest="products", action="append", default=[], metavar="NAME=A,B", help="every combination of these lists")
    batch.add_argument("--set", dest="sets", action="append", default=[], type=name_value, metavar="NAME=VALUE", help="a param held the same in every row")
    batch.add_argument("--out", default="out", help="output root (rows go to OUT/row-<n>/), or a template using {row} and param names")
    batch.add_argument("--report", help="write a JSON report: per row per node status, and how often each node ran")
    batch.add_argument("--keep-going", action="store_true", help="after a failed row, run the remaining rows (exit 4 at the end)")
    batch.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run the rows on Ray workers that keep models loaded: no ADDRESS starts a local Ray; "
                            "'auto', HOST:PORT or ray://... joins a cluster (needs: pip install 'editgraph[ray]')")
    batch.add_argument("--workers", type=count_of("workers"), help="with --ray: workers to start (default: one per GPU, else cluster CPUs / --threads)")
    batch.add_argument("--retries", type=int, default=2, help="with --ray: times a row is retried after its worker dies (default: 2)")
    executor_args(batch)
    mismatch_arg(batch)
    cli_spend.add_args(batch, batch=True)
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from editgraph.sharing.provenance import signing_stamp
    from editgraph.batch import runner as batch
    from editgraph.atomic import write_atomic
    from editgraph.executor.run import Executor

    workflow, base, label = load_to_run(args)
    try:
        groups = []
        if args.table:
            groups.append(batch.rows_from_table(Path(args.table), workflow))
        if args.zips:
            groups.append(batch.rows_from_zip(args.zips))
        if args.products:
            groups.append(batch.rows_from_product(args.products))
        if not groups:
            err("error: batch needs rows: --table FILE.csv, --zip NAME=A,B,..., or --product NAME=A,B,...")
            return EXIT_USAGE
        rows = batch.combine(groups)
        graphs = batch.bind_rows(workflow, rows, parse_sets(args.sets), base_dir=base, source=label)
        dirs = batch.out_dirs(args.out, graphs, {n: p.type for n, p in workflow.params.items()})
    except batch.BatchUsageError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    signing_stamp()  # a misconfigured C2PA identity fails before row 1, not after it
    from editgraph.cli.display import Display
    from editgraph.sharing.preflight import check_sources

    from editgraph.errors import Issue, WorkflowInvalid

    # Every row's sources (files, models and their pinned hashes) are checked before a long run.
    problems = [
        Issue(f"rows[{i}].{issue.path}", issue.message, issue.node_id, issue.node_type)
        for i, graph in enumerate(graphs)
        for issue in check_sources(graph, deep=True, settings=settings_for(args))
    ]
    if problems:
        raise WorkflowInvalid(problems, label)
    if args.ray is not None:
        from editgraph.cli.cluster import cmd_batch_ray

        return cmd_batch_ray(args, workflow, graphs, dirs, base, label, settings_for(args))
    from editgraph.engines.spend import Ledger

    cache = open_cache(args.cache_dir, settings_for(args))
    display = Display(rows=len(graphs), quiet=args.quiet)
    try:
        paid = cli_spend.has_paid_nodes(graphs[0])
        ests = cli_spend.estimates(graphs, cache) if paid else []
        if args.estimate:
            cli_spend.print_estimate(ests, rows=True)
            return EXIT_OK
        cli_spend.check_budget(ests, args.max_cost)
        ledger = Ledger(args.max_cost)
        executor = Executor(cache, listeners=[display], device=args.device, settings=settings_for(args), ledger=ledger)
        t0 = time.perf_counter()

        def on_row(row, results) -> None:
            display.row_done(row)
            if args.report:
                report = batch.report(label, workflow, results, time.perf_counter() - t0, executor.device, executor.offload)
                if paid:
                    report["cost"] = cli_spend.report_section(ledger, ests)
                write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())

        jobs = args.jobs or (8 if paid else 1)  # hosted rows overlap their network waits
        with display:
            results = batch.run_batch(
                graphs, dirs, executor, keep_going=args.keep_going, on_row=on_row, on_row_start=display.row_start, jobs=jobs
            )
    finally:
        cache.close()
        note_problems(cache.disk)
    if args.report and paid:  # the final word on spend (rows may have finished out of order)
        report = batch.report(label, workflow, results, time.perf_counter() - t0, executor.device, executor.offload)
        report["cost"] = cli_spend.report_section(ledger, ests)
        write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())
    cli_spend.print_spend(ledger)
    s = batch.summary(results)
    print(f"{s['ok']} of {s['rows']} rows ok" + (f", {s['failed']} failed" if s["failed"] else "") + (f", {s['not run']} not run" if s["not run"] else ""))
    if s["shared"]:
        print("computed once for all rows: " + ", ".join(s["shared"]))
    for r in results:
        if r.status == "failed":
            err(f"row {r.row}: {r.error}")
    if s["failed"]:
        err("(everything computed is cached: fix and run the batch again to resume)")
        return EXIT_NODE_FAILED
    return EXIT_OK

