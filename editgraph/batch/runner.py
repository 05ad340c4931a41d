"""Batch runs: the same workflow over many rows of params, through ONE executor and cache.

Rows come from a CSV table (one row per run, columns are workflow params), from `--zip`
(name=a,b,c lists walked together) and from `--product` (every combination). Groups given
together multiply: table rows x zip rows x product rows.

Because every row goes through the same Executor and Cache, a node whose inputs and params are
the same in every row (the hero photo's load, a model load, its encode) runs once and is served
from the memory tier afterwards; the batch report counts, per node, how many rows ran it and how
many reused it. Everything a row computed stays cached, so a batch that stopped (a failing row,
Ctrl-C, a crash) resumes where it stopped when run again: finished rows come back all-cached.

Every row is bound (validated) before any runs, so a typo in row 200 is found in a second, not
after 199 renders.
"""

from __future__ import annotations

import csv
import itertools
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.errors import Cancelled, EditgraphError, Issue, NodeFailed, WorkflowInvalid

Row = dict[str, Any]


class BatchUsageError(EditgraphError):
    """A malformed --zip/--product/--table/--out (the CLI exits 2)."""


# --- rows ---------------------------------------------------------------------------------------


def rows_from_table(path: Path, workflow) -> list[Row]:
    """CSV rows as {param: text}; an empty cell leaves that param at its default. Relative values
    of path params resolve against the CSV file's folder (the table travels with its pictures)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            raw_rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BatchUsageError(f"cannot read table {path}: {exc}") from None
    if not columns:
        raise BatchUsageError(f"table {path} has no header row; its first line must name workflow params")
    unknown = [c for c in columns if c not in workflow.params]
    if unknown:
        allowed = ", ".join(workflow.params) or "(none)"
        raise WorkflowInvalid([Issue(f"{path}: column {c!r}", f"not a param of this workflow; its params: {allowed}") for c in unknown], str(path))
    base = path.resolve().parent
    rows = []
    for number, raw in enumerate(raw_rows, start=1):
        extra = [v for v in raw.get(None) or [] if v.strip()]
        if extra:
            raise BatchUsageError(
                f"table {path}, row {number}: {len(columns) + len(extra)} cells but {len(columns)} columns "
                f"({', '.join(columns)}); extra: {', '.join(map(repr, extra))}"
            )
        row = {}
        for key, value in raw.items():
            if key is None or value is None or value.strip() == "":
                continue  # an empty cell (or an empty trailing one): keep the default
            name, value = key.strip(), value.strip()
            if workflow.params[name].type == "path" and not Path(value).is_absolute():
                value = str((base / value).resolve())
            row[name] = value
        rows.append(row)
    if not rows:
        raise BatchUsageError(f"table {path} has a header but no rows")
    return rows


def _lists(specs: list[str], flag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        if not eq or not name.strip():
            raise BatchUsageError(f"{flag} {spec!r}: expected NAME=v1,v2,...")
        if name.strip() in out:
            raise BatchUsageError(f"{flag}: param {name.strip()!r} is given twice")
        out[name.strip()] = [v.strip() for v in values.split(",")]
    return out


def rows_from_zip(specs: list[str]) -> list[Row]:
    """--zip a=1,2,3 --zip b=x,y,z -> (a=1,b=x), (a=2,b=y), (a=3,b=z); lists must be equally long."""
    lists = _lists(specs, "--zip")
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise BatchUsageError(f"--zip lists must have the same length, got {lengths}")
    return [dict(zip(lists, combo)) for combo in zip(*lists.values())]


def rows_from_product(specs: list[str]) -> list[Row]:
    """--product a=1,2 --product b=x,y -> every combination (4 rows), the last list varying fastest."""
    lists = _lists(specs, "--product")
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def combine(groups: Iterable[list[Row]]) -> list[Row]:
    """Every combination of one row from each group, merged (later groups win on a shared name)."""
    rows: list[Row] = [{}]
    for group in groups:
        rows = [{**a, **b} for a in rows for b in group]
    return rows


# --- output folders -----------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _component(value: str) -> str:
    """A row value as ONE safe folder-name part: separators and odd characters become "_", and
    a value of only dots ("." or "..", which would climb out of the output root) becomes
    underscores, as does an empty one."""
    clean = _UNSAFE.sub("_", value)
    return clean if clean.strip(".") else "_" * max(len(clean), 1)


def _template_root(template: str) -> Path:
    """The folder every path from `template` must stay inside: its text before the first
    placeholder, up to the last separator ("renders/{sku}/x" -> "renders"; "{sku}" -> ".")."""
    prefix = template.split("{", 1)[0]
    head, sep, _ = prefix.replace("\\", "/").rpartition("/")
    return Path(head or sep or ".")


def _check_fields(template: str, names: Iterable[str]) -> None:
    """Placeholders are bare names: "{sku.__class__}" or "{sku[0]}" would read attributes of the
    value, and a conversion or format spec could reintroduce separators."""
    allowed = {"row", *names}
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise BatchUsageError(f"--out {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            raise BatchUsageError(f"--out {template!r}: {{{name}}} is not allowed; use {{row}} and param names: {', '.join(sorted(allowed))}")


def out_dirs(template: str, graphs: list, param_types: dict[str, str]) -> list[Path]:
    """OUT/row-<n> per row, or the template filled with {row} and the row's params (a path param
    gives its file stem: {image} -> "hero" for /photos/hero.jpg). Each value fills exactly one
    folder-name part, and every folder must resolve inside the template's root, whatever the
    values are (a CSV from someone else is input, not a path to trust)."""
    dirs = []
    for i, graph in enumerate(graphs, start=1):
        if "{" not in template:
            dirs.append(Path(template) / f"row-{i}")
            continue
        _check_fields(template, graph.params)
        fields = {name: _component(Path(str(v)).stem if param_types.get(name) == "path" else str(v)) for name, v in graph.params.items()}
        dirs.append(Path(template.format(row=i, **fields)))
    root = _template_root(template).resolve() if "{" in template else None
    seen: dict[Path, int] = {}
    for i, d in enumerate(dirs, start=1):
        where = d.resolve()
        if root is not None and not where.is_relative_to(root):
            raise BatchUsageError(f"--out {template!r}: row {i} would write to {where}, outside {root}")
        if where in seen:
            raise BatchUsageError(f"--out {template!r}: rows {seen[where]} and {i} would write to the same folder {d}; add {{row}}")
        seen[where] = i
    return dirs


# --- running ------------------------------------------------------------------------------------


@dataclass
class RowResult:
    row: int
    params: dict[str, Any]
    out: str
    seeds: dict[str, int] = field(default_factory=dict)
    status: str = "not run"  # ok | failed | cancelled | not run
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def bind_rows(workflow, rows: list[Row], sets: dict[str, str], *, base_dir: Path, source: str) -> list:
    """Bind every row before running any; all problems of all rows in one WorkflowInvalid."""
    from editgraph.graph.validate import bind

    graphs, issues = [], []
    for i, row in enumerate(rows, start=1):
        try:
            graphs.append(bind(workflow, {**sets, **row}, base_dir=base_dir, source=source))
        except WorkflowInvalid as exc:
            for iss in exc.issues:
                name = iss.path.removeprefix("--set ")
                where = f"row {i}: {name}" if name in row and name not in sets else f"row {i}: {iss.path}"
                issues.append(Issue(where, iss.message, iss.node_id, iss.node_type))
    if issues:
        raise WorkflowInvalid(issues, source)
    return graphs


class _RowEvents:
    """Executor listener: files each node event under the row now running."""

    def __init__(self) -> None:
        self.current: RowResult | None = None

    def __call__(self, event) -> None:
        from editgraph.executor.events import NodeFailedEvent, NodeFinished

        row = self.current
        if row is None:
            return
        if isinstance(event, NodeFinished):
            row.nodes[event.node_id] = {"type": event.node_type, "status": event.status, "seconds": round(event.seconds, 6), "key": event.key}
        elif isinstance(event, NodeFailedEvent):
            row.nodes[event.node_id] = {"type": event.node_type, "status": "failed", "error": event.error}


def _add_persistence(nodes: dict[str, dict], records: dict) -> None:
    """Beside each node that ran: whether its outputs got a disk entry, and why not."""
    for nid, rec in records.items():
        if rec.persisted is not None and nid in nodes:
            nodes[nid]["persisted"] = rec.persisted
            if rec.why_not:
                nodes[nid]["why_not"] = rec.why_not


def run_batch(
    graphs: list,
    dirs: list[Path],
    executor,
    *,
    keep_going: bool = False,
    on_row: Callable[[RowResult, list[RowResult]], None] | None = None,
    on_row_start: Callable[[RowResult], None] | None = None,
    cancel: threading.Event | None = None,
    jobs: int = 1,
) -> list[RowResult]:
    """Run each bound graph into its folder with one executor. Stops at the first failed row
    unless keep_going; Ctrl-C / cancel marks the row cancelled and re-raises after on_row.

    jobs > 1 keeps that many rows in flight: their hosted calls overlap (each provider up to its
    concurrency limit) while local nodes still run one at a time, lowest row first
    (executor/turnstile.py). A failed row never loses the others' results; without keep_going
    it only stops rows that have not started."""
    from editgraph.engines.errors import BudgetExhausted
    from editgraph.sharing import provenance

    results = [RowResult(i, g.params, str(d), dict(g.seeds)) for i, (g, d) in enumerate(zip(graphs, dirs), start=1)]
    events = _RowEvents()
    executor.listeners.insert(0, events)
    stop = threading.Event()
    if jobs > 1 and cancel is None:
        cancel = threading.Event()  # Ctrl-C in the main thread reaches the rows in flight through it

    def one(graph, out: Path, row: RowResult) -> None:
        events.current = row
        if on_row_start is not None:
            on_row_start(row)
        t0 = time.perf_counter()
        try:
            result = executor.run(graph, out_dir=out, stamp=provenance.stamp, cancel=cancel)
        except NodeFailed as exc:
            row.status, row.error = "failed", str(exc)
            if isinstance(exc.cause, BudgetExhausted):
                stop.set()  # --max-cost reached: later rows could only fail the same way
        except (Cancelled, KeyboardInterrupt):
            row.status, row.error = "cancelled", "cancelled"
            row.seconds = time.perf_counter() - t0
            if on_row is not None:
                on_row(row, results)
            raise
        else:
            row.status = "ok"
            row.outputs = [str(p) for p in result.written]
            _add_persistence(row.nodes, result.records)
        row.seconds = time.perf_counter() - t0
        if on_row is not None:
            on_row(row, results)
        if row.status == "failed" and not keep_going:
            stop.set()

    try:
        if jobs <= 1:
            for graph, out, row in zip(graphs, dirs, results):
                one(graph, out, row)
                if stop.is_set():
                    break
        else:
            _run_overlapped(graphs, dirs, results, executor, one, stop, cancel, jobs, events)
    finally:
        events.current = None
        executor.listeners.remove(events)
    return results


def _run_overlapped(graphs, dirs, results, executor, one, stop, cancel, jobs, events) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from editgraph.executor.turnstile import Turnstile

    turnstile = Turnstile(on_enter=lambda row: setattr(events, "current", row))
    previous = executor.waiting
    executor.waiting = turnstile.waiting

    def work(graph, out, row) -> None:
        with turnstile.hold(row.row, row):
            if stop.is_set() or cancel.is_set():
                return  # stays "not run"
            try:
                one(graph, out, row)
            except (Cancelled, KeyboardInterrupt):
                cancel.set()

    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="batch-row") as pool:
            futures = [pool.submit(work, g, d, r) for g, d, r in zip(graphs, dirs, results)]
            try:
                for f in futures:
                    f.result()
            except KeyboardInterrupt:
                cancel.set()
                raise
    finally:
        executor.waiting = previous
    if any(r.status == "cancelled" for r in results):
        raise Cancelled("batch cancelled")


def summary(results: list[RowResult]) -> dict[str, Any]:
    """Counts per row status, and per node how many rows ran it and how many reused it."""
    ran: Counter[str] = Counter()
    cached: Counter[str] = Counter()
    keys: dict[str, set[str]] = {}
    for r in results:
        for nid, rec in r.nodes.items():
            keys.setdefault(nid, set()).add(rec.get("key"))
            if rec["status"] == "ran":
                ran[nid] += 1
            elif rec["status"] == "cached":
                cached[nid] += 1
    statuses = Counter(r.status for r in results)
    nodes = sorted(set(ran) | set(cached))
    return {
        "rows": len(results),
        **{s: statuses.get(s, 0) for s in ("ok", "failed", "cancelled", "not run")},
        "node_runs": {n: ran[n] for n in nodes},
        "node_cached": {n: cached[n] for n in nodes},
        # nodes that are the same computation (one key) in every row, used by several rows and
        # computed at most once: what the shared cache saved
        "shared": [n for n in nodes if len(keys[n]) == 1 and ran[n] <= 1 and ran[n] + cached[n] > 1],
    }


def report(label: str, workflow, results: list[RowResult], seconds: float, device: Any = None, offload: str = "none") -> dict[str, Any]:
    from editgraph.executor.report import environment

    return {
        "workflow": label,
        "name": workflow.name,
        "rows": [r.as_dict() for r in results],
        "summary": summary(results),
        "seconds": round(seconds, 6),
        **environment(device, offload),
    }
