"""The emulated vLLM on 127.0.0.1 with an ephemeral port: in-process, or as a `lora-syncer emulator` child."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp

from lora_syncer.emulator import Emulator, EmulatorConfig
from tests.support.http import wait_until_answers
from tests.support.net import free_port
from tests.support.processes import Child, clean_env


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None, preload: Mapping[str, str] | None = None
) -> AsyncIterator[Emulator]:
    """An emulator in this event loop, listening on 127.0.0.1 on a port of its own choosing."""
    emulator = Emulator(config or EmulatorConfig())
    if preload:
        emulator.preload(preload)
    await emulator.start("127.0.0.1", 0)
    try:
        yield emulator
    finally:
        await emulator.stop()


@contextlib.asynccontextmanager
async def emulator_process(
    workdir: Path, *flags: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Child]:
    """`python -m lora_syncer emulator FLAGS` on 127.0.0.1, healthy when yielded, stopped after.

    Its log goes to `workdir/emulator.log`; `env` adds variables to a clean environment.
    """
    port = free_port()
    args = ["emulator", "--host", "127.0.0.1", "--port", str(port), "--log-format", "json", *flags]
    child = await Child.spawn(args, workdir / "emulator.log", port, env=clean_env(**dict(env or {})))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await wait_until_answers(http, child.url + "/health", proc=child.proc)
        yield child
    finally:
        await child.stop()
