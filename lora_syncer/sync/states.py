"""Per-adapter state machine: typed states and one pure transition function.

The reconciler feeds it events from the plan (in sync, absent, skipped, due) and from vLLM call
results (started, succeeded, failed, server lost); nothing else changes an adapter's state.
`downloading` (with bytes done/total) and `warming` (a 1-token request after a load, before the
adapter counts as loaded) are states the machine already knows, for the steps that will emit them.

Warm-up (`--warmup`): `Warming` marks the machine `unwarmed` until a `Succeeded` (the warm-up
answered) clears it. While unwarmed, `InSync` (the server lists the wanted version) does not make
the adapter `loaded`: it stays `warming`, or `failed` with the warm-up's error until its retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from lora_syncer.sync.plan import Op, SkipReason


class AdapterState(StrEnum):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    WARMING = "warming"
    LOADED = "loaded"
    UNLOADING = "unloading"
    ABSENT = "absent"
    FAILED = "failed"
    CONFLICT = "conflict"
    BASE_MODEL_MISMATCH = "base_model_mismatch"
    FORBIDDEN_SOURCE = "forbidden_source"


# States whose adapter the proxy must not route to, even while the server lists it.
UNROUTABLE_STATES = frozenset({AdapterState.WARMING, AdapterState.FAILED})

# States that mean "this adapter will not load until someone edits the file": readiness ignores them.
BLOCKED_STATES = frozenset(
    {
        AdapterState.FAILED,
        AdapterState.CONFLICT,
        AdapterState.BASE_MODEL_MISMATCH,
        AdapterState.FORBIDDEN_SOURCE,
    }
)

SKIP_STATE = {
    SkipReason.CONFLICT: AdapterState.CONFLICT,
    SkipReason.BASE_MODEL_MISMATCH: AdapterState.BASE_MODEL_MISMATCH,
    SkipReason.FORBIDDEN_SOURCE: AdapterState.FORBIDDEN_SOURCE,
}


@dataclass(frozen=True, slots=True)
class Progress:
    """Bytes of an adapter fetched so far; `total` is None while unknown."""

    done: int
    total: int | None = None


@dataclass(frozen=True, slots=True)
class AdapterMachine:
    """Where one adapter stands. `reason` is the last error or the reason it is skipped."""

    state: AdapterState = AdapterState.PENDING
    reason: str | None = None
    attempts: int = 0  # consecutive failed attempts for the current declaration
    next_retry_at: float | None = None  # monotonic clock
    progress: Progress | None = None  # only while downloading
    unwarmed: bool = False  # loaded on the server, warm-up not answered yet (--warmup)

    def backing_off(self, now: float) -> bool:
        return self.next_retry_at is not None and now < self.next_retry_at


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redeclared:
    """The file changed this adapter's entry: a fresh start, no inherited backoff."""


@dataclass(frozen=True, slots=True)
class InSync:
    """Declared present and served from the declared source."""


@dataclass(frozen=True, slots=True)
class Gone:
    """Declared absent and not served."""


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: SkipReason
    detail: str


@dataclass(frozen=True, slots=True)
class Due:
    """The plan has an action for this adapter (run now, or later when backing off)."""


@dataclass(frozen=True, slots=True)
class Started:
    op: Op


@dataclass(frozen=True, slots=True)
class Downloaded:
    done: int
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Warming:
    """Loaded; a 1-token request must answer before it counts as loaded.

    `retry=False` right after a load (a fresh start: no earlier error or attempts count);
    `retry=True` when a failed warm-up runs again (attempts and the last error stay, so the
    backoff keeps growing and readiness keeps treating it as failing).
    """

    retry: bool = False


@dataclass(frozen=True, slots=True)
class Succeeded:
    op: Op


@dataclass(frozen=True, slots=True)
class Failed:
    """A call failed. `delay(attempts)` gives the backoff; `count_attempt=False` when not the adapter's fault."""

    message: str
    now: float
    delay: Callable[[int], float]
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class ServerLost:
    """The server went away mid-call: not this adapter's fault, so no backoff."""

    message: str


Event = (
    Redeclared
    | InSync
    | Gone
    | Skipped
    | Due
    | Started
    | Downloaded
    | Warming
    | Succeeded
    | Failed
    | ServerLost
)


# One shared machine per plain state (no reason, attempts, retry or progress): 10,000 loaded
# adapters hold one object, not one each allocated as its load completed, scattered among that
# moment's garbage (heap pages the process could then not give back). Frozen: sharing is safe.
_PLAIN = {state: AdapterMachine(state) for state in AdapterState}


def transition(m: AdapterMachine, event: Event) -> AdapterMachine:
    """The adapter's next state. Pure: same input, same output (equal, and often the same object)."""
    after = _next(m, event)
    plain = _PLAIN[after.state]
    return plain if after == plain else after


def _next(m: AdapterMachine, event: Event) -> AdapterMachine:
    match event:
        case Redeclared():
            return replace(m, reason=None, attempts=0, next_retry_at=None)
        case InSync():
            if m.unwarmed:
                # Served, but its warm-up has not answered: still warming, or failed until the retry.
                return m if m.state == AdapterState.FAILED else replace(m, state=AdapterState.WARMING)
            return AdapterMachine(AdapterState.LOADED)
        case Gone():
            return AdapterMachine(AdapterState.ABSENT)
        case Skipped(reason, detail):
            return replace(m, state=SKIP_STATE[reason], reason=detail, progress=None)
        case Due():
            # A failed adapter stays failed until its retry runs; a download in flight keeps
            # showing its bytes across passes; anything else waits as pending.
            if m.state in (AdapterState.FAILED, AdapterState.DOWNLOADING):
                return m
            return replace(m, state=AdapterState.PENDING, progress=None)
        case Started(op):
            return replace(
                m, state=AdapterState.UNLOADING if op == Op.UNLOAD else AdapterState.LOADING, progress=None
            )
        case Downloaded(done, total):
            return replace(m, state=AdapterState.DOWNLOADING, progress=Progress(done, total))
        case Warming(retry):
            if retry:
                return replace(m, state=AdapterState.WARMING, next_retry_at=None, progress=None)
            return AdapterMachine(AdapterState.WARMING, unwarmed=True)
        case Succeeded(op):
            return AdapterMachine(AdapterState.ABSENT if op == Op.UNLOAD else AdapterState.LOADED)
        case Failed(message, now, delay, count_attempt):
            attempts = m.attempts + 1 if count_attempt else m.attempts
            return AdapterMachine(
                AdapterState.FAILED,
                reason=message,
                attempts=attempts,
                next_retry_at=now + delay(max(1, attempts)),
                unwarmed=m.unwarmed,
            )
        case ServerLost(message):
            return replace(m, state=AdapterState.PENDING, reason=message, progress=None)
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover - exhaustive above


__all__ = [
    "BLOCKED_STATES",
    "UNROUTABLE_STATES",
    "AdapterMachine",
    "AdapterState",
    "Downloaded",
    "Due",
    "Event",
    "Failed",
    "Gone",
    "InSync",
    "Progress",
    "Redeclared",
    "ServerLost",
    "Skipped",
    "Started",
    "Succeeded",
    "Warming",
    "transition",
]
