"""Waiting for a condition, bounded in time but never judged by the clock.

Tests wait for what they need with a generous bound (`WAIT`) that is never reached when things
work; they never assert how long something took.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

# ruff's ASYNC109 prefers `asyncio.timeout` around the call; here the bound is part of the
# condition being polled (the loop checks once more at the bound), hence the `timeout` parameters.

# The default bound of every wait: generous enough for a loaded 2-core machine.
WAIT = 30.0
INTERVAL = 0.02


async def _value(condition: Callable[[], Any]) -> Any:
    result = condition()
    if inspect.isawaitable(result):
        result = await result
    return result


async def seconds_until(
    condition: Callable[[], Any],
    timeout: float = WAIT,  # noqa: ASYNC109
    interval: float = INTERVAL,
) -> float | None:
    """Seconds until `condition()` (awaited if it returns an awaitable) is truthy; None after `timeout`.

    For figures (bench/reliability_report.py) and scenarios that report instead of asserting.
    """
    start = time.monotonic()
    while True:
        if await _value(condition):
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return None
        await asyncio.sleep(interval)


async def eventually(
    condition: Callable[[], Any],
    timeout: float = WAIT,  # noqa: ASYNC109
    interval: float = INTERVAL,
    message: str | Callable[[], object] = "",
) -> Any:
    """The first truthy value of `condition()` (awaited if needed); AssertionError after `timeout`.

    `message` (or its result, when callable: evaluated only on failure) explains the failure.
    """
    start = time.monotonic()
    while True:
        value = await _value(condition)
        if value:
            return value
        if time.monotonic() - start >= timeout:
            detail = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout} s: {detail or condition}")
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], Any],
    timeout: float = WAIT,
    interval: float = INTERVAL,
    message: str | Callable[[], object] = "",
) -> Any:
    """`eventually` for code with no event loop (blocking sleeps between checks)."""
    start = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() - start >= timeout:
            detail = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout} s: {detail or condition}")
        time.sleep(interval)
