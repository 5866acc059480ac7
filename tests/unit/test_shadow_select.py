"""Which requests a mirror copies (pure): exactly the percent asked, evenly spread, per alias and target."""

from __future__ import annotations

import pytest

from lora_syncer.proxy.shadow import MirrorCounter


@pytest.mark.parametrize(
    ("percent", "n", "taken"), [(50, 20, 10), (10, 100, 10), (100, 7, 7), (1, 99, 0), (33.5, 200, 67)]
)
def test_exactly_that_share(percent: float, n: int, taken: int) -> None:
    """Over n requests the counter takes floor(n * percent / 100): an exact share, no dice."""
    counter = MirrorCounter(percent)
    assert sum(counter.take() for _ in range(n)) == taken


def test_evenly_spread() -> None:
    """25% takes every 4th request, so any window of 4 holds exactly one copy."""
    counter = MirrorCounter(25)
    assert [counter.take() for _ in range(8)] == [False, False, False, True] * 2


@pytest.mark.parametrize("percent", [0, -5])
def test_zero_or_less_takes_nothing(percent: float) -> None:
    counter = MirrorCounter(percent)
    assert not any(counter.take() for _ in range(50))


def test_over_a_hundred_is_every_request() -> None:
    counter = MirrorCounter(250)
    assert all(counter.take() for _ in range(5))
