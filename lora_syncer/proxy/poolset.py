"""The pools in force for one generation of flags + rules file, with their routes and health (no I/O).

`PoolSet.build` is called at start-up and on every rules reload. A pool whose name and URL are
unchanged keeps its circuit breaker (health outlives a weights edit) and, when its rules are
unchanged, its round-robin state; the pool rotation itself is kept when names and weights are
unchanged, so a reload that changes nothing restarts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_syncer.config.rules import RuleSet
from lora_syncer.proxy.matching import RouteTable
from lora_syncer.proxy.pools import CircuitBreaker, PoolPicker, PoolSource, PoolSpec
from lora_syncer.rollout.weights import RolloutRoute

LoadedNames = Callable[[], frozenset[str]]


@dataclass(eq=False)
class UpstreamPool:
    """One pool at run time: where it is, its breaker, and the rewrite rules that apply to it."""

    spec: PoolSpec
    breaker: CircuitBreaker
    table: RouteTable
    loaded: LoadedNames | None = None
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = self.spec.url.rstrip("/")

    @property
    def name(self) -> str:
        return self.spec.name

    def status(self, now: float, total_weight: int) -> dict[str, Any]:
        """This pool as `/status` shows it."""
        b = self.breaker
        state = b.state(now)
        retry = b.retry_at()
        return {
            "name": self.name,
            "url": self.base,
            "weight": self.spec.weight,
            "share": round(self.spec.weight / total_weight, 4) if total_weight else 0.0,
            "up": state == "closed",
            "state": state,
            "consecutiveFailures": b.failures,
            "backoffSeconds": b.backoff,
            "retryInSeconds": round(max(retry - now, 0.0), 3) if retry is not None else None,
            "timesOpened": b.opens,
            "lastError": b.last_error,
            "aliases": {
                alias: {"rule": r.rule.id, "targets": dict(zip(r.names, r.weights, strict=True))}
                for alias, r in self.table.exact.items()
            },
        }


class PoolSet:
    """Name -> pool, the weighted picker between them, and where they came from."""

    __slots__ = ("picker", "pools", "source", "unknown_pool_refs")

    def __init__(
        self,
        pools: dict[str, UpstreamPool],
        picker: PoolPicker,
        source: PoolSource,
        unknown_pool_refs: tuple[str, ...] = (),
    ) -> None:
        self.pools = pools
        self.picker = picker
        self.source = source
        self.unknown_pool_refs = unknown_pool_refs

    @property
    def first(self) -> UpstreamPool:
        return next(iter(self.pools.values()))

    @property
    def health_tracked(self) -> bool:
        """Pools from flags or an HTTPRoute are health-checked; the single `--server` upstream is not."""
        return self.source != "server"

    @classmethod
    def build(
        cls,
        specs: Sequence[PoolSpec],
        source: PoolSource,
        ruleset: RuleSet,
        previous: PoolSet | None,
        make_breaker: Callable[[], CircuitBreaker],
        loaded: LoadedNames | None = None,
        overrides: Mapping[str, RolloutRoute] | None = None,
    ) -> PoolSet:
        """The pools of `specs`; rules are filtered by poolRef per pool unless `source` is `server`."""
        if not specs:
            raise ValueError("at least one pool is needed")
        old = previous.pools if previous is not None else {}
        pools: dict[str, UpstreamPool] = {}
        for spec in specs:
            before = old.get(spec.name)
            same = before is not None and before.spec.url == spec.url
            breaker = before.breaker if same and before is not None else make_breaker()
            table = RouteTable.build(
                ruleset,
                previous=before.table if before is not None else None,
                pool=None if source == "server" else spec.name,
                overrides=overrides,
            )
            pools[spec.name] = UpstreamPool(
                spec=spec, breaker=breaker, table=table, loaded=loaded if source == "server" else None
            )
        names = [s.name for s in specs]
        weights = [s.weight for s in specs]
        picker = (
            previous.picker
            if previous is not None and previous.picker.same_as(names, weights)
            else PoolPicker(names, weights)
        )
        unknown: tuple[str, ...] = ()
        if source != "server":
            unknown = tuple(p for p in ruleset.pools_named if p not in pools)
        return cls(pools, picker, source, unknown)

    def available(self, now: float) -> list[str]:
        return [name for name, p in self.pools.items() if p.breaker.available(now)]

    def choose(
        self, now: float, sticky_key: str | None = None, exclude: Iterable[str] = ()
    ) -> UpstreamPool | None:
        """The pool for one request.

        First choice (nothing excluded): among pools in rotation; when none is, among all of them
        (a request is never refused on the breaker's word alone). A retry (`exclude` = pools
        already tried): only among other pools in rotation; None when there is none.
        """
        skip = frozenset(exclude) if exclude else frozenset()
        if len(self.pools) == 1 and not skip:
            pool = self.first
            return pool if pool.spec.weight > 0 else None
        up = [n for n in self.available(now) if n not in skip]
        if not skip and len(up) == len(self.pools):
            name = self.picker.pick(None, sticky_key)
        else:
            name = self.picker.pick(frozenset(up), sticky_key)
            if name is None and not skip:
                name = self.picker.pick(None, sticky_key)
        return None if name is None else self.pools[name]

    def status(self, now: float) -> list[dict[str, Any]]:
        total = sum(p.spec.weight for p in self.pools.values())
        return [p.status(now, total) for p in self.pools.values()]
