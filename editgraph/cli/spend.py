"""Money at the command line: `--estimate`, `--max-cost`, `--spend-again`, and the report's
spend section, shared by `run` and `batch`.

    --estimate        print each paid node's engine and estimated cost, and the total still to
                      spend (what the cache holds costs nothing); call nothing, write nothing
    --max-cost USD    refuse to start when a run (a batch row) is estimated above it; once the
                      spend providers report reaches it, issue no new call; the report says so
    --spend-again     `run IMAGE.png` of a picture hosted engines made: allow paying for the
                      calls the cache no longer holds (without it, such a re-run is refused)
"""

from __future__ import annotations

import argparse
from typing import Any

from editgraph.cli.common import count_of
from editgraph.errors import EditgraphError


def add_args(p: argparse.ArgumentParser, *, batch: bool) -> None:
    p.add_argument("--estimate", action="store_true", help="print the estimated cost of paid (hosted) nodes and exit; calls nothing")
    p.add_argument("--max-cost", type=_usd, metavar="USD", help="refuse runs estimated above USD; stop new paid calls once spend reaches it")
    if batch:
        p.add_argument("--jobs", type=count_of("rows in flight"), default=None, metavar="N",
                       help="rows in flight (default: 8 when the workflow calls hosted engines, else 1); local nodes still run one at a time")
    else:
        p.add_argument("--spend-again", action="store_true", help="re-running an image made by hosted engines: allow paying for calls the cache lacks")


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected an amount in USD, 0 or more, got {text!r}")
    return value


def estimates(graphs: list, cache: Any) -> list:
    from editgraph.executor.estimate import estimate

    return [estimate(g, cache) for g in graphs]


def has_paid_nodes(graph) -> bool:
    return any(n.cls.billing is not None for n in graph.nodes.values())


def print_estimate(ests: list, rows: bool) -> None:
    from editgraph.engines.prices import AS_OF

    lines = []
    for i, est in enumerate(ests, start=1):
        for n in est.nodes:
            where = f"row {i} " if rows else ""
            lines.append((f"{where}{n.node}", n.engine, f"{n.usd:.4f}", "cached" if n.cached else "to pay"))
    if lines:
        widths = [max(len(r[c]) for r in lines + [("node", "engine", "est. USD", "")]) for c in range(4)]
        print("  ".join(h.ljust(w) for h, w in zip(("node", "engine", "est. USD", ""), widths)).rstrip())
        for r in lines:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    total = sum(e.to_spend for e in ests)
    cached = sum(e.cached for e in ests)
    print(f"estimated to spend: ${total:.4f} (already cached: ${cached:.4f}); prices as of {AS_OF}")


def check_budget(ests: list, max_cost: float | None) -> None:
    """Refuse to start when one run (one batch row) alone is estimated above --max-cost."""
    if max_cost is None:
        return
    worst = max((e.to_spend for e in ests), default=0.0)
    if worst > max_cost:
        what = "the run" if len(ests) == 1 else "a row"
        raise BudgetRefused(f"not starting: {what} is estimated at ${worst:.4f}, above --max-cost ${max_cost:.4f} (see --estimate)")


def check_rerun(ests: list, label: str, spend_again: bool) -> None:
    """`run IMAGE.png`: paid calls the cache no longer holds need --spend-again."""
    unpaid = [n for e in ests for n in e.nodes if not n.cached]
    if unpaid and not spend_again:
        engines = ", ".join(sorted({n.engine for n in unpaid}))
        total = sum(n.usd for n in unpaid)
        raise BudgetRefused(
            f"{label} was made by hosted engines ({engines}) and this cache does not hold "
            f"{len(unpaid)} of their results; running it again calls them again, about ${total:.4f}. "
            "Pass --spend-again to pay, or point --cache-dir at the cache that made it"
        )


class BudgetRefused(EditgraphError):
    """A run was not started because of what it would cost."""


def report_section(ledger: Any, ests: list) -> dict[str, Any]:
    return ledger.summary(estimated=sum(e.to_spend for e in ests))


def print_spend(ledger: Any) -> None:
    s = ledger.summary()
    if not s["calls"] and not s["saved_by_cache_usd"] and not s["stopped_by_budget"]:
        return
    line = f"spent ${s['spent_usd']:.4f} on {len(s['calls'])} hosted call(s); saved by cache ${s['saved_by_cache_usd']:.4f}"
    if s["stopped_by_budget"]:
        line += f"; stopped: --max-cost ${s['max_cost_usd']:.4f} reached, {len(s['not_called'])} call(s) not made"
    print(line)
