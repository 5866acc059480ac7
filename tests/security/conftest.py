"""Fixtures of the security tier: a recording upstream that answers everything (to see exactly
what the proxy lets through), and the helpers of the reliability tier (rel_harness) for the
in-process sidecar and the `lora-syncer run` child."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from security_rig import Recorder


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """An upstream on 127.0.0.1 that answers 200 to any request and records its method and raw path."""
    rec = Recorder()

    async def anything(request: web.Request) -> web.Response:
        rec.seen.append((request.method, request.raw_path))
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
