"""`Emulator`: an emulated vLLM server owned by a test or by `lora-syncer emulator`.

It owns the listening socket, so it can really go away: `go_down()` closes the socket and every
open connection (clients get "connection refused"), `come_up()` listens again on the same port,
and `restart()` does both with the adapters forgotten, as a restarted vLLM forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from lora_syncer.emulator.calls import CallLog, CallRecord
from lora_syncer.emulator.config import EmulatorConfig
from lora_syncer.emulator.control import add_control_routes
from lora_syncer.emulator.faults import Faults
from lora_syncer.emulator.server import VllmHandlers, add_fallback_route, add_vllm_routes
from lora_syncer.emulator.state import AdapterRegistry

log = structlog.get_logger(__name__)

# Seconds in-flight requests get when the emulator goes down (aiohttp treats 0 as "wait forever").
_SHUTDOWN_GRACE = 0.01


class Emulator:
    """An emulated vLLM server. Use `async with Emulator(config) as emu:` or `start()`/`stop()`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        startup = self.config.faults.copy()
        startup.runtime_lora_updating = startup.runtime_lora_updating and self.config.runtime_lora_updating
        self._startup_faults = startup
        self.call_log = CallLog()
        self.handlers = VllmHandlers(self.config, startup.copy(), self.call_log)
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transition = asyncio.Lock()
        self._static: tuple[tuple[str, str], ...] = ()

    # ---- state views -----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The faults in force (mutable; changes apply to the next request)."""
        return self.handlers.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.handlers.faults = value

    @property
    def calls(self) -> list[CallRecord]:
        """A copy of the admin-call log, oldest first."""
        return list(self.call_log.records)

    @property
    def registry(self) -> AdapterRegistry:
        """The adapter registry (name -> path as sent, in load order)."""
        return self.handlers.registry

    def loaded(self) -> dict[str, str]:
        """Registered adapters, name -> root, in load order."""
        return dict(self.handlers.registry.adapters)

    @property
    def is_up(self) -> bool:
        """Whether the emulator is listening."""
        return self._runner is not None

    @property
    def host(self) -> str:
        """The host it listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port it listens on (fixed at the first start, kept across restarts)."""
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """`http://HOST:PORT`."""
        return f"http://{self._host}:{self.port}"

    # ---- state changes ---------------------------------------------------------------------

    def reset_faults(self) -> None:
        """Back to the faults in force at start-up (none, unless the config or flags set some)."""
        self.handlers.faults = self._startup_faults.copy()

    def forget_adapters(self) -> None:
        """Forget every adapter except `--lora-modules`, as a restarted vLLM does."""
        registry = self.handlers.registry
        registry.clear()
        for name, path in self._static:
            registry.add(name, path)

    def preload(self, adapters: Mapping[str, str]) -> None:
        """Register adapters (name -> root) directly: no file checks, no call log (test set-up)."""
        registry = self.handlers.registry
        for name, path in adapters.items():
            if registry.is_base_model(name):
                raise ValueError(f"{name!r} is a served base model name")
            registry.add(name, path)

    def clear_calls(self) -> None:
        """Empty the call log and counters."""
        self.call_log.clear()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Load `--lora-modules` (a bad one raises `ValueError`, as vLLM refuses to start) and listen."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self._host = host
        self._port = port
        for name, path in self.config.lora_modules:
            err = await self.handlers.load_adapter(name, path, load_inplace=False)
            if err is not None:
                raise ValueError(f"--lora-modules {name}={path}: {err.body()['error']['message']}")
        self._static = tuple(self.config.lora_modules)
        await self._listen()
        log.info("emulator listening", url=self.url, served_model=self.config.served_model_name)

    async def stop(self) -> None:
        """Stop listening and cancel background restarts. Safe to call twice."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._transition:
            await self._close()

    async def go_down(self) -> None:
        """Stop listening and drop open connections; adapters are kept until `come_up`."""
        async with self._transition:
            await self._close()

    async def come_up(self, forget_adapters: bool = True) -> None:
        """Listen again on the same port; by default with the adapters forgotten (a fresh vLLM)."""
        async with self._transition:
            if self._runner is not None:
                return
            if forget_adapters:  # a fresh vLLM process: no adapters, metrics from zero
                self.forget_adapters()
                self.handlers.metrics.reset()
            await self._listen()

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Go down for `down_seconds` (connections refused), then come up with adapters forgotten."""
        await self.go_down()
        if down_seconds > 0:
            await asyncio.sleep(down_seconds)
        await self.come_up(forget_adapters=True)

    def schedule_restart(self, down_seconds: float) -> None:
        """`restart()` in the background (the control API answers first)."""
        self._spawn(self.restart(down_seconds))

    def schedule_down(self, seconds: float | None, forget_adapters: bool) -> None:
        """`go_down()` in the background; with `seconds`, come back up after them."""

        async def outage() -> None:
            await self.go_down()
            if seconds is not None:
                await asyncio.sleep(seconds)
                await self.come_up(forget_adapters=forget_adapters)

        self._spawn(outage())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="emulator-lifecycle")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator lifecycle task failed", error=repr(task.exception()))

    def build_app(self) -> web.Application:
        """A fresh aiohttp application over this emulator's state."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        add_vllm_routes(app, self.handlers)
        add_control_routes(app, self.handlers, self)
        add_fallback_route(app, self.handlers)
        return app

    async def _listen(self) -> None:
        kwargs: dict[str, Any] = {} if self.config.access_log else {"access_log": None}
        # Going down cuts in-flight requests almost at once, as a killed server does; a client that
        # disconnects cancels its request (vLLM aborts it too) so no handler outlives its client.
        runner = web.AppRunner(
            self.build_app(),
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_GRACE,
            handler_cancellation=True,
            **kwargs,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port or 0, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            await self.handlers.cancel_operations()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
