"""The sidecar's lifecycle: build the pieces, run them, shut them down in order.

Every long-lived task (the reconcile loop, the file reloaders, the proxy's pool probes) belongs
to one `Supervisor`: a task that dies is logged with its exception and turns `/healthz` red,
and `run` then exits with status 1. Shutdown phases (each separately bounded): stop watching
and triggering; let in-flight vLLM calls and proxied requests finish within --shutdown-grace;
cancel what is left; close the servers and the client. A second SIGTERM/SIGINT exits at once
(see `runtime.StopSignals`). Nothing is ever unloaded on shutdown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.manifest import parse_adapters_or_manifest
from lora_syncer.config.source import Loaded
from lora_syncer.health import HealthSources, build_health_app
from lora_syncer.reloading import ReloadingFile, WatchOptions, Wording
from lora_syncer.runtime import StopSignals
from lora_syncer.settings import SyncerSettings
from lora_syncer.supervisor import Supervisor, cancel_and_wait
from lora_syncer.sync.capacity import CapacityCheck
from lora_syncer.sync.metrics import SyncMetrics
from lora_syncer.sync.plan import PlanOptions
from lora_syncer.sync.reconciler import Reconciler, SyncOptions
from lora_syncer.sync.render import alias_readiness, readiness, render_status
from lora_syncer.sync.states import AdapterState
from lora_syncer.sync.status import BackoffPolicy, SyncStatus
from lora_syncer.sync.vllm_client import Timeouts, VLLMClient
from lora_syncer.sync.warmup import WarmupWorker

log = structlog.get_logger("lora_syncer.app")

ADAPTERS_WORDING = Wording(
    rejected_keeping="adapters file rejected; the last good configuration stays in force",
    rejected_nothing="adapters file rejected; nothing will be loaded or unloaded until it is fixed",
    valid_again="adapters file is valid again",
)

RECONCILER_TASK = "reconciler"
WARMUP_TASK = "warmup"


def sync_options(settings: SyncerSettings) -> SyncOptions:
    return SyncOptions(
        resync_interval=settings.reconcile_trigger,
        max_concurrency=settings.max_concurrency,
        plan=PlanOptions(
            prune=settings.prune,
            prune_max=settings.prune_max,
            base_model_policy=settings.base_model_policy,
            allowed_sources=settings.allowed_sources,
        ),
        health_check_timeout=settings.health_check_timeout,
        health_check_interval=settings.health_check_interval,
        backoff=BackoffPolicy(initial=settings.backoff_initial, maximum=settings.backoff_max),
        server_from_config=settings.server is None,
    )


def log_adapters_file(loaded: Loaded[AdaptersConfig], path: str) -> None:
    """The log lines of a new adapters file taken into force."""
    log.info(
        "adapters file loaded",
        file=path,
        generation=loaded.generation,
        name=loaded.value.name,
        ensure_exist=len(loaded.value.ensure_exist),
        ensure_not_exist=len(loaded.value.ensure_not_exist),
    )
    for w in loaded.value.warnings:
        log.warning(w.message, file=w.file, path=w.path, line=w.line)


class SyncedAdapters:
    """The rollout controller's view of adapters: what the syncer has loaded, and what failed (incl. warm-up)."""

    def __init__(self, status: SyncStatus) -> None:
        self._status = status

    def loaded(self, name: str) -> bool:
        return name in self._status.loaded_names()

    def failed(self, name: str) -> str | None:
        adapter = self._status.adapters.get(name)
        if adapter is None or adapter.state != AdapterState.FAILED:
            return None
        return adapter.last_error or "failed"


@dataclass
class Sidecar:
    """Everything `lora-syncer run` starts; also what integration tests drive in-process."""

    settings: SyncerSettings
    proxy_options: Any = None  # lora_syncer.proxy.service.ProxyOptions when --rules is given
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    reconciler: Reconciler | None = None
    adapters_file: ReloadingFile[AdaptersConfig] | None = None
    proxy: Any = None
    health_port: int | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)
    analyzer: Any = (
        None  # a lora_syncer.rollout.controller.Analyzer; None: the proxy asks Prometheus/webhooks itself
    )
    _runner: web.AppRunner | None = None
    _client: VLLMClient | None = None
    _cache: Any = None  # lora_syncer.sources.service.CacheService with --adapter-cache

    async def start(self) -> None:
        s = self.settings
        metrics = SyncMetrics(self.registry)
        self._client = VLLMClient(
            s.server or "http://localhost:8000",
            api_key=s.api_key,
            timeouts=Timeouts(read=s.call_timeout, load=s.load_timeout),
            max_connections=s.max_concurrency + 2,
        )
        adapters: ReloadingFile[AdaptersConfig] = ReloadingFile(
            s.config,
            parse_adapters_or_manifest,  # the mounted key, or a ConfigMap manifest
            name="adapters-file",
            wording=ADAPTERS_WORDING,
            metrics=metrics,
            options=WatchOptions(
                mode=s.watch, poll_interval=s.poll_interval, resync_interval=s.reconcile_trigger
            ),
        )
        self.adapters_file = adapters
        cache = None
        if s.adapter_cache is not None:
            from lora_syncer.sources.service import CacheService, CacheSettings

            self._cache = CacheService(
                CacheSettings(
                    root=s.adapter_cache,
                    max_bytes=s.adapter_cache_max_bytes,
                    gc_grace=s.adapter_cache_gc_grace,
                    concurrency=s.download_concurrency,
                    max_downloads=s.max_concurrency,
                    allowed_sources=s.allowed_sources,
                ),
                metrics,
            )
            self._cache.open()  # removes what a killed run left half-downloaded
            cache = self._cache.cache
        reconciler = Reconciler(
            adapters,
            self._client,
            sync_options(s),
            metrics,
            capacity=CapacityCheck(self._client, metrics, s.max_cpu_loras),
            cache=cache,
        )
        if s.warmup:
            reconciler.warmup = WarmupWorker(
                self._client,
                reconciler.status,
                metrics,
                reconciler.options.backoff.delay,
                reconciler.server.lost,
            )
        self.reconciler = reconciler
        path = str(s.config)

        def adapters_changed(loaded: Loaded[AdaptersConfig]) -> None:
            log_adapters_file(loaded, path)
            reconciler.config_changed(loaded)

        adapters.on_change = adapters_changed

        sources = HealthSources(registry=self.registry)
        sources.sections["syncer"] = self.syncer_status
        sources.ready_checks.append(lambda: readiness(reconciler.status, adapters, s.ready_when))
        sources.live_checks.append(self.supervisor.live)

        if self.proxy_options is not None:
            from lora_syncer.proxy.service import ProxyService

            self.proxy = ProxyService(
                self.proxy_options,
                registry=self.registry,
                loaded=reconciler.status.loaded_names,
                supervisor=self.supervisor,
                adapters=SyncedAdapters(reconciler.status),
                analyzer=self.analyzer,
            )
            await self.proxy.start()
            sources.sections["proxy"] = self.proxy.status
            sources.sections["rollouts"] = self.proxy.rollouts_status
            sources.routes.extend(self.proxy.health_routes())
            sources.ready_checks.append(self.proxy.ready)
            self._watch_cross_check(sources, reconciler, adapters)
            if not self.proxy_options.pool_mode and s.ready_when == "synced":  # other pools: not ours to know
                proxy = self.proxy
                sources.ready_checks.append(
                    lambda: alias_readiness(
                        {alias: r.names for alias, r in proxy.core.table.exact.items()},
                        reconciler.status.loaded_names(),
                    )
                )

        self._runner = web.AppRunner(build_health_app(sources), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.metrics_host, s.metrics_port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.health_port = sockets[0].getsockname()[1] if sockets else s.metrics_port

        await adapters.start(self.supervisor)
        self.supervisor.spawn(RECONCILER_TASK, reconciler.run())
        if reconciler.warmup is not None:
            self.supervisor.spawn(WARMUP_TASK, reconciler.warmup.run())
        log.info(
            "lora-syncer started",
            config=path,
            server=s.server or "from the adapters file",
            health_port=self.health_port,
            proxy_port=getattr(self.proxy, "port", None),
            watch=adapters.backend,
        )

    def _watch_cross_check(
        self, sources: HealthSources, reconciler: Reconciler, adapters: ReloadingFile[AdaptersConfig]
    ) -> None:
        """Both files are here: report their disagreements once per change of either."""
        rules = self.proxy.rules_file
        if rules is None:
            return
        from lora_syncer.config_warnings import ConfigWarnings  # with the rules parser: only with --rules

        warnings = ConfigWarnings(self.registry)
        sources.sections["crossCheck"] = warnings.status

        def check() -> None:
            warnings.update(adapters.current, rules.current, reconciler.status.server.base_models)

        for file in (adapters, rules):
            inner = file.on_change

            def changed(loaded: Any, inner: Any = inner) -> None:
                if inner is not None:
                    inner(loaded)
                check()

            file.on_change = changed
        check()

    def syncer_status(self) -> dict[str, Any]:
        """The `syncer` section of `/status`."""
        assert self.reconciler is not None and self.adapters_file is not None
        return render_status(self.reconciler.status, self.adapters_file, time.monotonic())

    async def wait(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (0) or a supervised task dies (1)."""
        stopper = asyncio.ensure_future(stop.wait())
        died = asyncio.ensure_future(self.supervisor.died.wait())
        try:
            await asyncio.wait({stopper, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopper, died):
                waiter.cancel()
            await asyncio.gather(stopper, died, return_exceptions=True)
        if stop.is_set():
            return 0
        log.error("a background task stopped; shutting down", tasks=self.supervisor.dead())
        return 1

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace
        # Phase 1: no more triggers from the file.
        if self.adapters_file is not None:
            await self.adapters_file.stop()
        # Phase 2: the loop stops after its pass; in-flight vLLM calls get the grace period.
        if self.reconciler is not None:
            loop_task = self.supervisor.release(RECONCILER_TASK)  # about to end on purpose
            self.reconciler.stop()
            await self.reconciler.drain(grace)
            if loop_task is not None:
                await cancel_and_wait(loop_task, max(grace, 0.1))
        # The warm-up worker only serves the loop: it ends with it (a warm-up in flight is dropped).
        await self.supervisor.cancel(WARMUP_TASK, max(grace, 0.1))
        # Phase 3: the proxy drains its requests; then every task left is cancelled.
        if self.proxy is not None:
            await self.proxy.stop(grace)
        await self.supervisor.stop()
        if self._cache is not None:
            await self._cache.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.aclose()
        log.info("lora-syncer stopped")


async def run_sidecar(settings: SyncerSettings, proxy_options: Any = None) -> int:
    if proxy_options is not None and proxy_options.port and proxy_options.port == settings.metrics_port:
        log.error(
            "--proxy-port and --metrics-port are the same port; give each its own",
            port=settings.metrics_port,
        )
        return 2
    sidecar = Sidecar(settings, proxy_options)
    signals = StopSignals()
    signals.install()
    try:
        try:
            await sidecar.start()
        except OSError as exc:
            log.error("cannot start", error=str(exc))
            await sidecar.stop()
            return 1
        code = await sidecar.wait(signals.stop)
        await sidecar.stop()
        return code
    finally:
        signals.remove()
