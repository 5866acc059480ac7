"""Choosing a target among weighted ones (pure, no I/O, no clock, no randomness).

Two ways to pick:

- **Smooth weighted round-robin** (the nginx algorithm): every pick adds each eligible
  target's weight to its running score, takes the highest score and subtracts the eligible
  total from it. Over any run of `sum(weights)` consecutive picks (weights divided by their
  greatest common divisor) each target gets exactly its weight, interleaved as evenly as
  possible: 90/10 gives 9 and 1 in every 10 requests, 18 and 2 in every 20.
- **Sticky hashing**: a key (a user or session header) is hashed to a point in [0, 1) and
  the target owning that slice of the cumulative weights is chosen. The same key always gets
  the same target while the weights stay the same, and when the last target's weight grows
  (a canary going 10 -> 50 -> 100) nobody already on it moves back.

Targets the caller says are not eligible (not loaded yet) are skipped; their share goes to the
eligible ones in proportion to their weights. Weight 0 means drained: never picked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Sequence
from math import gcd


def reduce_weights(weights: Sequence[int]) -> tuple[int, ...]:
    """Divide weights by their greatest common divisor (90/10 -> 9/1); zeros stay zero."""
    divisor = 0
    for w in weights:
        divisor = gcd(divisor, w)
    if divisor <= 1:
        return tuple(weights)
    return tuple(w // divisor for w in weights)


class SmoothWeightedRoundRobin:
    """Deterministic smooth weighted round-robin over a fixed list of weighted targets."""

    __slots__ = ("_current", "_live", "_names", "_total", "_weights")

    def __init__(self, names: Sequence[str], weights: Sequence[int]) -> None:
        if len(names) != len(weights):
            raise ValueError("names and weights differ in length")
        if any(w < 0 for w in weights):
            raise ValueError("weights must not be negative")
        self._names = tuple(names)
        self._weights = reduce_weights(weights)
        self._total = sum(self._weights)
        self._live = tuple(i for i, w in enumerate(self._weights) if w > 0)
        self._current = [0] * len(self._weights)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def weights(self) -> tuple[int, ...]:
        return self._weights

    def pick(self, eligible: Container[str] | None = None) -> int | None:
        """Index of the next target, or None when no target with weight > 0 is eligible.

        `eligible=None` means every target is eligible (the fast, common path).
        """
        current = self._current
        weights = self._weights
        best = -1
        best_score = 0
        if eligible is None:
            total = self._total
            for i in self._live:
                score = current[i] + weights[i]
                current[i] = score
                if best < 0 or score > best_score:
                    best, best_score = i, score
        else:
            total = 0
            names = self._names
            for i in self._live:
                if names[i] not in eligible:
                    continue
                w = weights[i]
                total += w
                score = current[i] + w
                current[i] = score
                if best < 0 or score > best_score:
                    best, best_score = i, score
        if best < 0:
            return None
        current[best] -= total
        return best

    def pick_name(self, eligible: Container[str] | None = None) -> str | None:
        index = self.pick(eligible)
        return None if index is None else self._names[index]


def key_point(key: str) -> int:
    """A stable 64-bit hash of a sticky key (the same on every process and every run)."""
    return int.from_bytes(
        hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


def pick_sticky(
    names: Sequence[str], weights: Sequence[int], key: str, eligible: Container[str] | None = None
) -> int | None:
    """Index of the target that owns `key`'s point in the cumulative weights, or None if none is eligible."""
    live = [i for i, w in enumerate(weights) if w > 0 and (eligible is None or names[i] in eligible)]
    if not live:
        return None
    total = sum(weights[i] for i in live)
    # Scale the 64-bit point into [0, total) with integers only: no float rounding at slice edges.
    point = (key_point(key) * total) >> 64
    for i in live:
        point -= weights[i]
        if point < 0:
            return i
    return live[-1]  # pragma: no cover - unreachable: point < total
