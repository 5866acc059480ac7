"""Per-adapter state and the syncer's view of the server: what /status, /readyz and the proxy read.

Plain data, mutated only by the reconciler on the event loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from lora_syncer.sync.capacity import CapacityReport
from lora_syncer.sync.states import (
    BLOCKED_STATES,
    UNROUTABLE_STATES,
    AdapterMachine,
    AdapterState,
    Event,
    transition,
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
    """One adapter: what the file declares, what the server shows, and its state machine."""

    id: str
    declared: Declared
    source: str | None = None
    base_model: str | None = None
    observed_root: str | None = None
    machine: AdapterMachine = field(default_factory=AdapterMachine)
    declaration: tuple[str | None, ...] = ("", None, None, None)  # declared, source, base, checksum
    changed_at: float = field(default_factory=time.time)
    # Bumped by every state change of any adapter: the proxy's routable-names snapshot compares it.
    state_changes: ClassVar[int] = 0

    def apply(self, event: Event) -> bool:
        """Feed one event to the state machine; True when the state changed."""
        before = self.machine.state
        self.machine = transition(self.machine, event)
        if self.machine.state == before:
            return False
        self.changed_at = time.time()
        AdapterStatus.state_changes += 1
        return True

    @property
    def state(self) -> AdapterState:
        return self.machine.state

    @property
    def last_error(self) -> str | None:
        return self.machine.reason

    @property
    def attempts(self) -> int:
        return self.machine.attempts

    @property
    def next_retry_at(self) -> float | None:
        return self.machine.next_retry_at

    def backing_off(self, now: float) -> bool:
        return self.machine.backing_off(now)


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


@dataclass(frozen=True)
class PruneHold:
    """--prune unloads above --prune-max, waiting for the file to stay unchanged one more resync."""

    adapters: tuple[str, ...]
    limit: int
    generation: str  # the adapters file's generation that asked for them
    since: float  # wall clock, for /status
    since_monotonic: float


@dataclass
class SyncStatus:
    adapters: dict[str, AdapterStatus] = field(default_factory=dict)
    server: ServerStatus = field(default_factory=ServerStatus)
    passes: int = 0
    last_pass_at: float | None = None
    last_pass_seconds: float | None = None
    last_pass_result: str | None = None
    synced_once: bool = False
    capacity: CapacityReport | None = None  # declared adapters against vLLM's CPU LoRA cache
    # The adapter cache's last GC figures (None without --adapter-cache).
    adapter_cache: dict[str, int | None] | None = None
    prune_hold: PruneHold | None = None

    # Every model id the server serves (base models, --lora-modules, adapters), from the last
    # `GET /v1/models` and kept current by our own successful loads and unloads. Mutated in
    # place (a frozenset copy per load would make bulk loads quadratic); readers get a
    # snapshot rebuilt only after a change.
    served: set[str] = field(default_factory=set)
    _served_snapshot: frozenset[str] | None = None
    _snapshot_changes: int = -1

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
        """Names the proxy may route to: served by the server as far as the syncer knows, and
        not warming up or failed (a failed warm-up or reload must not get traffic)."""
        snapshot = self._served_snapshot
        if snapshot is None or self._snapshot_changes != AdapterStatus.state_changes:
            self._snapshot_changes = AdapterStatus.state_changes
            adapters = self.adapters
            snapshot = self._served_snapshot = frozenset(
                name
                for name in self.served
                if (a := adapters.get(name)) is None or a.state not in UNROUTABLE_STATES
            )
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
