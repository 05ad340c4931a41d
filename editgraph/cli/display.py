"""The one progress display: executor events drawn with rich on stderr.

A single run prints a line per node as it finishes under a bar of nodes done, with a bar for a
node's steps (denoise). A batch (`rows=N`) draws one bar of rows done, naming the row, node and
step running now, and prints a line for each row that did not end ok.
"""

from __future__ import annotations

from typing import Any


class Display:
    def __init__(self, *, rows: int | None = None, quiet: bool = False):
        self.rows = rows
        self.quiet = quiet
        self.progress = None
        self.row = 0
        self.tasks: dict[str, Any] = {}
        self.finished: set[str] = set()

    def __enter__(self) -> "Display":
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            if self.rows is not None:
                columns.append(TimeRemainingColumn())
            self.progress = Progress(*columns, console=Console(stderr=True), transient=False)
            self.progress.start()
            self.overall = self.progress.add_task("batch" if self.rows is not None else "nodes", total=self.rows)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            if self.rows is not None:
                self.progress.update(self.overall, description="batch")  # the last row's node is done
            self.progress.stop()

    # --- batches ----------------------------------------------------------------------------------

    def row_start(self, row) -> None:
        self.row = row.row
        self._describe()

    def row_done(self, row) -> None:
        if self.progress is None:
            return
        if row.status != "ok":
            self.progress.console.print(f"  [red]row {row.row} {row.status}[/]: {row.error}")
        self.progress.advance(self.overall)

    def _describe(self, what: str = "") -> None:
        if self.progress is not None and self.rows is not None:
            self.progress.update(self.overall, description=f"row {self.row}/{self.rows}{' ' + what if what else ''}")

    # --- executor events ------------------------------------------------------------------------

    def __call__(self, event) -> None:
        if self.progress is None:
            return
        from editgraph.executor.events import NodeFailedEvent, NodeFinished, NodeProgress, NodeStarted, RunPlanned

        if self.rows is not None:  # a batch: the row bar says what runs now
            if isinstance(event, NodeStarted):
                self._describe(f"{event.node_id} ({event.node_type})")
            elif isinstance(event, NodeProgress):
                self._describe(f"{event.node_id} {event.step}/{event.total}")
            return
        p = self.progress
        if isinstance(event, RunPlanned):
            p.update(self.overall, total=len(event.nodes))
        elif isinstance(event, NodeStarted):
            self.tasks[event.node_id] = p.add_task(f"  {event.node_id} ({event.node_type})", total=None)
        elif isinstance(event, NodeProgress):
            p.update(self.tasks[event.node_id], completed=event.step, total=event.total)
        elif isinstance(event, NodeFinished):
            task = self.tasks.pop(event.node_id, None)
            if task is not None:
                p.remove_task(task)
            mark = "[green]ran[/]" if event.status == "ran" else "[dim]cached[/]"
            again = event.node_id in self.finished  # its value was gone: the executor says why
            why = f" again ({event.again or 'its value was gone'})" if again else ""
            p.console.print(f"  {mark:<20} {event.node_id} ({event.node_type}) {event.seconds * 1000:.1f} ms{why}")
            if not again:
                self.finished.add(event.node_id)
                p.advance(self.overall)
        elif isinstance(event, NodeFailedEvent):
            p.console.print(f"  [red]failed[/] {event.node_id} ({event.node_type}): {event.error}")
