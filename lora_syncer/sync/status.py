"""Per-adapter state and the syncer's view of the server: what /status, /readyz and the proxy read.

Plain data, mutated only by the reconciler on the event loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class AdapterState(StrEnum):
    PENDING = "pending"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    ABSENT = "absent"
    FAILED = "failed"
    CONFLICT = "conflict"
    BASE_MODEL_MISMATCH = "base_model_mismatch"
    FORBIDDEN_SOURCE = "forbidden_source"


# States that mean "this adapter will not load until someone edits the file": readiness ignores them.
BLOCKED_STATES = frozenset(
    {
        AdapterState.FAILED,
        AdapterState.CONFLICT,
        AdapterState.BASE_MODEL_MISMATCH,
        AdapterState.FORBIDDEN_SOURCE,
    }
)

Declared = Literal["present", "absent", "undeclared"]


@dataclass(frozen=True)
class BackoffPolicy:
    """Per-adapter retry delay across passes: `initial` doubling up to `maximum`, ±10% jitter."""

    initial: float = 5.0
    maximum: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        if failures <= 0:
            return 0.0
        base = min(self.maximum, self.initial * (2.0 ** min(failures - 1, 32)))
        spread = base * self.jitter
        jittered: float = (rng or random).uniform(-spread, spread)
        return max(0.0, base + jittered)


@dataclass(slots=True)
class AdapterStatus:
    id: str
    declared: Declared
    source: str | None = None
    base_model: str | None = None
    observed_root: str | None = None
    state: AdapterState = AdapterState.PENDING
    last_error: str | None = None
    attempts: int = 0  # consecutive failed attempts for the current declaration
    next_retry_at: float | None = None  # monotonic clock
    declaration: tuple[str, str | None, str | None] = ("", None, None)
    changed_at: float = field(default_factory=time.time)

    def set_state(self, state: AdapterState) -> bool:
        """Set the state; True when it changed."""
        if state == self.state:
            return False
        self.state = state
        self.changed_at = time.time()
        return True

    def backing_off(self, now: float) -> bool:
        return self.next_retry_at is not None and now < self.next_retry_at

    def to_dict(self, now_monotonic: float) -> dict[str, Any]:
        retry_in = None
        if self.next_retry_at is not None:
            retry_in = round(max(0.0, self.next_retry_at - now_monotonic), 3)
        return {
            "declared": self.declared,
            "source": self.source,
            "base_model": self.base_model,
            "observed_root": self.observed_root,
            "state": self.state.value,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "next_retry_in_seconds": retry_in,
            "state_since": self.changed_at,
        }


@dataclass
class ServerStatus:
    url: str = ""
    reachable: bool | None = None  # None until the first attempt
    version: str | None = None
    supports_inplace: bool = True
    runtime_updating_disabled: bool = False
    last_error: str | None = None
    last_seen_at: float | None = None
    base_models: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "version": self.version,
            "supports_load_inplace": self.supports_inplace,
            "runtime_updating_disabled": self.runtime_updating_disabled,
            "last_error": self.last_error,
            "last_seen_at": self.last_seen_at,
            "base_models": list(self.base_models),
        }


@dataclass
class SyncStatus:
    adapters: dict[str, AdapterStatus] = field(default_factory=dict)
    server: ServerStatus = field(default_factory=ServerStatus)
    passes: int = 0
    last_pass_at: float | None = None
    last_pass_seconds: float | None = None
    last_pass_result: str | None = None
    synced_once: bool = False

    # Every model id the server serves (base models, --lora-modules, adapters), from the last
    # `GET /v1/models` and kept current by our own successful loads and unloads. Mutated in
    # place (a frozenset copy per load would make bulk loads quadratic); readers get a
    # snapshot rebuilt only after a change.
    served: set[str] = field(default_factory=set)
    _served_snapshot: frozenset[str] | None = None

    def set_served(self, names: Iterable[str]) -> None:
        self.served = set(names)
        self._served_snapshot = None

    def mark_served(self, name: str, served: bool) -> None:
        if served:
            self.served.add(name)
        else:
            self.served.discard(name)
        self._served_snapshot = None

    def loaded_names(self) -> frozenset[str]:
        """Names the proxy may route to: served by the server as far as the syncer knows."""
        snapshot = self._served_snapshot
        if snapshot is None:
            snapshot = self._served_snapshot = frozenset(self.served)
        return snapshot

    def unsynced(self) -> list[str]:
        """Declared-present adapters that could load but are not loaded yet."""
        return [
            a.id
            for a in self.adapters.values()
            if a.declared == "present" and a.state != AdapterState.LOADED and a.state not in BLOCKED_STATES
        ]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in AdapterState}
        for a in self.adapters.values():
            out[a.state.value] += 1
        return out
