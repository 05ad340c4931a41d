"""`editgraph run`: one workflow (a file, a bundled name, or an image editgraph made), its outputs,
its report and what it spent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from editgraph.cli import spend as cli_spend
from editgraph.cli.common import (
    EXIT_OK, executor_args, load_to_run, mismatch_arg, name_value, note_problems, open_cache, parse_sets, settings_for,
    warn_threads,
)


def configure(run: argparse.ArgumentParser) -> None:
    run.add_argument("workflow")
    run.add_argument("--set", dest="sets", action="append", default=[], type=name_value, metavar="NAME=VALUE", help="set a workflow param")
    run.add_argument("--out", default="out", help="output folder; the only place a run writes files (default: ./out)")
    run.add_argument("--report", help="write a JSON report: each node's status, seconds and key; the resolved params")
    run.add_argument("--no-cache", action="store_true", help="run every node; read and write no cache")
    executor_args(run)
    mismatch_arg(run)
    cli_spend.add_args(run, batch=False)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from editgraph.api import Workflow, execute
    from editgraph.atomic import write_atomic
    from editgraph.cli.display import Display
    from editgraph.engines.spend import Ledger
    from editgraph.errors import NodeFailed
    from editgraph.executor.cache import Cache
    from editgraph.graph.validate import bind

    workflow, base, label = load_to_run(args)
    graph = bind(workflow, parse_sets(args.sets), base_dir=base, source=label)
    warn_threads(args.workflow)
    settings = settings_for(args)
    cache = Cache(None, None) if args.no_cache else open_cache(args.cache_dir)
    try:
        ests = cli_spend.estimates([graph], cache) if cli_spend.has_paid_nodes(graph) else []
        if args.estimate:
            cli_spend.print_estimate(ests, rows=False)
            return EXIT_OK
        cli_spend.check_budget(ests, args.max_cost)
        from editgraph.sharing.source import is_image

        if is_image(args.workflow) and Path(args.workflow).is_file():
            cli_spend.check_rerun(ests, args.workflow, args.spend_again)
        ledger = Ledger(args.max_cost)
        display = Display(quiet=args.quiet)
        try:
            with display:
                result = execute(
                    Workflow(workflow, base, label),
                    graph,
                    out=args.out,
                    cache=False if args.no_cache else cache,
                    device=args.device,
                    listeners=[display],
                    settings=settings,
                    ledger=ledger,
                )
        except NodeFailed as exc:
            cli_spend.print_spend(ledger)
            if args.report:  # what was spent before the failure (or the budget stop) is reported too
                _write_failed_report(Path(args.report), label, graph, exc, cli_spend.report_section(ledger, ests) if ests else None)
            raise
    finally:
        cache.close()
        note_problems(cache.disk)  # index errors met mid-run cost entries, never the run: say so
    for path in result.written:
        print(f"wrote {path}")
    if graph.seeds:
        print("seeds drawn: " + ", ".join(f"{k}={v}" for k, v in graph.seeds.items()))
    cli_spend.print_spend(ledger)
    if args.report:
        report = result.report
        if ests:
            report["cost"] = cli_spend.report_section(ledger, ests)
        write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())
    return EXIT_OK


def _write_failed_report(path: Path, label: str, graph, exc, spend: dict[str, Any] | None) -> None:
    from editgraph.atomic import write_atomic

    report: dict[str, Any] = {
        "workflow": label, "name": graph.workflow.name, "params": graph.params, "seeds": graph.seeds,
        "status": "failed", "failed": {"node": exc.node_id, "type": exc.node_type, "error": str(exc)},
    }
    if spend is not None:
        report["cost"] = spend
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())

