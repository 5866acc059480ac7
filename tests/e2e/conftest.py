"""Fixtures of the end-to-end tier: everything here talks to a real vLLM.

The session server itself is the root fixture ``real_vllm`` (tests/conftest.py), shared with the
contract suite. Every test collected under tests/e2e is marked ``real_vllm`` so
``-m "not real_vllm"`` deselects the whole tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.realvllm.launcher import RealVLLM

_HERE = Path(__file__).parent
_TIMEOUT = aiohttp.ClientTimeout(total=30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this directory as needing the real vLLM."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.real_vllm)


async def loaded_adapters(session: aiohttp.ClientSession, server: RealVLLM) -> list[str]:
    """Names of the LoRA adapters the server lists (everything but the base model)."""
    async with session.get(f"{server.url}/v1/models") as resp:
        resp.raise_for_status()
        body = await resp.json()
    return [m["id"] for m in body["data"] if m.get("parent") is not None]


@pytest_asyncio.fixture
async def vllm(real_vllm: RealVLLM) -> AsyncIterator[RealVLLM]:
    """The session's real vLLM, running, and with no adapter left loaded after the test."""
    if not real_vllm.running:
        # A previous test left it down (e.g. failed mid-restart): bring it back for this one.
        await real_vllm.start()
    yield real_vllm
    if not real_vllm.running:
        await real_vllm.start()
        return
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        for name in await loaded_adapters(session, real_vllm):
            async with session.post(
                f"{real_vllm.url}/v1/unload_lora_adapter", json={"lora_name": name}
            ) as resp:
                await resp.read()
