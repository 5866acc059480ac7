"""Fixtures of the security tier: a recording upstream that answers everything (to see exactly
what the proxy lets through). The in-process sidecar and the `lora-syncer run` child come from
tests/support (the reliability tier's world and processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.recorder import Recorder, recording_upstream


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """An upstream on 127.0.0.1 that answers 200 to any request and records its method and raw path."""
    async with recording_upstream() as rec:
        yield rec
