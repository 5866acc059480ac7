"""tests.support's servers: the emulator in-process and as a process, kubelet volumes, a background loop."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import aiohttp

from lora_syncer.emulator import Emulator, EmulatorConfig
from tests.support.fixtures import EmulatorFactory, EmulatorProcessFactory, VolumeFactory
from tests.support.http import status_of
from tests.support.processes import Child
from tests.support.threaded import background_loop


async def test_emulator_fixture_serves_on_loopback(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """The `emulator` fixture is listening on 127.0.0.1 on a port it chose, with the default base model."""
    assert emulator.url.startswith("http://127.0.0.1:") and emulator.port > 0
    async with http.get(emulator.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["Qwen/Qwen3-32B"]


async def test_emulator_factory_takes_a_config_and_preloads(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """`emulator_factory(config, preload)` starts one with that base model and those adapters loaded."""
    emu = await emulator_factory(EmulatorConfig(served_model_name="base"), preload={"a1": "org/a1"})
    async with http.get(emu.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["base", "a1"]


async def test_emulator_process_is_healthy_and_stops_cleanly(
    emulator_process_factory: EmulatorProcessFactory, http: aiohttp.ClientSession
) -> None:
    """The child `lora-syncer emulator` answers /health when handed over, with the flags it was given."""
    child: Child = await emulator_process_factory("--served-model-name", "base")
    assert await status_of(http, child.url + "/health") == 200
    async with http.get(child.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["base"]
    assert await child.stop() == 0
    assert await status_of(http, child.url + "/health") is None


def test_volume_factory_writes_like_kubelet(volume_factory: VolumeFactory) -> None:
    """The volume's key is a symlink through ..data to a timestamped directory, as kubelet lays it out."""
    volume = volume_factory("cm", {"configmap.yaml": "vLLMLoRAConfig: {}\n"})
    key = volume.path("configmap.yaml")
    assert key.is_symlink() and os.readlink(key) == "..data/configmap.yaml"
    assert Path(volume.directory, "..data").is_symlink()
    assert key.read_text() == "vLLMLoRAConfig: {}\n"


def test_background_loop_serves_blocking_clients() -> None:
    """A server started on a background loop answers a blocking client and is stopped on exit."""
    stopped: list[bool] = []

    async def start() -> Emulator:
        emu = Emulator(EmulatorConfig(served_model_name="base"))
        await emu.start()
        return emu

    async def stop(emu: Emulator) -> None:
        await emu.stop()
        stopped.append(True)

    with background_loop(start, stop) as emu:
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
        try:
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    assert stopped == [True]
