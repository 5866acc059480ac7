"""The sidecar as a real process (`lora-syncer run`) against a real vLLM, files written the kubelet way."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.realvllm.launcher import RealVLLM
from tests.support.net import free_port
from tests.support.processes import popen_run, stop_popen
from tests.support.wait import eventually as support_eventually

_TIMEOUT = aiohttp.ClientTimeout(total=60)


def adapters_file(exist: list[tuple[str, str]], not_exist: tuple[str, ...] | list[str] = ()) -> str:
    lines = [
        "vLLMLoRAConfig:",
        "  name: e2e-adapters",
        "  defaultBaseModel: base",
        "  ensureExist:",
        "    models:",
    ]
    for name, source in exist:
        lines += [f"    - id: {name}", f"      source: {source}"]
    if not_exist:
        lines += ["  ensureNotExist:", "    models:"]
        lines += [f"    - id: {name}" for name in not_exist]
    return "\n".join(lines) + "\n"


@dataclass
class Syncer:
    proc: subprocess.Popen[bytes]
    health_url: str
    volume: ConfigMapVolume
    log_path: Path

    def write(self, text: str) -> None:
        self.volume.write({"configmap.yaml": text})

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


# Real vLLM loads and restarts take seconds on a loaded machine: a longer bound than the default.
E2E_WAIT = 60.0


def eventually(check: Callable[[], Any], *, timeout: float = E2E_WAIT) -> Awaitable[Any]:
    """tests.support's `eventually` with the e2e tier's bound and a 0.1 s interval."""
    return support_eventually(check, timeout=timeout, interval=0.1)


async def listed(session: aiohttp.ClientSession, server: RealVLLM) -> dict[str, str]:
    async with session.get(f"{server.url}/v1/models") as resp:
        body = await resp.json()
    return {m["id"]: m["root"] for m in body["data"] if m.get("parent") is not None}


def spawn_syncer(config: Path, server: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`lora-syncer run` as its own process, logging JSON lines to `log_path`."""
    flags = ("--reconcile-trigger", "1", "--backoff-initial", "0.5", "--backoff-max", "2")
    return popen_run(config, server, port, log_path, *flags)


@pytest_asyncio.fixture
async def syncer(vllm: RealVLLM, tmp_path: Path) -> AsyncIterator[Syncer]:
    volume = ConfigMapVolume(tmp_path / "config")
    volume.write({"configmap.yaml": adapters_file([])})
    port = free_port()
    log_path = tmp_path / "syncer.log"
    proc = spawn_syncer(volume.path("configmap.yaml"), vllm.url, port, log_path)
    s = Syncer(proc, f"http://127.0.0.1:{port}", volume, log_path)
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:

        async def up() -> bool:
            try:
                async with session.get(f"{s.health_url}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout=30)
    try:
        yield s
    finally:
        code = await stop_popen(proc)
        assert code == 0, log_path.read_text()[-3000:]


async def status(session: aiohttp.ClientSession, s: Syncer) -> dict[str, Any]:
    async with session.get(f"{s.health_url}/status") as resp:
        body: dict[str, Any] = await resp.json()
    return body


class TestRealVLLM:
    async def test_seed_002_sequence(self, vllm: RealVLLM, syncer: Syncer) -> None:
        """Both adapters of the 002 guide load; moving -v1 to ensureNotExist unloads it and keeps -v2."""
        a, b = (str(p) for p in vllm.adapter_dirs[:2])
        syncer.write(adapters_file([("small-segment-lora-v1", a), ("small-segment-lora-v2", b)]))
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            await eventually(
                lambda: _has(session, vllm, {"small-segment-lora-v1": a, "small-segment-lora-v2": b})
            )
            async with session.get(f"{syncer.health_url}/readyz") as r:
                assert r.status == 200
            syncer.write(adapters_file([("small-segment-lora-v2", b)], ["small-segment-lora-v1"]))
            await eventually(lambda: _has(session, vllm, {"small-segment-lora-v2": b}))
            st = await status(session, syncer)
            assert st["syncer"]["adapters"]["small-segment-lora-v1"]["state"] == "absent"
            assert st["syncer"]["adapters"]["small-segment-lora-v2"]["state"] == "loaded"
        unloads = [
            e for e in syncer.log_events() if e.get("op") == "unload" and e.get("event") == "unload done"
        ]
        assert [e["adapter"] for e in unloads] == ["small-segment-lora-v1"]

    async def test_source_change_reloads_and_serves(self, vllm: RealVLLM, syncer: Syncer) -> None:
        """A new source reloads the adapter in place; inference still answers under its name."""
        v1, v2 = (str(p) for p in vllm.adapter_dirs[:2])
        syncer.write(adapters_file([("canary", v1)]))
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            await eventually(lambda: _has(session, vllm, {"canary": v1}))
            syncer.write(adapters_file([("canary", v2)]))
            await eventually(lambda: _has(session, vllm, {"canary": v2}))
            async with session.post(
                f"{vllm.url}/v1/chat/completions",
                json={"model": "canary", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["model"] == "canary"
        reloads = [e for e in syncer.log_events() if e.get("event") == "reload done"]
        assert len(reloads) == 1
        assert reloads[0]["adapter"] == "canary"

    async def test_vllm_restart_reloads_everything(self, vllm: RealVLLM, syncer: Syncer) -> None:
        """After vLLM is killed and restarted, every declared adapter is listed again, file untouched."""
        a, b = (str(p) for p in vllm.adapter_dirs[:2])
        want = {"r-a": a, "r-b": b}
        syncer.write(adapters_file(list(want.items())))
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            await eventually(lambda: _has(session, vllm, want))
            await vllm.restart()
            await eventually(lambda: _has(session, vllm, want), timeout=60)
            st = await status(session, syncer)
            assert st["syncer"]["server"]["reachable"] is True

    async def test_bad_adapters_beside_good_ones(
        self, vllm: RealVLLM, syncer: Syncer, tmp_path: Path
    ) -> None:
        """A missing path and a too-high rank fail with vLLM's reason; the good adapter still loads."""
        good = str(vllm.adapter_dirs[0])
        syncer.write(
            adapters_file(
                [
                    ("good", good),
                    ("missing", str(tmp_path / "nowhere")),
                    ("too-big", str(vllm.bad_rank_adapter_dir)),
                ]
            )
        )
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            await eventually(lambda: _has(session, vllm, {"good": good}))

            async def both_failed() -> dict[str, Any] | None:
                adapters = (await status(session, syncer))["syncer"]["adapters"]
                if adapters["missing"]["state"] == "failed" and adapters["too-big"]["state"] == "failed":
                    return adapters
                return None

            adapters = await eventually(both_failed)
            assert "No adapter found" in adapters["missing"]["lastError"]
            assert "max_lora_rank" in adapters["too-big"]["lastError"]
            assert adapters["good"]["state"] == "loaded"
            async with session.get(f"{syncer.health_url}/readyz") as r:
                assert r.status == 200  # failed adapters do not hold readiness back


async def _has(session: aiohttp.ClientSession, server: RealVLLM, want: dict[str, str]) -> bool:
    return await listed(session, server) == want


pytestmark = pytest.mark.real_vllm
