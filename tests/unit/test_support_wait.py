"""tests.support.wait: `eventually` returns the first truthy value or fails with a message after its bound."""

from __future__ import annotations

import itertools

import pytest

from tests.support.wait import eventually, eventually_sync, seconds_until


async def test_eventually_returns_the_first_truthy_value() -> None:
    """A condition that holds on its third check gives that value back."""
    counter = itertools.count()
    assert await eventually(lambda: next(counter) >= 2 and "ready", interval=0) == "ready"


async def test_eventually_awaits_coroutine_conditions() -> None:
    """An async condition is awaited on each check."""
    checks: list[int] = []

    async def condition() -> bool:
        checks.append(1)
        return len(checks) == 3

    assert await eventually(condition, interval=0) is True
    assert len(checks) == 3


async def test_eventually_fails_with_the_message() -> None:
    """A condition that never holds fails after the bound, with the message (a callable is evaluated only then)."""
    with pytest.raises(AssertionError, match="still 0 of 3"):
        await eventually(lambda: False, timeout=0.05, interval=0.01, message=lambda: "still 0 of 3")


async def test_seconds_until_reports_none_instead_of_failing() -> None:
    """seconds_until is a figure: a number when the condition holds, None when it never did."""
    assert await seconds_until(lambda: True) is not None
    assert await seconds_until(lambda: False, timeout=0.05, interval=0.01) is None


def test_blocking_flavour() -> None:
    """eventually_sync behaves the same without an event loop."""
    counter = itertools.count()
    assert eventually_sync(lambda: next(counter) == 2, interval=0) is True
    with pytest.raises(AssertionError, match="never"):
        eventually_sync(lambda: False, timeout=0.05, interval=0.01, message="never")
