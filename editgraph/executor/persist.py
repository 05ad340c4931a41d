"""Whether an output is worth a disk entry: never pay more to store and read back a value than
recomputing it would cost.

The executor measures each node's run() and knows each output's encoded size. Storing costs a
write now and a read (plus a hash check and a copy) whenever a later process needs the value;
recomputing costs the node's time again, plus the time of re-making its inputs that were not
persisted either (the costliest such input's own chain), which is why the cost carried is
cumulative: a long chain of cheap nodes persists one output every so often, bounding what a
recompute has to redo.

Writes are priced at the disk's own rate once its writer has measured one (DiskStore.write_bps,
kept in the index): the default 1 GB/s is a laptop SSD's page cache, while a disk whose dirty-page
writeback throttles writers (250 MB/s on this project's CI machine, issue 16) makes every large
file cost four times that; a chain of cheap grades of a 4096 px photo then stores fewer links.

A node class may declare its cost instead (`Node.cost_class`): "expensive" always persists
(model work: encodes, denoises, text encoders; their time varies with the machine and a lost
output costs seconds), "cheap" never does. The default, "measured", decides per output.

A run also keeps its writes of measured outputs within a budget: their estimated write time may
not pass `budget` (5 %) of the time its nodes took so far. Every write is paid by the run, if not
in its own thread then as a core and memory bandwidth the writer takes from the nodes, and at the
end, when the run waits for its writes (issue 16: a chain of cheap grades of a 4096 px photo ran
1.2-1.4x slower with the cache than without, a graph of 500 64 px nodes 1.35-1.7x). Outputs the
budget refuses carry on adding to their consumers' recompute cost, so the costliest chains are
stored first as the budget grows; a refused output's recompute is bounded by budget-sized runs.

Outputs not persisted stay in the memory tier. Their index ref (key -> fingerprints) is still
written: a later process knows what the node made and that it was cached, and re-runs the node
from its persisted parents only if a consumer actually needs the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from editgraph.executor.objectstore import INLINE_MAX
from editgraph.executor.store import INLINE_LIMIT


@dataclass(frozen=True)
class Persistence:
    """The disk tier's costs (seconds), measured on a laptop SSD and this project's CI disk;
    `factor` > 1 persists less (stored bytes must save that many times their cost)."""

    file_s: float = 1e-3  # create, write, rename a blob file, commit its row (0.15-1.2 ms on the CI disk, issue 16); later open it
    row_s: float = 30e-6  # an inline value (<= 16 KiB): its index row, written and read back
    write_bps: float = 1.0e9  # bytes/s into the page cache, until the disk tier has measured its own
    read_bps: float = 0.7e9  # bytes/s read back, hashed (blake3) and copied into a tensor
    factor: float = 1.0
    measured: bool = True  # price files at the disk's measured write rate (DiskStore.write_bps) once known
    budget: float = 0.05  # a run's writes of measured outputs: at most this share of its nodes' time
    # The shared tier (objectstore.py): a request costs a few ms wherever the store is (signing,
    # a round trip, the server's work), then bytes go at a network's rate, up now and down later;
    # a blob small enough to ride inside its run's bundle pays no request of its own.
    shared_request_s: float = 20e-3
    shared_bps: float = 100e6

    def why_not(self, cost_class: str, redo_s: float, nbytes: int, write_bps: float | None = None,
                budget: RunBudget | None = None, queued: int = 0) -> str | None:
        """None to persist; else the reason this output stays in memory only. `write_bps`: the
        disk's measured write rate, when the disk tier has measured one; `budget`: the run's
        allowance for writes of measured outputs (taken from when this returns None); `queued`:
        file bytes the disk tier's writer has not finished yet."""
        return reason_text(self.decide(cost_class, redo_s, nbytes, write_bps, budget, queued))

    def decide(self, cost_class: str, redo_s: float, nbytes: int, write_bps: float | None = None,
               budget: RunBudget | None = None, queued: int | Callable[[], int] = 0) -> Reason | None:
        """why_not's decision, its reason not formatted yet: the executor decides for every output
        and a report reads few of the reasons (formatting two floats was most of a decision's
        cost, paid per node of a cold run). `queued` may be a function giving it, called only
        when the decision needs it."""
        if cost_class != "measured":
            return None if cost_class == "expensive" else _DECLARED_CHEAP
        # Seconds to write the bytes now (what the run pays, kept for the budget), then to store
        # them: the write and one read back. Inline rows go to the index, not through file writes.
        if nbytes <= INLINE_LIMIT:
            write_s = self.row_s + nbytes / self.write_bps
        else:
            write_s = self.file_s + nbytes / (write_bps if write_bps and self.measured else self.write_bps)
        store_s = write_s + nbytes / self.read_bps
        if redo_s < store_s * self.factor:
            return (_CHEAPER, redo_s, nbytes, store_s)
        if callable(queued):
            queued = queued()
        if queued and nbytes > INLINE_LIMIT and budget is not None and budget.share != float("inf"):
            # A slower disk than priced (the rate is measured only once files are written) must
            # not grow a queue the run's end then waits for: an optional file never waits in line.
            return (_BUSY, queued)
        return None if budget is None else budget.take(write_s, nbytes)

    def why_not_shared(self, cost_class: str, redo_s: float, nbytes: int) -> str | None:
        """None to send an output the disk tier keeps to the shared tier too; else why not (a
        photo-sized value that a few ms of work remakes costs more to send and fetch back)."""
        if cost_class == "expensive":
            return None
        requests = 0 if nbytes <= INLINE_MAX else 2
        cost_s = requests * self.shared_request_s + 2 * nbytes / self.shared_bps
        if redo_s >= cost_s * self.factor:
            return None
        return f"recomputing ({redo_s * 1e3:.3f} ms) costs less than sending {nbytes} bytes to the shared tier and back ({cost_s * 1e3:.3f} ms)"


class RunBudget:
    """One run's allowance for writing measured outputs: `share` of the seconds its nodes ran."""

    __slots__ = ("ran_s", "share", "spent_s")

    def __init__(self, share: float):
        self.share = share
        self.ran_s = 0.0  # seconds inside the run's nodes so far
        self.spent_s = 0.0  # estimated seconds of the measured writes granted so far

    def take(self, write_s: float, nbytes: int) -> Reason | None:
        """Grant a write of `write_s` seconds (None), or say why it stays in memory."""
        allowed = self.share * self.ran_s if self.share != float("inf") else self.share  # ALWAYS's: inf * 0 s is nan
        if self.spent_s + write_s <= allowed:
            self.spent_s += write_s
            return None
        return (_OVER_BUDGET, nbytes, write_s * 1e3, self.share * 100, self.ran_s * 1e3)


# A reason not to persist: a %-format and its arguments; reason_text() makes the sentence.
Reason = tuple
_DECLARED_CHEAP = ("declared cheap: recomputing beats reading back",)
_CHEAPER = "recomputing (%.3f ms) costs less than writing and reading back %d bytes (%.3f ms)"  # given seconds
_BUSY = "the disk tier's writer is still busy (%d bytes queued): a measured output does not wait in line"
_OVER_BUDGET = "over the run's write budget: writing %d bytes (%.3f ms) would pass %.0f%% of its nodes' %.1f ms"


def reason_text(reason: Reason | str | None) -> str | None:
    """The sentence a reason stands for (a string is one already)."""
    if reason is None or isinstance(reason, str):
        return reason
    if reason[0] is _CHEAPER:  # seconds, shown in ms
        return _CHEAPER % (reason[1] * 1e3, reason[2], reason[3] * 1e3)
    return reason[0] % reason[1:] if len(reason) > 1 else reason[0]


DEFAULT = Persistence()
ALWAYS = Persistence(file_s=0.0, row_s=0.0, write_bps=float("inf"), read_bps=float("inf"), measured=False, budget=float("inf"),
                    shared_request_s=0.0, shared_bps=float("inf"))  # every storable output
