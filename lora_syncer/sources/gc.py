"""Which cached versions to delete (pure).

A version may go only when nothing needs it: not declared, not listed by vLLM, and unlisted for
at least the grace period (vLLM may still read files of an adapter it evicted from GPU memory).
Among those, least recently used go first, and only as many as it takes to get under the
budget. What cannot be freed is reported as overflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionUsage:
    name: str
    size: int
    last_used: float
    declared: bool
    listed: bool
    # When vLLM was first seen not listing it (None: not observed unlisted yet).
    unlisted_since: float | None


@dataclass(frozen=True)
class GcDecision:
    delete: tuple[str, ...]
    total_bytes: int  # before deleting
    kept_bytes: int  # after deleting
    overflow_bytes: int  # kept_bytes above the budget (0 when within it)


def evictable(v: VersionUsage, *, grace: float, now: float) -> bool:
    return (
        not v.declared and not v.listed and v.unlisted_since is not None and now - v.unlisted_since >= grace
    )


def plan_gc(
    versions: Iterable[VersionUsage], *, max_bytes: int | None, grace: float, now: float
) -> GcDecision:
    """The versions to delete to get under `max_bytes` (None: no budget, delete nothing)."""
    items = list(versions)
    total = sum(v.size for v in items)
    if max_bytes is None or total <= max_bytes:
        return GcDecision(delete=(), total_bytes=total, kept_bytes=total, overflow_bytes=0)
    kept = total
    delete: list[str] = []
    for v in sorted(
        (v for v in items if evictable(v, grace=grace, now=now)), key=lambda v: (v.last_used, v.name)
    ):
        if kept <= max_bytes:
            break
        delete.append(v.name)
        kept -= v.size
    return GcDecision(
        delete=tuple(delete), total_bytes=total, kept_bytes=kept, overflow_bytes=max(0, kept - max_bytes)
    )
