"""Emulator outages: restart forgets adapters (keeping --lora-modules), connections are refused while down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig
from tests.support.http import client_session, status_of
from tests.support.wait import eventually

LOAD = "/v1/load_lora_adapter"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(
        EmulatorConfig(served_model_name="base", lora_modules=(("static", "org/static"),))
    ) as e:
        yield e


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No pooled connections: each request shows what a new client would see.
    async with client_session(force_close=True) as session:
        yield session


async def model_ids(http: aiohttp.ClientSession, url: str) -> list[str]:
    async with http.get(url + "/v1/models") as resp:
        return [m["id"] for m in (await resp.json())["data"]]


async def load(http: aiohttp.ClientSession, url: str, name: str) -> int:
    async with http.post(url + LOAD, json={"lora_name": name, "lora_path": f"org/{name}"}) as resp:
        return resp.status


async def wait_until(url: str, http: aiohttp.ClientSession, up: bool) -> None:
    """Wait until /health answers (up=True) or nothing answers (up=False)."""

    async def reached() -> bool:
        return (await status_of(http, url + "/health") is not None) == up

    await eventually(reached, message=f"emulator did not become {'reachable' if up else 'unreachable'}")


class TestInProcess:
    async def test_lora_modules_are_listed_at_start(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """--lora-modules adapters are registered before the first request."""
        assert await model_ids(http, emu.url) == ["base", "static"]

    async def test_down_refuses_connections(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """While down, new connections are refused; after come_up the same port answers again."""
        port = emu.port
        await emu.go_down()
        assert not emu.is_up
        with pytest.raises(aiohttp.ClientConnectorError):
            await model_ids(http, emu.url)
        await emu.come_up()
        assert emu.port == port
        assert await model_ids(http, emu.url) == ["base", "static"]

    async def test_restart_forgets_runtime_adapters(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """After a restart only the base model and --lora-modules remain, on the same URL."""
        url = emu.url
        assert await load(http, url, "dyn") == 200
        assert await model_ids(http, url) == ["base", "static", "dyn"]
        await emu.restart(down_seconds=0.05)
        assert emu.url == url
        assert await model_ids(http, url) == ["base", "static"]
        assert await load(http, url, "dyn") == 200

    async def test_come_up_can_keep_adapters(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """An outage without a restart (come_up(forget_adapters=False)) keeps the adapters."""
        await load(http, emu.url, "dyn")
        await emu.go_down()
        await emu.come_up(forget_adapters=False)
        assert await model_ids(http, emu.url) == ["base", "static", "dyn"]

    async def test_going_down_cuts_open_requests(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A request in flight when the server goes down fails on the client side."""
        emu.faults.latency = {"models": 60.0}
        request = asyncio.create_task(model_ids(http, emu.url))
        await eventually(lambda: emu.call_log.requests["models"] > 0)
        await emu.go_down()
        with pytest.raises(aiohttp.ClientError):
            await request

    async def test_going_down_cuts_a_slow_load(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A load in flight when the server goes down is not registered and is logged with status 0."""
        emu.faults.load_delay = 60.0
        request = asyncio.create_task(load(http, emu.url, "cut"))
        await eventually(lambda: emu.call_log.admin_in_flight > 0)
        await emu.go_down()
        with pytest.raises(aiohttp.ClientError):
            await request
        assert "cut" not in emu.loaded()
        assert [(c.name, c.status) for c in emu.calls] == [("cut", 0)]

    async def test_stop_twice_and_start_errors(self) -> None:
        """stop() is idempotent; start() twice is an error."""
        emu = Emulator()
        await emu.start()
        with pytest.raises(RuntimeError, match="already running"):
            await emu.start()
        await emu.stop()
        await emu.stop()
        assert not emu.is_up

    async def test_bad_lora_module_refuses_to_start(self, tmp_path: object) -> None:
        """A --lora-modules entry that cannot load stops start-up with vLLM's reason."""
        emu = Emulator(EmulatorConfig(lora_modules=(("bad", "/definitely/missing/adapter"),)))
        with pytest.raises(ValueError, match="No adapter found"):
            await emu.start()
        assert not emu.is_up

    async def test_url_before_start(self) -> None:
        """Asking for the URL of an emulator that never started is an error."""
        with pytest.raises(RuntimeError, match="not been started"):
            _ = Emulator().url


class TestControlApiOutages:
    async def test_restart_via_control_api(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """POST /_emulator/restart answers 202, goes away, comes back with adapters forgotten."""
        await load(http, emu.url, "dyn")
        async with http.post(emu.url + "/_emulator/restart", json={"down_seconds": 0.3}) as resp:
            assert resp.status == 202
            assert await resp.json() == {"restarting": True, "down_seconds": 0.3}
        await wait_until(emu.url, http, up=False)
        await wait_until(emu.url, http, up=True)
        assert await model_ids(http, emu.url) == ["base", "static"]

    async def test_down_for_a_while_keeps_adapters(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """POST /_emulator/down with seconds is an outage that ends by itself, adapters kept by default."""
        await load(http, emu.url, "dyn")
        async with http.post(emu.url + "/_emulator/down", json={"seconds": 0.3}) as resp:
            assert resp.status == 202
        await wait_until(emu.url, http, up=False)
        await wait_until(emu.url, http, up=True)
        assert await model_ids(http, emu.url) == ["base", "static", "dyn"]

    async def test_down_until_told(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """POST /_emulator/down without seconds stays down until the in-process API brings it back."""
        async with http.post(emu.url + "/_emulator/down", json={}) as resp:
            assert resp.status == 202
        await wait_until(emu.url, http, up=False)
        await emu.come_up(forget_adapters=True)
        assert await model_ids(http, emu.url) == ["base", "static"]

    async def test_bad_outage_requests(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Negative durations and non-object bodies are refused with 400 and nothing happens."""
        for path, body in (("/_emulator/restart", {"down_seconds": -1}), ("/_emulator/down", [1])):
            async with http.post(emu.url + path, json=body) as resp:
                assert resp.status == 400
        assert emu.is_up


class TestPreload:
    async def test_preload_registers_without_calls(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """preload() lists adapters in the given order without touching the call log; base names are refused."""
        emu.preload({f"p{i}": f"org/p{i}" for i in range(3)})
        assert await model_ids(http, emu.url) == ["base", "static", "p0", "p1", "p2"]
        assert emu.calls == []
        with pytest.raises(ValueError, match="base model"):
            emu.preload({"base": "org/x"})
