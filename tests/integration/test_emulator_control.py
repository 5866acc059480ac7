"""The emulator's control API: faults read/set/reset, the admin-call log and counters, adapter views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig, Faults

LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(served_model_name="base", faults=Faults(latency={"health": 0.001}))
    async with Emulator(config) as e:
        yield e


async def request(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


class TestFaultsApi:
    async def test_read_set_reset(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """GET shows the faults, POST merges a partial update, DELETE restores the start-up faults."""
        status, faults = await request(http, "GET", emu.url + "/_emulator/faults")
        assert status == 200
        assert faults["latency"] == {"health": 0.001}
        assert faults["failure_mode"] == "500"
        update = {"failure_rate": {"/v1/chat/completions": 0.5}, "failure_mode": "drop", "load_delay": 0.2}
        status, faults = await request(http, "POST", emu.url + "/_emulator/faults", update)
        assert status == 200
        assert (faults["failure_rate"], faults["failure_mode"], faults["load_delay"]) == (
            {"chat": 0.5},
            "drop",
            0.2,
        )
        assert faults["latency"] == {"health": 0.001}
        assert emu.faults.failure_rate == {"chat": 0.5}
        status, faults = await request(http, "DELETE", emu.url + "/_emulator/faults")
        assert status == 200
        assert faults == Faults(latency={"health": 0.001}).to_dict()

    @pytest.mark.parametrize(
        "body", [{"failure_rate": {"chat": 3}}, {"bogus": 1}, {"latency": {"nowhere": 1}}, [1, 2]]
    )
    async def test_bad_update(self, emu: Emulator, http: aiohttp.ClientSession, body: Any) -> None:
        """An invalid update is 400 with a reason, and changes nothing."""
        before = emu.faults.to_dict()
        status, answer = await request(http, "POST", emu.url + "/_emulator/faults", body)
        assert status == 400
        assert isinstance(answer["error"], str)
        assert emu.faults.to_dict() == before

    async def test_disable_runtime_updating_via_api(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Turning runtime_lora_updating off through the API makes the load route 404."""
        await request(http, "POST", emu.url + "/_emulator/faults", {"runtime_lora_updating": False})
        status, body = await request(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        assert (status, body) == (404, {"detail": "Not Found"})


class TestCallLog:
    async def test_calls_in_order_with_counters(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Every admin call is logged in order with its status; counters sum them up; DELETE clears."""
        await request(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        await request(
            http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a2", "load_inplace": True}
        )
        await request(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        await request(http, "POST", emu.url + UNLOAD, {"lora_name": "a"})
        await request(http, "POST", emu.url + UNLOAD, {"lora_name": "a"})
        await request(http, "GET", emu.url + "/v1/models")
        status, log = await request(http, "GET", emu.url + "/_emulator/calls")
        assert status == 200
        rows = [(c["op"], c["name"], c["path"], c["status"], c["load_inplace"]) for c in log["calls"]]
        assert rows == [
            ("load", "a", "org/a", 200, False),
            ("load", "a", "org/a2", 200, True),
            ("load", "a", "org/a", 400, False),
            ("unload", "a", None, 200, False),
            ("unload", "a", None, 404, False),
        ]
        times = [c["t"] for c in log["calls"]]
        assert times == sorted(times)
        counters = log["counters"]
        assert (counters["loads"], counters["unloads"]) == (3, 2)
        assert counters["requests"] == {"load": 3, "unload": 2, "models": 1}
        assert counters["max_admin_in_flight"] == 1
        status, cleared = await request(http, "DELETE", emu.url + "/_emulator/calls")
        assert (status, cleared["calls"], cleared["counters"]["loads"]) == (200, [], 0)
        assert emu.calls == []

    async def test_sagemaker_and_disabled_calls_are_logged(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Calls through /adapters and calls refused while updating is disabled are logged too."""
        async with http.post(emu.url + "/adapters", json={"name": "s", "src": "org/s"}) as resp:
            assert resp.status == 200
        async with http.delete(emu.url + "/adapters/s") as resp:
            assert resp.status == 200
        emu.faults.runtime_lora_updating = False
        async with http.post(emu.url + UNLOAD, json={"lora_name": "s"}) as resp:
            assert resp.status == 404
        assert [(c.op, c.name, c.status, c.route) for c in emu.calls] == [
            ("load", "s", 200, "/adapters"),
            ("unload", "s", 200, "/adapters/s"),
            ("unload", "", 404, UNLOAD),
        ]


class TestAdapterViews:
    async def test_list_and_forget(self, http: aiohttp.ClientSession) -> None:
        """GET /_emulator/adapters lists name -> root; DELETE forgets all but --lora-modules."""
        async with Emulator(EmulatorConfig(lora_modules=(("s", "org/s"),))) as emu:
            await request(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
            assert await request(http, "GET", emu.url + "/_emulator/adapters") == (
                200,
                {"s": "org/s", "a": "org/a"},
            )
            assert await request(http, "DELETE", emu.url + "/_emulator/adapters") == (200, {"s": "org/s"})
            assert emu.loaded() == {"s": "org/s"}
