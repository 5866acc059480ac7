"""An emulator, a ConfigMap volume and the sidecar in-process against both."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import lora_syncer.reloading
from lora_syncer.app import Sidecar
from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.source import ReloadOutcome, WatchedFile
from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.settings import SyncerSettings
from tests.support.reliability.audit import GoodFile, Ledger
from tests.support.reliability.files import KEY

FAST_SETTINGS: dict[str, Any] = {
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "reconcile_trigger": 0.5,
    "health_check_timeout": 2.0,
    "health_check_interval": 0.05,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "call_timeout": 2.0,
    "load_timeout": 3.0,
    "shutdown_grace": 2.0,
}


def _noting_source(ledger: Ledger, adapters: Path) -> type[WatchedFile[Any]]:
    """A WatchedFile that tells `ledger` the adapters configuration in force after each reload
    (the rules file, read by the same class, is left out)."""

    class NotingWatchedFile(WatchedFile[Any]):
        async def reload(self) -> ReloadOutcome:
            outcome = await super().reload()
            if self.path == adapters:
                current = self.current.value if self.current is not None else None
                assert current is None or isinstance(current, AdaptersConfig)
                ledger.read(current)
            return outcome

    return NotingWatchedFile


@dataclass
class World:
    """An emulator, a ConfigMap volume and the sidecar in-process against both."""

    emulator: Emulator
    volume: ConfigMapVolume
    ledger: Ledger
    sidecar: Sidecar | None = None
    rules_volume: ConfigMapVolume | None = None

    def write(self, raw: str | bytes, kind: str = "good") -> GoodFile | None:
        data = raw.encode() if isinstance(raw, str) else raw
        entry = self.ledger.note(data, kind)
        self.volume.write({KEY: data})
        return entry

    def delete(self) -> None:
        self.ledger.note(None, "deleted")
        self.volume.remove_key(KEY)

    async def start_sidecar(self, proxy_options: ProxyOptions | None = None, **overrides: Any) -> Sidecar:
        """Start the sidecar (FAST_SETTINGS, then `overrides`); its readings of the file go to the ledger."""
        values: dict[str, Any] = {
            "config": self.volume.path(KEY),
            "server": self.emulator.url,
            **FAST_SETTINGS,
            **overrides,
        }
        self.sidecar = Sidecar(SyncerSettings(**values), proxy_options)
        # The sidecar makes its reloading files in start(): give them a source that reports readings.
        noting = _noting_source(self.ledger, self.volume.path(KEY))
        with mock.patch.object(lora_syncer.reloading, "WatchedFile", noting):
            await self.sidecar.start()
        return self.sidecar


@contextlib.asynccontextmanager
async def world(workdir: Path, config: EmulatorConfig | None = None) -> AsyncIterator[World]:
    """A World with its emulator running; the sidecar (if started) and the emulator stop after."""
    emulator = Emulator(config or EmulatorConfig(seed=7))
    await emulator.start()
    w = World(emulator, ConfigMapVolume(workdir / "config"), Ledger(emulator.call_log.now))
    try:
        yield w
    finally:
        try:
            if w.sidecar is not None:
                await w.sidecar.stop()
        finally:
            await emulator.stop()


def proxy_options(upstream: str, rules_path: Path, **overrides: Any) -> ProxyOptions:
    """Proxy options for 127.0.0.1:0 with quick polling and short client timeouts."""
    values: dict[str, Any] = {
        "upstream": upstream,
        "rules_path": rules_path,
        "host": "127.0.0.1",
        "port": 0,
        "poll_interval": 0.05,
        "upstream_timeout": 5.0,
        "upstream_connect_timeout": 1.0,
        "client_body_timeout": 2.0,
        "client_idle_timeout": 5.0,
    }
    values.update(overrides)
    return ProxyOptions(**values)


def gauge(sidecar: Sidecar, name: str) -> float | None:
    value = sidecar.registry.get_sample_value(name)
    return None if value is None else float(value)
