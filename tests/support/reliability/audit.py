"""The ledger of adapters files (written by the scenario, read by the syncer) and the call-log audit.

The invariants, judged against the emulator's call log (what the server really received) and
the order of events, never against the clock:

- lost unload: an adapter that every good file declared in `ensureExist` was unloaded;
- spurious unload: an unload of a name no good file written before it had in `ensureNotExist`;
- stale unload: an unload made after the syncer had read the file at least `STALE_READINGS`
  more times since it last read one asking for that unload (each reading is one reconcile pass,
  and passes run one at a time, so the pass that asked for the unload was long over). Judged
  only where the syncer's readings are recorded (the in-process sidecar);
- duplicate unload: a second successful unload of a name with no successful load in between;
- redundant load: a load the server refused as "already loaded" in a scenario without lost
  answers (nothing can excuse it there), and load calls per adapter above what the retry policy
  allows for the transitions the files asked for (a storm).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
from lora_syncer.config.errors import ConfigError
from lora_syncer.emulator import CallRecord, Emulator
from tests.support.reliability.files import KEY

# Readings of the file after the one that asked for an unload, beyond which the unload is stale.
STALE_READINGS = 2


@dataclass(frozen=True)
class GoodFile:
    """A file that parses, in force from time `t` (emulator clock) until the next good one."""

    t: float
    exist: frozenset[str]
    not_exist: frozenset[str]

    @classmethod
    def of(cls, t: float, cfg: AdaptersConfig | None) -> GoodFile:
        if cfg is None:
            return cls(t, frozenset(), frozenset())
        return cls(
            t,
            frozenset(a.id for a in cfg.ensure_exist),
            frozenset(a.id for a in cfg.ensure_not_exist) - cfg.conflicts,
        )


@dataclass
class Ledger:
    """Every file written (judged by the real parser) and every reading of it by the syncer.

    Times are on the emulator's call-log clock; they order events, they are never compared
    with a duration.
    """

    clock: Callable[[], float]
    good: list[GoodFile] = field(default_factory=list)
    written: Counter[str] = field(default_factory=Counter)
    # The configuration in force after each reload of the file by the in-process syncer.
    readings: list[GoodFile] = field(default_factory=list)
    # When the server came back from a restart (it re-reads --lora-modules and forgets the rest).
    restarts: list[float] = field(default_factory=list)

    def note(self, raw: bytes | None, kind: str) -> GoodFile | None:
        self.written[kind] += 1
        if raw is None:
            return None
        try:
            cfg = parse_adapters(raw, KEY)
        except ConfigError:
            return None
        entry = GoodFile.of(self.clock(), cfg)
        self.good.append(entry)
        return entry

    def read(self, cfg: AdaptersConfig | None) -> None:
        """The syncer reloaded the file; `cfg` is the configuration in force after it."""
        self.readings.append(GoodFile.of(self.clock(), cfg))

    def transitions_into_exist(self, name: str) -> int:
        """How many good files declared `name` present after one that did not (loads it may need)."""
        count, before = 0, False
        for g in self.good:
            now = name in g.exist
            if now and not before:
                count += 1
            before = now
        return count


def _stale(c: CallRecord, readings: Sequence[GoodFile]) -> str | None:
    before = [r for r in readings if r.t <= c.t]
    asked = [i for i, r in enumerate(before) if c.name in r.not_exist]
    if not asked:
        return f"stale: {c.name} unloaded at t={c.t:.3f}; the syncer never read a file asking for it"
    since = len(before) - 1 - asked[-1]
    if since >= STALE_READINGS:
        return (
            f"stale: {c.name} unloaded at t={c.t:.3f}; the syncer had read the file {since} times "
            "since it last asked for that"
        )
    return None


def unload_violations(calls: Sequence[CallRecord], ledger: Ledger) -> list[str]:
    """Lost, spurious, stale and duplicate unloads in the call log (see the module docstring)."""
    out: list[str] = []
    protected = frozenset.intersection(*(g.exist for g in ledger.good)) if ledger.good else frozenset()
    unloaded: set[str] = set()
    restarts = list(ledger.restarts)
    for c in calls:
        while restarts and restarts[0] <= c.t:
            restarts.pop(0)
            unloaded.clear()  # a restarted server has its --lora-modules again
        if c.op == "load" and c.status == 200:
            unloaded.discard(c.name)
        if c.op != "unload":
            continue
        if c.name in protected:
            out.append(f"lost: {c.name} unloaded at t={c.t:.3f} though every good file declares it present")
            continue
        if not any(g.t <= c.t and c.name in g.not_exist for g in ledger.good):
            out.append(f"spurious: {c.name} unloaded at t={c.t:.3f}; no good file asked for it")
            continue
        if ledger.readings:
            stale = _stale(c, ledger.readings)
            if stale is not None:
                out.append(stale)
        if c.status == 200:
            if c.name in unloaded:
                out.append(f"duplicate: {c.name} unloaded twice with success, no load or restart in between")
            unloaded.add(c.name)
    return out


def load_counts(calls: Sequence[CallRecord]) -> Counter[str]:
    return Counter(c.name for c in calls if c.op == "load")


def redundant_loads(calls: Sequence[CallRecord]) -> list[CallRecord]:
    """Loads the server refused with 400: every source in these scenarios is valid, so 'already loaded'."""
    return [c for c in calls if c.op == "load" and c.status == 400]


def converged(emulator: Emulator, final: GoodFile) -> bool:
    """The server holds every adapter the file declares present and none it declares absent."""
    loaded = emulator.loaded()
    return final.exist <= loaded.keys() and not (final.not_exist & loaded.keys())
