"""Fixtures of the integration tier: an emulated vLLM, a kubelet-style ConfigMap volume and the
sidecar in-process (see sync_harness.py). Every SyncEnv made here is checked at teardown for the
main invariant: no adapter declared in ensureExist at the time was ever unloaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest_asyncio
from sync_harness import HTTP_TIMEOUT, SyncEnv

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume


@pytest_asyncio.fixture
async def env_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[SyncEnv]]]:
    """`await env_factory(EmulatorConfig(...), start_emulator=True)` -> a SyncEnv, torn down after."""
    made: list[SyncEnv] = []

    async def make(config: EmulatorConfig | None = None, *, start_emulator: bool = True) -> SyncEnv:
        emulator = Emulator(config or EmulatorConfig())
        if start_emulator:
            await emulator.start()
        workdir = tmp_path / f"env{len(made)}"
        env = SyncEnv(
            emulator=emulator,
            volume=ConfigMapVolume(workdir / "config"),
            workdir=workdir,
            http=aiohttp.ClientSession(timeout=HTTP_TIMEOUT),
        )
        made.append(env)
        return env

    yield make
    for env in made:
        try:
            await env.stop()
        finally:
            await env.emulator.stop()
            await env.http.close()
    for env in made:
        env.assert_no_declared_unloaded()


@pytest_asyncio.fixture
async def sync_env(env_factory: Callable[..., Awaitable[SyncEnv]]) -> SyncEnv:
    """A running emulator (vLLM 0.32.0, base model Qwen/Qwen3-32B) and an empty ConfigMap volume."""
    return await env_factory()
