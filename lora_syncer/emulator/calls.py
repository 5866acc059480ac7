"""The call log: every adapter load/unload the emulator received, in order, plus request counters.

Tests read it to assert things like "no adapter in ensureExist was ever unloaded" or "no retry
storm": how many admin calls arrived, with which outcome, and how many ran at once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AdminOp = Literal["load", "unload"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One admin call. `status` is the HTTP status sent, 0 when the connection was dropped.

    `t` is seconds since the emulator object was created (monotonic clock).
    """

    op: AdminOp
    name: str
    path: str | None
    status: int
    t: float
    load_inplace: bool = False
    route: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


@dataclass
class CallLog:
    """Ordered admin calls and per-endpoint counters."""

    records: list[CallRecord] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)  # endpoint key -> requests received
    injected_failures: Counter[str] = field(default_factory=Counter)  # endpoint key -> faults fired
    served: Counter[str] = field(default_factory=Counter)  # model in inference answers -> count
    streamed: Counter[str] = field(default_factory=Counter)  # model -> streamed answers started
    streams_completed: Counter[str] = field(default_factory=Counter)  # model -> streams sent to the end
    # (model, fault kind) -> per-model faults fired: error, empty, break, sse_error, latency
    model_faults: Counter[tuple[str, str]] = field(default_factory=Counter)
    admin_in_flight: int = 0
    max_admin_in_flight: int = 0
    _origin: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since the log's origin."""
        return time.monotonic() - self._origin

    def record(
        self,
        op: AdminOp,
        name: str,
        path: str | None,
        status: int,
        *,
        load_inplace: bool = False,
        route: str = "",
    ) -> CallRecord:
        """Append one admin call."""
        rec = CallRecord(op, name, path, status, round(self.now(), 6), load_inplace, route)
        self.records.append(rec)
        return rec

    def admin_started(self) -> None:
        """Count an admin call as running (for the concurrency high-water mark)."""
        self.admin_in_flight += 1
        self.max_admin_in_flight = max(self.max_admin_in_flight, self.admin_in_flight)

    def admin_finished(self) -> None:
        """Count an admin call as finished."""
        self.admin_in_flight -= 1

    def clear(self) -> None:
        """Forget all records and counters (the high-water mark restarts from what is running now)."""
        self.records.clear()
        self.requests.clear()
        self.injected_failures.clear()
        self.served.clear()
        self.model_faults.clear()
        self.streamed.clear()
        self.streams_completed.clear()
        self.max_admin_in_flight = self.admin_in_flight

    def counters(self) -> dict[str, Any]:
        """Counter summary, as `GET /_emulator/calls` shows it."""
        ops = Counter(r.op for r in self.records)
        return {
            "loads": ops["load"],
            "unloads": ops["unload"],
            "requests": dict(self.requests),
            "injected_failures": dict(self.injected_failures),
            "served": dict(self.served),
            "streamed": dict(self.streamed),
            "streams_completed": dict(self.streams_completed),
            "model_faults": self.model_fault_counts(),
            "max_admin_in_flight": self.max_admin_in_flight,
        }

    def model_fault_counts(self) -> dict[str, dict[str, int]]:
        """`{model: {kind: n}}` of the per-model faults fired."""
        out: dict[str, dict[str, int]] = {}
        for (model, kind), n in self.model_faults.items():
            out.setdefault(model, {})[kind] = n
        return out

    def to_dict(self) -> dict[str, Any]:
        """`{"calls": [...], "counters": {...}}`."""
        return {"calls": [r.to_dict() for r in self.records], "counters": self.counters()}
