"""Helpers of the integration tier: an emulated vLLM on 127.0.0.1:0, a directory written the
way kubelet writes a ConfigMap volume, and the sidecar running in-process against both.

`SyncEnv` keeps a history of the adapters file as the syncer should see it (only files that
parse count: a bad file leaves the last good one in force), so every scenario can check the
project's main invariant against the emulator's call log: no adapter declared in
`ensureExist` at the time was ever unloaded. The `sync_env` fixture checks it again at
teardown, so no scenario forgets to.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.app import Sidecar
from lora_syncer.config.adapters import parse_adapters
from lora_syncer.config.errors import ConfigError
from lora_syncer.emulator import CallRecord, Emulator
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.settings import SyncerSettings
from tests.support.wait import eventually as support_eventually

T = TypeVar("T")

KEY = "configmap.yaml"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
# Bound of every "eventually" in this tier: generous for a loaded 2-core machine, never reached
# when things work (the conditions are met in milliseconds).
WAIT = 15.0

# Settings that keep scenarios fast: quick probes, short backoffs, short grace.
FAST_SETTINGS: dict[str, Any] = {
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "reconcile_trigger": 1.0,
    "health_check_timeout": 2.0,
    "health_check_interval": 0.05,
    "backoff_initial": 0.2,
    "backoff_max": 2.0,
    "call_timeout": 3.0,
    "load_timeout": 5.0,
    "shutdown_grace": 2.0,
}


def adapters_yaml(
    exist: Iterable[tuple[str, str] | tuple[str, str, str]] = (),
    not_exist: Iterable[tuple[str, str] | str] = (),
    *,
    name: str = "test-adapters",
    base: str | None = "Qwen/Qwen3-32B",
    host: str | None = None,
    port: int | None = None,
) -> str:
    """An adapters file in the upstream format: `exist` holds (id, source[, base-model])."""
    lines = ["vLLMLoRAConfig:", f"  name: {name}"]
    if host is not None:
        lines.append(f"  host: {host}")
    if port is not None:
        lines.append(f"  port: {port}")
    if base is not None:
        lines.append(f"  defaultBaseModel: {base}")
    exist = list(exist)
    not_exist = list(not_exist)
    if exist:
        lines += ["  ensureExist:", "    models:"]
        for item in exist:
            lines += [f"    - id: {item[0]}", f"      source: {item[1]}"]
            if len(item) > 2:
                lines.append(f"      base-model: {item[2]}")  # type: ignore[misc]
    if not_exist:
        lines += ["  ensureNotExist:", "    models:"]
        for item in not_exist:
            if isinstance(item, str):
                lines.append(f"    - id: {item}")
            else:
                lines += [f"    - id: {item[0]}", f"      source: {item[1]}"]
    return "\n".join(lines) + "\n"


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample named `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total


@dataclass(frozen=True)
class InForce:
    """The adapters file the syncer should have in force from emulator-clock time `t` on."""

    t: float
    exist: frozenset[str]
    not_exist: frozenset[str]


async def eventually(
    predicate: Callable[[], Awaitable[T | None] | T | None],
    what: str,
    within: float = WAIT,
    interval: float = 0.01,
) -> T:
    """tests.support.wait.eventually, with this harness's (predicate, what) call shape."""
    result: T = await support_eventually(
        predicate, timeout=within, interval=interval, message=f"waiting for: {what}"
    )
    return result


@dataclass
class SyncEnv:
    """One scenario's world: emulator, ConfigMap volume, sidecar, and an HTTP client for probes."""

    emulator: Emulator
    volume: ConfigMapVolume
    workdir: Path
    http: aiohttp.ClientSession
    sidecar: Sidecar | None = None
    history: list[InForce] = field(default_factory=list)
    # Unloads that are part of an unload+load reload (servers without load_inplace) are allowed.
    allow_reload_unloads: bool = False

    @property
    def config_path(self) -> Path:
        return self.volume.path(KEY)

    # --- the file ------------------------------------------------------------------------------

    def write(self, content: str | bytes) -> None:
        """Swap the file the kubelet way; a file that parses becomes the one in force."""
        t = self.emulator.call_log.now()
        raw = content.encode() if isinstance(content, str) else content
        try:
            cfg = parse_adapters(raw, KEY)
        except ConfigError:
            cfg = None
        self.volume.write({KEY: content})
        if cfg is not None:
            self.history.append(
                InForce(
                    t,
                    frozenset(a.id for a in cfg.ensure_exist),
                    frozenset(a.id for a in cfg.ensure_not_exist),
                )
            )

    def remove_file(self) -> None:
        """The ConfigMap lost its key: the file disappears (the last good file stays in force)."""
        self.volume.remove_key(KEY)

    # --- the sidecar ---------------------------------------------------------------------------

    def settings(self, **overrides: Any) -> SyncerSettings:
        values: dict[str, Any] = {"config": self.config_path, "server": self.emulator.url, **FAST_SETTINGS}
        values.update(overrides)
        return SyncerSettings(**values)

    async def start(self, **overrides: Any) -> Sidecar:
        """Start the sidecar in-process with fast test settings (overridable)."""
        assert self.sidecar is None, "one sidecar per scenario"
        sidecar = Sidecar(self.settings(**overrides))
        self.sidecar = sidecar
        await sidecar.start()
        return sidecar

    async def stop(self) -> None:
        if self.sidecar is not None:
            sidecar, self.sidecar = self.sidecar, None
            await sidecar.stop()

    @property
    def base(self) -> str:
        assert self.sidecar is not None and self.sidecar.health_port is not None
        return f"http://127.0.0.1:{self.sidecar.health_port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def status(self) -> dict[str, Any]:
        """The syncer section of `/status`."""
        code, body = await self.get("/status")
        assert code == 200
        section: dict[str, Any] = body["syncer"]
        return section

    async def adapter(self, adapter_id: str) -> dict[str, Any] | None:
        st = await self.status()
        entry: dict[str, Any] | None = st["adapters"].get(adapter_id)
        return entry

    async def metrics(self) -> str:
        code, body = await self.get("/metrics")
        assert code == 200
        assert isinstance(body, str)
        return body

    async def passes(self) -> float:
        """Reconcile passes so far, read from `lora_syncer_reconcile_passes_total`."""
        return metric_sum(await self.metrics(), "lora_syncer_reconcile_passes_total")

    # --- waiting -------------------------------------------------------------------------------

    async def wait_loaded(self, expected: dict[str, str] | Iterable[str], within: float = WAIT) -> None:
        """Until the emulator has exactly these adapters (and, for a dict, these roots)."""
        if isinstance(expected, dict):
            want: dict[str, str] = dict(expected)
            await eventually(lambda: self.emulator.loaded() == want, f"server adapters == {want}", within)
        else:
            names = set(expected)
            await eventually(
                lambda: set(self.emulator.loaded()) == names, f"server adapters == {names}", within
            )

    async def wait_state(self, adapter_id: str, state: str, within: float = WAIT) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            a = await self.adapter(adapter_id)
            return a if a is not None and a["state"] == state else None

        return await eventually(check, f"{adapter_id} in state {state}", within)

    # --- the call log --------------------------------------------------------------------------

    def calls(self, op: str | None = None, name: str | None = None) -> list[CallRecord]:
        return [
            c for c in self.emulator.calls if (op is None or c.op == op) and (name is None or c.name == name)
        ]

    def in_force_at(self, t: float) -> tuple[InForce | None, InForce | None]:
        """(the file in force at `t`, the one before it)."""
        current: InForce | None = None
        previous: InForce | None = None
        for entry in self.history:
            if entry.t <= t:
                previous, current = current, entry
        return current, previous

    def assert_no_declared_unloaded(self) -> None:
        """No adapter declared in ensureExist at the time of an unload call was unloaded.

        "At the time": in the file in force when the call arrived and in the one before it (a
        pass that started just before a swap may still act on the older file).
        """
        records = self.emulator.calls
        for i, rec in enumerate(records):
            if rec.op != "unload":
                continue
            current, previous = self.in_force_at(rec.t)
            if current is None or rec.name not in current.exist:
                continue
            if previous is not None and rec.name not in previous.exist:
                continue
            if self.allow_reload_unloads and any(
                later.op == "load" and later.name == rec.name for later in records[i + 1 :]
            ):
                continue  # unload + load: a reload on a server without load_inplace
            pytest.fail(f"{rec.name} was unloaded at t={rec.t} while declared in ensureExist: {rec}")

    def loads_of(self, names: Sequence[str]) -> dict[str, int]:
        return {n: len(self.calls("load", n)) for n in names}


def write_adapter_dir(root: Path, name: str, rank: int = 8) -> Path:
    """A local PEFT adapter folder (config only: the emulator checks the rank like vLLM does)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": 16,
                "target_modules": ["q_proj", "v_proj"],
                "base_model_name_or_path": "Qwen/Qwen3-32B",
            }
        )
    )
    return d
