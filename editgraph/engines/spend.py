"""The run's money: what was estimated, spent (from providers' reported usage) and saved by the
cache, and the --max-cost guard.

The guard works on calls, not nodes: before a paid call is sent, authorize() checks that spend
so far plus what calls already in flight are expected to cost has not reached the limit; once it
has, no new call goes out (BudgetExhausted) and the report says the budget stopped the run. One
ledger serves a whole batch, across threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from editgraph.engines.errors import BudgetExhausted


@dataclass
class Ledger:
    max_cost: float | None = None
    spent: float = 0.0
    saved: float = 0.0  # what cached results would have cost again
    calls: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # node ids the budget stopped
    _in_flight: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authorize(self, node_id: str, engine: str, expected: float) -> float:
        """Reserve `expected` USD for a call, or raise BudgetExhausted. Returns the reservation."""
        with self._lock:
            if self.max_cost is not None and self.spent + self._in_flight >= self.max_cost:
                self.refused.append(node_id)
                raise BudgetExhausted(
                    f"--max-cost ${self.max_cost:.4f} reached (spent ${self.spent:.4f}"
                    + (f", ${self._in_flight:.4f} in flight" if self._in_flight else "")
                    + f"); not calling {engine}"
                )
            self._in_flight += expected
            return expected

    def settle(self, reservation: float, node_id: str, record: dict[str, Any] | None) -> None:
        """A call ended: drop its reservation and charge what it actually cost (None: nothing)."""
        with self._lock:
            self._in_flight = max(0.0, self._in_flight - reservation)
            if record is not None:
                self.spent += float(record.get("cost_usd") or 0.0)
                self.calls.append({"node": node_id, **record})

    def credit_saved(self, usd: float) -> None:
        with self._lock:
            self.saved += usd

    @property
    def stopped(self) -> bool:
        return bool(self.refused)

    def summary(self, estimated: float | None = None) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "spent_usd": round(self.spent, 6),
                "saved_by_cache_usd": round(self.saved, 6),
                "max_cost_usd": self.max_cost,
                "stopped_by_budget": self.stopped,
                "calls": [dict(c) for c in self.calls],
            }
            if estimated is not None:
                out["estimated_usd"] = round(estimated, 6)
            if self.refused:
                out["not_called"] = list(self.refused)
            return out
