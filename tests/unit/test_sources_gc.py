"""The cache's GC decision (pure)."""

from __future__ import annotations

from lora_syncer.sources.gc import VersionUsage, plan_gc

GRACE = 60.0
NOW = 10_000.0


def v(
    name: str,
    size: int,
    *,
    last_used: float = 0.0,
    declared: bool = False,
    listed: bool = False,
    unlisted_since: float | None = 0.0,
) -> VersionUsage:
    return VersionUsage(name, size, last_used, declared, listed, unlisted_since)


def test_under_budget_deletes_nothing() -> None:
    d = plan_gc([v("a", 10), v("b", 10)], max_bytes=20, grace=GRACE, now=NOW)
    assert (d.delete, d.total_bytes, d.overflow_bytes) == ((), 20, 0)


def test_no_budget_deletes_nothing() -> None:
    assert plan_gc([v("a", 10**12)], max_bytes=None, grace=GRACE, now=NOW).delete == ()


def test_least_recently_used_first_and_only_as_many_as_needed() -> None:
    versions = [v("new", 10, last_used=300), v("old", 10, last_used=100), v("mid", 10, last_used=200)]
    d = plan_gc(versions, max_bytes=15, grace=GRACE, now=NOW)
    assert d.delete == ("old", "mid")
    assert (d.kept_bytes, d.overflow_bytes) == (10, 0)


def test_declared_and_listed_versions_are_never_deleted() -> None:
    versions = [v("declared", 100, declared=True), v("listed", 100, listed=True, unlisted_since=None)]
    d = plan_gc(versions, max_bytes=0, grace=0, now=NOW)
    assert d.delete == ()
    assert d.overflow_bytes == 200


def test_grace_period_after_unlisting() -> None:
    recent = v("recent", 10, unlisted_since=NOW - GRACE + 1)
    never_observed = v("unobserved", 10, unlisted_since=None)
    due = v("due", 10, unlisted_since=NOW - GRACE, last_used=NOW)
    d = plan_gc([recent, never_observed, due], max_bytes=0, grace=GRACE, now=NOW)
    assert d.delete == ("due",)
    assert d.overflow_bytes == 20


def test_overflow_when_the_only_candidates_are_not_enough() -> None:
    d = plan_gc([v("keep", 50, declared=True), v("gone", 20)], max_bytes=40, grace=GRACE, now=NOW)
    assert d.delete == ("gone",)
    assert (d.total_bytes, d.kept_bytes, d.overflow_bytes) == (70, 50, 10)


def test_ties_break_by_name_for_a_stable_order() -> None:
    d = plan_gc([v("b", 10), v("a", 10)], max_bytes=10, grace=GRACE, now=NOW)
    assert d.delete == ("a",)
