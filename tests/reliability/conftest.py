"""Fixtures of the reliability tier: scenarios that mix faults, bad input and load (rel_harness.py
holds them, shared with bench/reliability_report.py) and the proxy world they run against."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session with a bounded total timeout (a hung request fails instead of hanging)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
