"""The proxy as a service: the rules file kept in force, the listening server, shutdown.

`ProxyService` is what `lora-syncer run` and `lora-syncer proxy` start. With pools (`--pool`,
or an HTTPRoute in the rules file for `lora-syncer proxy`) it also health-probes them every
`--pool-health-interval` seconds. It reads the rules
file (a bad or missing file keeps the last good rules; at start-up it serves with no rules
and keeps retrying), watches the file's directory for kubelet's `..data` swaps, re-reads at
most one extra time per burst of events, and re-reads every `rules_resync_interval` seconds as
a safety net. Stopping is phased: stop accepting, let in-flight requests finish within the
grace period, cancel the rest, close the upstream session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.build import proxy_build
from lora_syncer.config.manifest import parse_rules_or_manifest
from lora_syncer.config.rules import RuleSet
from lora_syncer.config.rules.parse import alias_owners
from lora_syncer.config.source import Loaded
from lora_syncer.proxy.intake import IntakeServer
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import POOL_HEADER, SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.proxy.server import ProxyCore, bind_socket, build_proxy_server
from lora_syncer.proxy.telemetry import TargetTelemetry
from lora_syncer.reloading import ReloadingFile, WatchOptions, Wording
from lora_syncer.rollout.analysis_io import Analyzer as PrometheusAnalyzer
from lora_syncer.rollout.controller import AdapterView, Analyzer, RolloutController
from lora_syncer.rollout.metrics import RolloutMetrics
from lora_syncer.rollout.store import StateStore
from lora_syncer.supervisor import Supervisor

__all__ = [
    "POOL_HEADER",
    "SERVED_MODEL_HEADER",
    "ProxyOptions",
    "ProxyService",
]

log = structlog.get_logger("lora_syncer.proxy")


PROBE_TASK = "proxy-pool-probes"

RULES_WORDING = Wording(
    rejected_keeping="rules file rejected; keeping the last good rules",
    rejected_nothing="rules file rejected; serving with no rules",
    valid_again="rules file is valid again",
)


class _RulesReloadMetrics:
    """The rules file's `ReloadMetrics`, on the proxy's metrics."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def reloaded(self, outcome: str) -> None:
        self._metrics.rules_reloads.labels(outcome).inc()

    def valid(self, ok: bool) -> None:
        self._metrics.rules_valid.set(1 if ok else 0)

    def good(self, at: float) -> None:
        self._metrics.rules_last_success.set(at)


class ProxyService:
    """The rewrite proxy with its rules file: start, report, stop."""

    def __init__(
        self,
        options: ProxyOptions,
        *,
        registry: CollectorRegistry,
        loaded: Callable[[], frozenset[str]] | None = None,
        supervisor: Supervisor | None = None,
        adapters: AdapterView | None = None,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.options = options
        self.metrics = ProxyMetrics(registry)
        self.core = ProxyCore(options, self.metrics, loaded)
        self.telemetry = TargetTelemetry(registry)
        self.core.observers.append(self.telemetry.observe)
        # Owns the rules reloader and the pool probes; shared with the syncer under `run`.
        self.supervisor = supervisor or Supervisor()
        self._source: ReloadingFile[RuleSet] | None = None
        if options.rules_path is not None:
            pool = options.pool_name
            self._source = ReloadingFile(
                options.rules_path,
                lambda raw, name: parse_rules_or_manifest(raw, name, pool_name=pool),
                name="rules-file",
                wording=RULES_WORDING,
                metrics=_RulesReloadMetrics(self.metrics),
                options=WatchOptions(
                    mode=options.watch_mode,
                    poll_interval=options.poll_interval,
                    resync_interval=options.rules_resync_interval,
                ),
                on_change=self._rules_changed,
            )
        self.rollouts: RolloutController | None = None
        self._own_analyzer: PrometheusAnalyzer | None = None
        if options.rules_path is not None:
            if analyzer is None:
                # Prometheus/webhook checks; its HTTP session opens only when a rollout asks.
                analyzer = self._own_analyzer = PrometheusAnalyzer()
            manager = self.core.manager
            self.rollouts = RolloutController(
                options.rules_path,
                apply_routes=manager.apply_rollouts,
                aliases=lambda: alias_owners(manager.ruleset.rules),
                telemetry=self.telemetry,
                metrics=RolloutMetrics(registry),
                store=StateStore(options.state_dir),
                adapters=adapters,
                analyzer=analyzer,
                control=options.rollout_control,
                watch=WatchOptions(
                    mode=options.watch_mode,
                    poll_interval=options.poll_interval,
                    resync_interval=options.rules_resync_interval,
                ),
            )
        self._server: IntakeServer | None = None
        self._port: int | None = None
        self._probing = False
        self._abort_drain = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the rules (a bad file: serve with none, keep retrying), start watching, bind the port."""
        if self._source is not None:
            await self._source.reload()
            await self._source.start(self.supervisor)
        if self.rollouts is not None:
            await self.rollouts.start(self.supervisor)
        await self.core.open()
        server = build_proxy_server(self.core, keepalive_timeout=self.options.client_idle_timeout)
        self._server = server
        if self.options.pool_mode:
            self.supervisor.spawn(PROBE_TASK, self._probe_loop())
            self._probing = True
        try:
            sock = bind_socket(self.options.host, self.options.port)
            try:
                await server.start(sock)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            await self.stop(0)  # e.g. the port is taken: release the watcher and the upstream session
            raise
        self._port = sock.getsockname()[1]
        pools = self.core.pools
        log.info(
            "proxy listening",
            host=self.options.host,
            port=self._port,
            upstream=self.options.upstream if not pools.health_tracked else None,
            pools={n: p.base for n, p in pools.pools.items()} if pools.health_tracked else None,
            rules=str(self.options.rules_path) if self.options.rules_path else None,
            # uvloop when the `fast` extra is installed (as in the image); the benchmark checks it.
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
            # `compiled` in the image (mypyc, see setup.py); the benchmark checks it too.
            build=proxy_build(),
        )

    @property
    def rules_file(self) -> ReloadingFile[RuleSet] | None:
        """The rules file kept in force (None without --rules); `run` cross-checks it."""
        return self._source

    @property
    def port(self) -> int:
        """The port actually bound (the options may say 0)."""
        if self._port is None:
            raise RuntimeError("the proxy has not started")
        return self._port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish within `grace` seconds, then close everything."""
        if self._source is not None:
            await self._source.stop()
        if self.rollouts is not None:
            await self.rollouts.stop()
        if self._own_analyzer is not None:
            await self._own_analyzer.close()
        if self._probing:
            self._probing = False
            await self.supervisor.cancel(PROBE_TASK)
        server = self._server
        self._server = None
        if server is None:
            await self.core.close()  # start() may have opened the upstream session before failing
            return
        await server.stop_accepting()  # phase 1: no new connections
        server.pre_shutdown()  # keep-alive connections close after their current request
        await self.core.shadow.cancel_all()  # shadow copies are discarded work: not worth the grace
        drained = await self._drain(grace)  # phase 2: in-flight requests finish
        if not drained:
            log.warning(
                "proxy grace period over; cancelling requests still in flight", in_flight=self.core.in_flight
            )
        await server.shutdown()  # phase 3: cancel what is left, close the upstream session
        await self.core.close()
        log.info("proxy stopped")

    def abort_drain(self) -> None:
        """End the drain phase of a running `stop()` now (a second SIGTERM): cancel what is in flight."""
        self._abort_drain.set()

    async def _drain(self, grace: float) -> bool:
        if self.core.in_flight == 0:
            return True
        waiter = asyncio.ensure_future(self.core.wait_drained(grace))
        aborter = asyncio.ensure_future(self._abort_drain.wait())
        try:
            await asyncio.wait((waiter, aborter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, aborter):
                task.cancel()
            await asyncio.gather(waiter, aborter, return_exceptions=True)
        return waiter.done() and not waiter.cancelled() and waiter.result()

    # --- rules file --------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await self.core.probe_pools()
            await asyncio.sleep(self.options.pool_health_interval)

    async def reload(self) -> str:
        """Re-read the rules file now; returns `changed`, `unchanged` or `error`."""
        if self._source is None:
            return "unchanged"
        return await self._source.reload()

    def _rules_changed(self, loaded: Loaded[RuleSet]) -> None:
        """A new good rules file: put it in force and say what it holds."""
        ruleset = loaded.value
        pools = self.core.apply_rules(ruleset)
        table = pools.first.table
        self.metrics.rules_in_force.set(len(table.exact) + (1 if table.catch_all else 0))
        for warning in ruleset.warnings:
            log.warning("rules file warning", issue=warning.format())
        for name in pools.unknown_pool_refs:
            log.warning(
                "rules name a pool this proxy does not route to; they are not used",
                pool=name,
                pools=sorted(pools.pools),
            )
        log.info(
            "rules in force",
            file=str(self.options.rules_path),
            generation=loaded.generation,
            aliases=sorted(table.exact),
            catch_all=table.catch_all.rule.id if table.catch_all else None,
            pools={n: p.spec.weight for n, p in pools.pools.items()} if pools.health_tracked else None,
        )

    # --- reporting ---------------------------------------------------------------------

    def rollouts_status(self) -> dict[str, Any]:
        """The `rollouts` section of /status."""
        return self.rollouts.status() if self.rollouts is not None else {"rollouts": []}

    def health_routes(self) -> list[web.RouteDef]:
        """Routes the health/metrics server adds: the rollout control endpoint."""
        controller = self.rollouts

        async def act(request: web.Request) -> web.Response:
            if controller is None:
                return web.json_response({"error": "no rules file: no rollouts"}, status=404)
            code, body = await controller.control_action(
                request.match_info["name"], request.match_info["action"]
            )
            return web.json_response(body, status=code)

        return [web.post("/rollouts/{name}/{action}", act)]

    def ready(self) -> tuple[bool, str]:
        """Ready once listening and (when a rules file is set) a good rules file has been read once."""
        if self._server is None:
            return False, "proxy: not listening"
        source = self._source
        if source is not None and source.current is None:
            error = source.error
            detail = error.summary() if error is not None else "not read yet"
            return False, f"proxy: no valid rules file yet ({detail})"
        return True, ""

    def status(self) -> dict[str, Any]:
        """The rules in force, their source documents, the rules-file error and the generation."""
        source = self._source
        table = self.core.table
        current = source.current if source is not None else None
        error = source.error if source is not None else None
        body: dict[str, Any] = {
            "listening": self._port is not None and self._server is not None,
            "port": self._port,
            "upstream": self.options.upstream,
            "rulesFile": str(source.path) if source is not None else None,
            "generation": current.generation if current else None,
            "loadedAt": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.loaded_at)) if current else None
            ),
            "error": (
                {"summary": error.summary(), "issues": [i.to_dict() for i in error.issues]} if error else None
            ),
            "aliases": {
                alias: {"rule": r.rule.id, "targets": dict(zip(r.names, r.weights, strict=True))}
                for alias, r in table.exact.items()
            },
            "catchAll": (
                {
                    "rule": table.catch_all.rule.id,
                    "targets": dict(zip(table.catch_all.names, table.catch_all.weights, strict=True)),
                }
                if table.catch_all
                else None
            ),
            "inFlight": self.core.in_flight,
            "poolSource": self.core.pools.source,
            "pools": self.core.pools.status(self.core.clock()),
            "unknownPoolRefs": list(self.core.pools.unknown_pool_refs),
            "responseModel": self.options.response_model,
            "stickyHeader": self.options.sticky_header,
        }
        body.update(table.ruleset.to_dict())
        return body
