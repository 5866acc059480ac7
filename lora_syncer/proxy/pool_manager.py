"""The pools in force and their health: built from flags and rules, fed by requests and probes.

`PoolManager` owns the `PoolSet` (swapped whole on a rules reload), records what requests
report about each pool (failures and 5xx answers open its circuit breaker), runs the health
probes, and publishes the pools' weights and states as metrics. It does no forwarding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

from lora_syncer.config.rules import RuleSet
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.pools import CircuitBreaker, PoolSource, PoolSpec, route_pools
from lora_syncer.proxy.poolset import LoadedNames, PoolSet, UpstreamPool
from lora_syncer.rollout.weights import RolloutRoute

log: Final = structlog.get_logger("lora_syncer.proxy")

# GET url within timeout seconds -> None when healthy, else why not.
Probe = Callable[[str, float], Awaitable[str | None]]


class PoolManager:
    """Pools, breakers, health probes and the pool metrics."""

    def __init__(
        self,
        options: ProxyOptions,
        metrics: ProxyMetrics,
        loaded: LoadedNames | None,
        clock: Callable[[], float],
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.loaded = loaded
        self.clock = clock
        self.ruleset = RuleSet()
        # What rollouts impose (model -> route): an input of every build, so a rules reload keeps it.
        self.rollout_routes: dict[str, RolloutRoute] = {}
        self.pools = self.build(RuleSet(), None)
        self.publish()

    def make_breaker(self) -> CircuitBreaker:
        opts = self.options
        return CircuitBreaker(
            failure_threshold=opts.pool_failure_threshold,
            backoff_initial=opts.pool_backoff,
            backoff_max=opts.pool_backoff_max,
        )

    def desired(self, ruleset: RuleSet) -> tuple[tuple[PoolSpec, ...], PoolSource]:
        """Where traffic goes for this rules file: its HTTPRoute, else the `--pool` flags, else `--server`."""
        opts = self.options
        if opts.pools_from_rules and ruleset.route is not None and ruleset.route.backends:
            return route_pools(ruleset.route, {p.name: p.url for p in opts.pools}), "httproute"
        if opts.pools:
            return opts.pools, "flags"
        return (PoolSpec(opts.pool_name or "default", opts.upstream, 1),), "server"

    def build(self, ruleset: RuleSet, previous: PoolSet | None) -> PoolSet:
        """The pool set for `ruleset` (keeps breakers and rotations of unchanged pools)."""
        specs, source = self.desired(ruleset)
        return PoolSet.build(
            specs, source, ruleset, previous, self.make_breaker, self.loaded, self.rollout_routes
        )

    def apply_rules(self, ruleset: RuleSet) -> PoolSet:
        """Put a new rules file in force: pools (from its HTTPRoute) and per-pool route tables."""
        self.ruleset = ruleset
        self.pools = self.build(ruleset, self.pools)
        self.publish()
        return self.pools

    def apply_rollouts(self, routes: Mapping[str, RolloutRoute]) -> None:
        """Put the rollouts' routes in force (rebuilt with the rules in force; unchanged routes keep their rotation)."""
        if dict(routes) == self.rollout_routes:
            return
        self.rollout_routes = dict(routes)
        self.pools = self.build(self.ruleset, self.pools)
        self.publish()

    def is_canary(self, exchange_alias: str, target: str | None) -> bool:
        """Whether `target` is the canary of a rollout owning `exchange_alias`."""
        route = self.rollout_routes.get(exchange_alias)
        return route is not None and target is not None and route.targets[1].name == target

    def publish(self) -> None:
        now = self.clock()
        pools = self.pools.pools
        self.metrics.set_pools(
            {name: p.spec.weight for name, p in pools.items()},
            {name: p.breaker.available(now) for name, p in pools.items()},
        )

    # --- what requests report ----------------------------------------------------------

    def failed(self, pool: UpstreamPool, kind: str, error: str) -> None:
        """A request to `pool` failed before an answer (kind: connect, timeout, disconnect) or got a 5xx."""
        self.metrics.pool_error(pool.name, kind)
        if not self.pools.health_tracked:
            return
        if pool.breaker.record_failure(self.clock(), error):
            self.metrics.pool_up(pool.name, False)
            log.warning(
                "pool left the rotation after failures in a row",
                pool=pool.name,
                url=pool.base,
                error=error,
                backoff_seconds=pool.breaker.backoff,
            )

    def answered(self, pool: UpstreamPool, status: int, *, canary: bool = False) -> None:
        """An answer from `pool`. A rollout canary's 5xx is the adapter's fault, not the pool's: it
        neither opens nor closes the breaker (the rollout's analysis judges it)."""
        if canary and status >= 500:
            self.metrics.pool_error(pool.name, "status_5xx")
            return
        if status >= 500:
            self.failed(pool, "status_5xx", f"HTTP {status}")
        elif self.pools.health_tracked:
            pool.breaker.record_success()

    # --- health probes -------------------------------------------------------------------

    async def probe_all(self, probe: Probe) -> None:
        """Health-probe every pool that is in rotation or whose backoff is over (half-open)."""
        pools = self.pools
        if not pools.health_tracked:
            return
        now = self.clock()
        due = [p for p in pools.pools.values() if p.breaker.wants_probe(now)]
        if due:
            await asyncio.gather(*(self._probe(p, probe) for p in due))

    async def _probe(self, pool: UpstreamPool, probe: Probe) -> None:
        error = await probe(pool.base + self.options.pool_health_path, self.options.pool_health_timeout)
        breaker = pool.breaker
        if error is None:
            if breaker.probe_succeeded():
                self.metrics.pool_up(pool.name, True)
                log.info("pool back in the rotation", pool=pool.name, url=pool.base)
        elif breaker.probe_failed(self.clock(), error):
            self.metrics.pool_up(pool.name, False)
            log.warning(
                "pool left the rotation: health probe failed", pool=pool.name, url=pool.base, error=error
            )
