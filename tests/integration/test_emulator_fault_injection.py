"""Fault injection over real HTTP: latency, injected 500s, dropped connections, slow loads, dead engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig, Faults
from tests.support.http import client_session
from tests.support.wait import eventually

LOAD = "/v1/load_lora_adapter"
CHAT_BODY = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(served_model_name="base", seed=1)) as e:
        yield e


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a dropped connection must not poison a pooled one for the next request
    async with client_session(force_close=True) as session:
        yield session


async def status_of(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> int:
    async with http.request(method, url, json=body) as resp:
        await resp.read()
        return resp.status


class TestLatency:
    async def test_latency_holds_the_answer(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """With latency on chat, a client that waits less times out while other endpoints still answer."""
        emu.faults.latency = {"chat": 60.0}
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                emu.url + "/v1/chat/completions", json=CHAT_BODY, timeout=aiohttp.ClientTimeout(total=0.3)
            ):
                pass
        assert await status_of(http, "GET", emu.url + "/v1/models") == 200
        emu.faults.latency = {}
        assert await status_of(http, "POST", emu.url + "/v1/chat/completions", CHAT_BODY) == 200


class TestInjectedFailures:
    async def test_500_mode(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Mode 500 answers vLLM's InternalServerError JSON and leaves the state untouched."""
        emu.faults.failure_rate = {"load": 1.0}
        async with http.post(emu.url + LOAD, json={"lora_name": "a", "lora_path": "org/a"}) as resp:
            assert resp.status == 500
            body = await resp.json()
        assert (body["error"]["type"], body["error"]["code"]) == ("InternalServerError", 500)
        assert emu.loaded() == {}
        assert [(c.op, c.name, c.status) for c in emu.calls] == [("load", "a", 500)]
        assert emu.call_log.counters()["injected_failures"] == {"load": 1}

    async def test_drop_mode(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Mode drop closes the connection without an answer and does not act."""
        emu.faults = Faults(failure_rate={"load": 1.0}, failure_mode="drop")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await status_of(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        assert emu.loaded() == {}
        assert [(c.op, c.name, c.status) for c in emu.calls] == [("load", "a", 0)]

    async def test_drop_after_mode(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Mode drop_after performs the load, then closes the connection (the answer is lost)."""
        emu.faults = Faults(fail_next={"load": 1}, failure_mode="drop_after")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await status_of(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        assert emu.loaded() == {"a": "org/a"}
        # the retry sees the adapter already there
        assert await status_of(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"}) == 400

    async def test_fail_next_is_exact(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """fail_next fails exactly that many requests of the endpoint."""
        emu.faults.fail_next = {"models": 2}
        statuses = [await status_of(http, "GET", emu.url + "/v1/models") for _ in range(3)]
        assert statuses == [500, 500, 200]

    async def test_star_covers_every_endpoint(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A `*` failure rate hits every vLLM endpoint but never the control API."""
        emu.faults.failure_rate = {"*": 1.0}
        assert await status_of(http, "GET", emu.url + "/health") == 500
        assert await status_of(http, "POST", emu.url + "/v1/chat/completions", CHAT_BODY) == 500
        assert await status_of(http, "GET", emu.url + "/_emulator/faults") == 200


class TestEngineAndLoads:
    async def test_engine_dead(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A dead engine makes /health answer 503 and inference 500."""
        emu.faults.engine_dead = True
        assert await status_of(http, "GET", emu.url + "/health") == 503
        async with http.post(emu.url + "/v1/chat/completions", json=CHAT_BODY) as resp:
            assert resp.status == 500
            assert (await resp.json())["error"]["message"].startswith("EngineCore encountered an issue")
        emu.faults.engine_dead = False
        assert await status_of(http, "GET", emu.url + "/health") == 200

    async def test_slow_loads_overlap_and_are_counted(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Slow loads stay in flight together and the log records how many ran at once."""
        emu.faults.load_delay = 0.2
        bodies = [{"lora_name": f"s{i}", "lora_path": f"org/s{i}"} for i in range(3)]
        statuses = await asyncio.gather(*(status_of(http, "POST", emu.url + LOAD, b) for b in bodies))
        assert statuses == [200, 200, 200]
        assert emu.call_log.max_admin_in_flight == 3

    async def test_slow_unloads(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """While an unload is slow the adapter is still listed; afterwards it is gone."""
        await status_of(http, "POST", emu.url + LOAD, {"lora_name": "u", "lora_path": "org/u"})
        emu.faults.unload_delay = 0.3
        task = asyncio.create_task(
            status_of(http, "POST", emu.url + "/v1/unload_lora_adapter", {"lora_name": "u"})
        )
        await eventually(lambda: emu.call_log.admin_in_flight > 0)
        assert "u" in emu.loaded()
        assert await task == 200
        assert emu.loaded() == {}

    async def test_token_delay_streams_progressively(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """With a token delay the first SSE event arrives while the rest are still being produced."""
        emu.faults.token_delay = 30.0
        body = {**CHAT_BODY, "max_tokens": 3, "stream": True}
        async with http.post(emu.url + "/v1/chat/completions", json=body) as resp:
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)
            assert first.startswith(b"data: ")


class TestClientGivesUp:
    async def test_load_completes_after_client_timeout(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """As in vLLM, a load whose client timed out still completes and is logged with its real status."""
        emu.faults.load_delay = 0.5
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                emu.url + LOAD,
                json={"lora_name": "late", "lora_path": "org/late"},
                timeout=aiohttp.ClientTimeout(total=0.05),
            ):
                pass
        await eventually(emu.loaded)
        assert emu.loaded() == {"late": "org/late"}
        assert [(c.name, c.status) for c in emu.calls] == [("late", 200)]
