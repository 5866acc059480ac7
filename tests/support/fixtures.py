"""The pytest fixtures of tests/support, registered for every tier by tests/conftest.py.

- ``free_port``: a function returning a port on 127.0.0.1 that was free when asked;
- ``http``: an aiohttp client session, every request bounded (a hung request fails the test);
- ``emulator``: a running in-process emulator (default configuration);
- ``emulator_factory``: ``await emulator_factory(EmulatorConfig(...), preload={...})``, started;
- ``emulator_process_factory``: ``await emulator_process_factory(*flags)``, a healthy
  ``lora-syncer emulator`` child process;
- ``volume_factory``: ``volume_factory(name, files)``, a kubelet-style ConfigMap volume under tmp_path;
- ``moto_endpoint``: the URL of a moto S3 server, one per test module (tests.support.sources_servers).

Everything started here is stopped at teardown.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.emulator import emulator_process, running_emulator
from tests.support.http import client_session
from tests.support.kubelet import configmap_volume
from tests.support.net import free_port as _free_port
from tests.support.processes import Child
from tests.support.sources_servers import moto_server

EmulatorFactory = Callable[..., Awaitable[Emulator]]
EmulatorProcessFactory = Callable[..., Awaitable[Child]]
VolumeFactory = Callable[..., ConfigMapVolume]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port on 127.0.0.1 that was free when asked."""
    return _free_port


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose requests are bounded to 15 s."""
    async with client_session() as session:
        yield session


@pytest_asyncio.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """`await emulator_factory(config=None, preload=None)`: an in-process emulator on 127.0.0.1, started."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            config: EmulatorConfig | None = None, preload: Mapping[str, str] | None = None
        ) -> Emulator:
            return await stack.enter_async_context(running_emulator(config, preload))

        yield make


@pytest_asyncio.fixture
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """A running in-process emulator with the default configuration (vLLM 0.32.0, Qwen/Qwen3-32B)."""
    return await emulator_factory()


@pytest_asyncio.fixture
async def emulator_process_factory(tmp_path: Path) -> AsyncIterator[EmulatorProcessFactory]:
    """`await emulator_process_factory(*flags, env=None)`: a healthy `lora-syncer emulator` child."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(*flags: str, env: Mapping[str, str] | None = None) -> Child:
            nonlocal count
            count += 1
            workdir = tmp_path / f"emulator-process-{count}"
            workdir.mkdir()
            return await stack.enter_async_context(emulator_process(workdir, *flags, env=env))

        yield make


@pytest.fixture
def volume_factory(tmp_path: Path) -> VolumeFactory:
    """`volume_factory(name, files=None)`: a kubelet-style ConfigMap volume in tmp_path/name."""

    def make(name: str, files: Mapping[str, str | bytes] | None = None) -> ConfigMapVolume:
        return configmap_volume(tmp_path / name, files)

    return make


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url
