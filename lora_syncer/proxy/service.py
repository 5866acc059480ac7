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
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import RuleSet, parse_rules
from lora_syncer.config.source import WatchedFile
from lora_syncer.filewatch import FileWatcher
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import POOL_HEADER, SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.proxy.server import ProxyCore, bind_socket, build_proxy_app

__all__ = [
    "POOL_HEADER",
    "SERVED_MODEL_HEADER",
    "ProxyOptions",
    "ProxyService",
]

log = structlog.get_logger("lora_syncer.proxy")


class ProxyService:
    """The rewrite proxy with its rules file: start, report, stop."""

    def __init__(
        self,
        options: ProxyOptions,
        *,
        registry: CollectorRegistry,
        loaded: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.options = options
        self.metrics = ProxyMetrics(registry)
        self.core = ProxyCore(options, self.metrics, loaded)
        self._source: WatchedFile[RuleSet] | None = None
        if options.rules_path is not None:
            pool = options.pool_name
            self._source = WatchedFile(
                options.rules_path, lambda raw, name: parse_rules(raw, name, pool_name=pool)
            )
        self._watcher: FileWatcher | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._stopping = False
        self._abort_drain = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the rules (a bad file: serve with none, keep retrying), start watching, bind the port."""
        if self._source is not None:
            await self._reload()
            self._watcher = FileWatcher(
                self._source.path,
                self._on_file_event,
                mode=self.options.watch_mode,
                poll_interval=self.options.poll_interval,
            )
            await self._watcher.start()
            self._resync_task = asyncio.create_task(self._resync(), name="proxy-rules-resync")
        app = build_proxy_app(self.core)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,  # a client that leaves cancels its upstream call
            keepalive_timeout=self.options.client_idle_timeout,
            shutdown_timeout=1.0,  # the drain phase in stop() is where the grace period is spent
        )
        await runner.setup()
        self._runner = runner
        if self.options.pool_mode:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="proxy-pool-probes")
        try:
            sock = bind_socket(self.options.host, self.options.port)
            site = web.SockSite(runner, sock)
            await site.start()
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
        )

    @property
    def port(self) -> int:
        """The port actually bound (the options may say 0)."""
        if self._port is None:
            raise RuntimeError("the proxy has not started")
        return self._port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish within `grace` seconds, then close everything."""
        self._stopping = True
        for task in (self._resync_task, self._reload_task, self._probe_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._resync_task = self._reload_task = self._probe_task = None
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        runner = self._runner
        self._runner = None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()  # phase 1: no new connections
        if runner.server is not None:
            runner.server.pre_shutdown()  # keep-alive connections close after their current request
        drained = await self._drain(grace)  # phase 2: in-flight requests finish
        if not drained:
            log.warning(
                "proxy grace period over; cancelling requests still in flight", in_flight=self.core.in_flight
            )
        await runner.cleanup()  # phase 3: cancel what is left, close the upstream session
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

    def _on_file_event(self) -> None:
        if self._stopping:
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True  # one more pass after the running one, however many events came
            return
        self._reload_task = asyncio.create_task(self._reload_loop(), name="proxy-rules-reload")

    async def _reload_loop(self) -> None:
        while True:
            self._reload_again = False
            await self._reload()
            if not self._reload_again:
                return

    async def _probe_loop(self) -> None:
        while True:
            await self.core.probe_pools()
            await asyncio.sleep(self.options.pool_health_interval)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.rules_resync_interval)
            self._on_file_event()

    async def reload(self) -> str:
        """Re-read the rules file now; returns `changed`, `unchanged` or `error`."""
        return await self._reload()

    async def _reload(self) -> str:
        source = self._source
        if source is None:
            return "unchanged"
        outcome = await source.reload()
        self.metrics.rules_reloads.labels(outcome).inc()
        if outcome == "error":
            self.metrics.rules_valid.set(0)
            error = source.error
            assert error is not None
            log.error(
                "rules file rejected; keeping the last good rules"
                if source.current
                else "rules file rejected; serving with no rules",
                file=str(source.path),
                issues=[i.format() for i in error.errors][:20],
            )
            return outcome
        self.metrics.rules_valid.set(1)
        if outcome == "changed" and source.current is not None:
            ruleset = source.current.value
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
                file=str(source.path),
                generation=source.current.generation,
                aliases=sorted(table.exact),
                catch_all=table.catch_all.rule.id if table.catch_all else None,
                pools={n: p.spec.weight for n, p in pools.pools.items()} if pools.health_tracked else None,
            )
        return outcome

    # --- reporting ---------------------------------------------------------------------

    @property
    def rules_error(self) -> ConfigError | None:
        return self._source.error if self._source is not None else None

    def ready(self) -> tuple[bool, str]:
        """Ready once listening and (when a rules file is set) a good rules file has been read once."""
        if self._runner is None:
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
            "listening": self._port is not None and self._runner is not None,
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
