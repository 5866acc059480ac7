"""Window verdicts: each check, and every missing-data rule."""

from __future__ import annotations

import math

import pytest

from lora_syncer.rollout.spec import Analysis, PrometheusCheck, WebhookCheck
from lora_syncer.rollout.verdict import (
    External,
    Outcome,
    TargetCounts,
    Window,
    fast_fail_errors,
    judge,
    p95,
)

ERRORS = Analysis(interval=30, min_requests=50, max_error_rate=0.02)
LATENCY = Analysis(interval=30, min_requests=50, max_latency_ratio=1.5)
HEALTHY = TargetCounts(requests=100, errors=0, ttft=[0.1] * 100, completion_tokens=1000)


def window(canary: TargetCounts, stable: TargetCounts = HEALTHY, weight: int = 50, mirror: int = 0) -> Window:
    return Window(stable=stable, canary=canary, canary_weight=weight, mirror_percent=mirror)


def test_p95_is_nearest_rank_on_raw_samples() -> None:
    assert p95([]) is None
    assert p95([3.0]) == 3.0
    samples = [float(i) for i in range(100, 0, -1)]  # 1..100, unsorted
    assert p95(samples) == 95.0  # ceil(0.95 * 100) = 95th smallest
    assert p95([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]) == 10.0  # ceil(9.5) = 10th


def test_error_rate_pass_and_fail_with_the_values() -> None:
    ok = judge(window(TargetCounts(requests=100, errors=2)), ERRORS)
    assert ok.outcome is Outcome.PASS
    bad = judge(window(TargetCounts(requests=100, errors=3)), ERRORS)
    assert bad.outcome is Outcome.FAIL
    (check,) = bad.checks
    assert (check.name, check.value, check.limit) == ("errorRate", 0.03, 0.02)
    assert "0.03 > 0.02" in bad.reason


def test_below_min_requests_gives_no_verdict() -> None:
    v = judge(window(TargetCounts(requests=49, errors=0)), ERRORS)
    assert v.outcome is Outcome.NO_VERDICT
    assert "minRequests 50" in v.reason


def test_below_min_requests_enough_errors_fail_at_once() -> None:
    assert fast_fail_errors(ERRORS) == 1  # ceil(0.02 * 50)
    v = judge(window(TargetCounts(requests=3, errors=1)), ERRORS)
    assert v.outcome is Outcome.FAIL
    wider = Analysis(min_requests=100, max_error_rate=0.05)
    assert fast_fail_errors(wider) == 5
    assert judge(window(TargetCounts(requests=10, errors=4)), wider).outcome is Outcome.NO_VERDICT
    assert judge(window(TargetCounts(requests=10, errors=5)), wider).outcome is Outcome.FAIL


def test_zero_error_rate_does_not_fail_windows_without_errors() -> None:
    strict = Analysis(min_requests=50, max_error_rate=0.0)
    assert fast_fail_errors(strict) == 1
    assert judge(window(TargetCounts(requests=5)), strict).outcome is Outcome.NO_VERDICT


def test_stable_checks_are_skipped_while_the_stable_gets_no_traffic() -> None:
    slow_canary = TargetCounts(requests=100, ttft=[1.0] * 100)
    idle_stable = TargetCounts()
    v = judge(window(slow_canary, idle_stable, weight=100), LATENCY)
    assert v.outcome is Outcome.PASS
    assert "skipped" in v.checks[0].reason
    both = Analysis(max_error_rate=0.02, max_latency_ratio=1.5)
    assert (
        judge(window(TargetCounts(requests=100, errors=5), idle_stable, weight=100), both).outcome
        is Outcome.FAIL
    )


def test_a_step_where_the_canary_gets_no_traffic_has_no_gate() -> None:
    v = judge(window(TargetCounts(requests=100, errors=100), weight=0), ERRORS)
    assert v.outcome is Outcome.NO_VERDICT
    assert "no gate" in v.reason
    mirrored = judge(window(TargetCounts(requests=100, errors=100), weight=0, mirror=10), ERRORS)
    assert mirrored.outcome is Outcome.FAIL


def test_a_sick_stable_gives_no_verdict() -> None:
    sick = TargetCounts(requests=100, errors=10)
    v = judge(window(TargetCounts(requests=100, errors=10), sick), ERRORS)
    assert v.outcome is Outcome.NO_VERDICT
    assert "server is sick" in v.reason
    few_but_failing = TargetCounts(requests=5, errors=2)
    assert (
        judge(window(TargetCounts(requests=100, errors=10), few_but_failing), ERRORS).outcome
        is Outcome.NO_VERDICT
    )


def test_latency_ratio_uses_p95_of_both() -> None:
    canary = TargetCounts(requests=100, ttft=[0.1] * 90 + [0.2] * 10)
    v = judge(window(canary), LATENCY)
    assert v.outcome is Outcome.FAIL  # p95 0.2 vs 0.1: ratio 2
    assert v.checks[0].value == pytest.approx(2.0)
    calm = TargetCounts(requests=100, ttft=[0.1] * 96 + [5.0] * 4)
    assert judge(window(calm), LATENCY).outcome is Outcome.PASS  # the 4% tail is above p95
    no_samples = TargetCounts(requests=100, errors=100)
    assert judge(window(no_samples), LATENCY).outcome is Outcome.NO_VERDICT


def test_empty_rate() -> None:
    a = Analysis(max_empty_rate=0.1)
    assert judge(window(TargetCounts(requests=100, empty=10)), a).outcome is Outcome.PASS
    assert judge(window(TargetCounts(requests=100, empty=11)), a).outcome is Outcome.FAIL
    assert judge(window(TargetCounts(requests=100, errors=100)), a).outcome is Outcome.NO_VERDICT


@pytest.mark.parametrize(
    ("canary_tokens", "outcome"),
    [
        (1000, Outcome.PASS),
        (1500, Outcome.PASS),
        (1600, Outcome.FAIL),
        (700, Outcome.PASS),
        (600, Outcome.FAIL),
    ],
)
def test_length_ratio_is_bounded_both_ways(canary_tokens: int, outcome: Outcome) -> None:
    a = Analysis(max_length_ratio=1.5)
    assert judge(window(TargetCounts(requests=100, completion_tokens=canary_tokens)), a).outcome is outcome
    inverse = Analysis(max_length_ratio=1 / 1.5)
    assert (
        judge(window(TargetCounts(requests=100, completion_tokens=canary_tokens)), inverse).outcome is outcome
    )


PROM = Analysis(
    max_error_rate=0.02,
    max_latency_ratio=1.5,
    prometheus=PrometheusCheck(url="http://p:9090", error_rate_query="e", latency_ratio_query="l"),
)


def test_prometheus_values_replace_this_pods_counts() -> None:
    few = TargetCounts(requests=1)  # below minRequests: irrelevant with a fleet-wide signal
    ok = judge(window(few), PROM, External(prometheus_error_rate=0.01, prometheus_latency_ratio=1.2))
    assert ok.outcome is Outcome.PASS
    bad = judge(window(few), PROM, External(prometheus_error_rate=0.05, prometheus_latency_ratio=1.2))
    assert bad.outcome is Outcome.FAIL
    assert bad.checks[0].value == 0.05


@pytest.mark.parametrize("value", [math.nan, None])
def test_prometheus_nan_or_empty_is_no_verdict_for_that_check(value: float | None) -> None:
    v = judge(window(HEALTHY), PROM, External(prometheus_error_rate=value, prometheus_latency_ratio=1.0))
    assert v.outcome is Outcome.NO_VERDICT
    error_check = next(c for c in v.checks if c.name == "errorRate")
    assert error_check.outcome is Outcome.NO_VERDICT
    # Another check failing still fails the window.
    failing = judge(
        window(HEALTHY), PROM, External(prometheus_error_rate=value, prometheus_latency_ratio=3.0)
    )
    assert failing.outcome is Outcome.FAIL


def test_webhook() -> None:
    a = Analysis(webhook=WebhookCheck("http://evals:8080/check"))
    assert judge(window(HEALTHY), a, External(webhook_pass=True)).outcome is Outcome.PASS
    assert judge(window(HEALTHY), a, External(webhook_pass=False)).outcome is Outcome.FAIL
    assert judge(window(HEALTHY), a).outcome is Outcome.NO_VERDICT


def test_every_given_check_must_pass() -> None:
    a = Analysis(max_error_rate=0.02, max_empty_rate=0.1)
    v = judge(window(TargetCounts(requests=100, errors=0, empty=50)), a)
    assert v.outcome is Outcome.FAIL
    assert [c.outcome for c in v.checks] == [Outcome.PASS, Outcome.FAIL]


def test_an_analysis_without_checks_gives_no_verdict() -> None:
    assert judge(window(HEALTHY), Analysis()).outcome is Outcome.NO_VERDICT
