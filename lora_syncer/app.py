"""The sidecar's lifecycle: build the pieces, run them, shut them down in order.

Shutdown phases (each separately bounded): stop watching and triggering; let in-flight vLLM
calls and proxied requests finish within --shutdown-grace; cancel what is left; close the
servers and the client. A second SIGTERM/SIGINT exits at once. Nothing is ever unloaded on
shutdown. Any root task dying unexpectedly shuts the rest down too (exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
from lora_syncer.config.source import WatchedFile
from lora_syncer.filewatch import FileWatcher
from lora_syncer.health import HealthSources, build_health_app
from lora_syncer.settings import SyncerSettings
from lora_syncer.sync.metrics import SyncMetrics
from lora_syncer.sync.plan import PlanOptions
from lora_syncer.sync.reconciler import Reconciler, SyncOptions
from lora_syncer.sync.status import BackoffPolicy
from lora_syncer.sync.vllm_client import Timeouts, VLLMClient

log = structlog.get_logger("lora_syncer.app")


def sync_options(settings: SyncerSettings) -> SyncOptions:
    return SyncOptions(
        resync_interval=settings.reconcile_trigger,
        max_concurrency=settings.max_concurrency,
        plan=PlanOptions(
            prune=settings.prune,
            base_model_policy=settings.base_model_policy,
            allowed_sources=settings.allowed_sources,
        ),
        health_check_timeout=settings.health_check_timeout,
        health_check_interval=settings.health_check_interval,
        backoff=BackoffPolicy(initial=settings.backoff_initial, maximum=settings.backoff_max),
        server_from_config=settings.server is None,
    )


@dataclass
class Sidecar:
    """Everything `lora-syncer run` starts; also what integration tests drive in-process."""

    settings: SyncerSettings
    proxy_options: Any = None  # lora_syncer.proxy.service.ProxyOptions when --rules is given
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    reconciler: Reconciler | None = None
    proxy: Any = None
    health_port: int | None = None
    _runner: web.AppRunner | None = None
    _watcher: FileWatcher | None = None
    _client: VLLMClient | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        source: WatchedFile[AdaptersConfig] = WatchedFile(s.config, parse_adapters)
        self._client = VLLMClient(
            s.server or "http://localhost:8000",
            api_key=s.api_key,
            timeouts=Timeouts(read=s.call_timeout, load=s.load_timeout),
            max_connections=s.max_concurrency + 2,
        )
        reconciler = Reconciler(source, self._client, sync_options(s), SyncMetrics(self.registry))
        self.reconciler = reconciler

        sources = HealthSources(registry=self.registry)
        sources.sections["syncer"] = reconciler.status_dict
        sources.ready_checks.append(lambda: reconciler.ready(s.ready_when))
        sources.live_checks.append(self._alive)

        if self.proxy_options is not None:
            from lora_syncer.proxy.service import ProxyService

            self.proxy = ProxyService(
                self.proxy_options, registry=self.registry, loaded=reconciler.status.loaded_names
            )
            await self.proxy.start()
            sources.sections["proxy"] = self.proxy.status
            sources.ready_checks.append(self.proxy.ready)

        self._runner = web.AppRunner(build_health_app(sources), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.metrics_host, s.metrics_port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.health_port = sockets[0].getsockname()[1] if sockets else s.metrics_port

        self._watcher = FileWatcher(
            s.config, lambda: reconciler.trigger("file"), mode=s.watch, poll_interval=s.poll_interval
        )
        await self._watcher.start()
        self._tasks.append(asyncio.create_task(reconciler.run(), name="reconciler"))
        log.info(
            "lora-syncer started",
            config=str(s.config),
            server=s.server or "from the adapters file",
            health_port=self.health_port,
            proxy_port=getattr(self.proxy, "port", None),
            watch=self._watcher.backend,
        )

    def _alive(self) -> tuple[bool, str]:
        for task in self._tasks:
            if task.done():
                return False, f"task {task.get_name()} has stopped"
        return True, ""

    async def wait(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (0) or a root task ends on its own (1)."""
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            return 0
        stopper.cancel()
        for task in done:
            exc = task.exception() if not task.cancelled() else None
            log.error("a root task stopped; shutting down", task=task.get_name(), error=repr(exc))
        return 1

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace
        if self._watcher is not None:
            await self._watcher.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
            await self.reconciler.drain(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=max(grace, 0.1))
        if self.proxy is not None:
            await self.proxy.stop(grace)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.aclose()
        log.info("lora-syncer stopped")


async def run_sidecar(settings: SyncerSettings, proxy_options: Any = None) -> int:
    sidecar = Sidecar(settings, proxy_options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now", signal=signame)
            os._exit(1)
        log.info("shutting down", signal=signame)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await sidecar.start()
    except OSError as exc:
        log.error("cannot start", error=str(exc))
        await sidecar.stop()
        return 1
    code = await sidecar.wait(stop)
    await sidecar.stop()
    return code
