"""The persisted state: observations, verdict history, round trip, corruption, and resuming never ahead."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.rollout.schedule import Hold, Phase, WindowHistory, position
from lora_syncer.rollout.spec import Analysis, Pause, RolloutSpec, SetWeight, identity
from lora_syncer.rollout.state import (
    MAX_HOLDS,
    MAX_RECENT,
    RolloutState,
    from_json,
    new_state,
    observe,
    observed,
    record_verdict,
    set_control,
    settle,
    start_of,
    to_json,
)
from lora_syncer.rollout.verdict import Outcome, WindowVerdict

T0 = 1_800_000_000.0
SPEC = RolloutSpec(
    name="r",
    model="m",
    stable="m-v1",
    canary="m-v2",
    steps=(SetWeight(10), Pause(300), SetWeight(50), Pause(), SetWeight(100)),
    analysis=Analysis(interval=30, failure_limit=0, max_error_rate=0.02),
)
PASS = WindowVerdict(Outcome.PASS, "ok")
FAIL = WindowVerdict(Outcome.FAIL, "errorRate: 0.5 > 0.02")


def test_new_state_and_start_instant() -> None:
    s = new_state(SPEC, T0)
    assert (s.identity, s.name, s.first_seen) == (identity(SPEC), "r", T0)
    assert start_of(SPEC, s) == T0
    assert start_of(replace(SPEC, start_time=T0 - 100), s) == T0 - 100


def test_record_verdict_in_order_keeps_failures_and_ignores_repeats() -> None:
    s = new_state(SPEC, T0)
    s = record_verdict(s, 0, PASS)
    s = record_verdict(s, 1, FAIL)
    s = record_verdict(s, 1, PASS)  # already judged: a second replica loop must not rewrite history
    assert s.history == WindowHistory(2, (1,))
    assert [r.outcome for r in s.recent] == [Outcome.PASS, Outcome.FAIL]


def test_skipped_windows_count_as_no_verdict() -> None:
    s = record_verdict(new_state(SPEC, T0), 5, FAIL)
    assert s.history == WindowHistory(6, (5,))
    assert "windows 0..4 not judged" in s.recent[0].reason


def test_recent_is_bounded() -> None:
    s = new_state(SPEC, T0)
    for k in range(MAX_RECENT + 10):
        s = record_verdict(s, k, PASS)
    assert len(s.recent) == MAX_RECENT
    assert s.recent[-1].window == MAX_RECENT + 9


def test_observe_opens_and_closes_holds() -> None:
    s = observe(new_state(SPEC, T0), SPEC, T0, canary_loaded=False)
    assert s.holds == (Hold(T0, None, "canary-loading"),)
    s = observe(s, SPEC, T0 + 60, canary_loaded=True)
    assert s.holds == (Hold(T0, T0 + 60, "canary-loading"),)
    s = observe(s, replace(SPEC, paused=True), T0 + 100, canary_loaded=True)
    s = observe(s, SPEC, T0 + 150, canary_loaded=True)
    assert s.holds[-1] == Hold(T0 + 100, T0 + 150, "paused")
    s = set_control(s, paused=True)
    s = observe(s, SPEC, T0 + 200, canary_loaded=True)
    assert s.holds[-1] == Hold(T0 + 200, None, "paused")


def test_holds_are_bounded_by_merging_the_oldest_which_only_puts_the_rollout_behind() -> None:
    s = new_state(SPEC, T0)
    for k in range(MAX_HOLDS + 5):
        s = observe(s, replace(SPEC, paused=True), T0 + 10 * k, canary_loaded=True)
        s = observe(s, SPEC, T0 + 10 * k + 1, canary_loaded=True)
    assert len(s.holds) == MAX_HOLDS
    assert s.holds[0].start == T0
    unbounded = replace(
        s, holds=tuple(Hold(T0 + 10 * k, T0 + 10 * k + 1, "paused") for k in range(MAX_HOLDS + 5))
    )
    for seconds in range(0, 3000, 7):
        merged = position(SPEC, observed(s, SPEC, T0 + seconds, canary_loaded=True))
        exact = position(SPEC, observed(unbounded, SPEC, T0 + seconds, canary_loaded=True))
        assert (merged.step, -merged.since) <= (exact.step, -exact.since)


def test_gates_and_aborts_are_recorded_when_first_seen() -> None:
    s = observe(new_state(SPEC, T0), replace(SPEC, promoted_step=3), T0 + 50, canary_loaded=True)
    s = observe(s, replace(SPEC, promoted_step=3), T0 + 90, canary_loaded=True)
    assert s.gates_opened == ((3, T0 + 50),)
    s = observe(s, replace(SPEC, abort=True), T0 + 120, canary_loaded=True)
    s = observe(s, SPEC, T0 + 130, canary_loaded=True)  # abort taken off the document: still aborted
    assert (s.abort_at, s.abort_reason) == (T0 + 120, "aborted by hand")
    assert position(SPEC, observed(s, SPEC, T0 + 140, canary_loaded=True)).phase is Phase.ABORTED


def test_control_abort_cannot_be_taken_back() -> None:
    s = set_control(new_state(SPEC, T0), abort=True)
    s = set_control(s, abort=False)
    assert s.control_abort is True
    s = observe(s, SPEC, T0 + 5, canary_loaded=True)
    assert s.abort_reason == "aborted by hand (control endpoint)"


def test_canary_failure_is_recorded_once() -> None:
    s = observe(new_state(SPEC, T0), SPEC, T0 + 5, canary_loaded=False, canary_failed=True)
    s = observe(s, SPEC, T0 + 9, canary_loaded=False, canary_failed=True)
    assert s.canary_failed_at == T0 + 5


def test_an_analysis_abort_is_final_even_if_failure_limit_is_raised() -> None:
    s = record_verdict(new_state(SPEC, T0), 0, FAIL)
    p = position(SPEC, observed(s, SPEC, T0 + 40, canary_loaded=True))
    assert p.phase is Phase.ABORTED
    s = settle(s, p)
    assert s.last_phase is Phase.ABORTED
    lenient = replace(SPEC, analysis=Analysis(interval=30, failure_limit=10, max_error_rate=0.02))
    again = position(lenient, observed(s, lenient, T0 + 60, canary_loaded=True))
    assert (again.phase, again.since) == (Phase.ABORTED, T0 + 30)
    assert "analysis failed" in again.reason


def _busy_state() -> RolloutState:
    s = new_state(SPEC, T0)
    s = observe(s, SPEC, T0, canary_loaded=False)
    s = observe(s, replace(SPEC, promoted_step=3), T0 + 30, canary_loaded=True)
    s = record_verdict(s, 0, PASS)
    s = record_verdict(s, 1, FAIL)
    s = set_control(s, paused=True)
    s = observe(s, SPEC, T0 + 70, canary_loaded=True, canary_failed=False)
    return settle(s, position(SPEC, observed(s, SPEC, T0 + 70, canary_loaded=True)))


def test_round_trip() -> None:
    s = _busy_state()
    text = to_json(s)
    back, why = from_json(text, identity(SPEC))
    assert why is None
    assert back == s


def test_another_identity_is_ignored_with_a_reason() -> None:
    text = to_json(_busy_state())
    back, why = from_json(text, identity(replace(SPEC, canary="m-v3")))
    assert back is None
    assert why is not None
    assert "another rollout" in why


def _mutate(field_path: tuple[str, ...], value: object) -> str:
    body = json.loads(to_json(_busy_state()))
    target = body
    for key in field_path[:-1]:
        target = target[key]
    target[field_path[-1]] = value
    return json.dumps(body)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"version": 1}',
        _mutate(("firstSeen",), "yesterday"),
        _mutate(("firstSeen",), None),
        _mutate(("windows", "judged"), -1),
        _mutate(("windows", "failed"), [7]),  # a failure in a window not judged
        _mutate(("windows", "failed"), [1, 0]),
        _mutate(("holds",), [{"start": 5, "end": 1, "kind": "paused"}]),
        _mutate(("holds",), [{"start": 5, "end": None, "kind": "coffee"}]),
        _mutate(("recent",), [{"window": 0, "outcome": "maybe", "reason": ""}]),
        _mutate(("lastPhase",), "dancing"),
        _mutate(("gatesOpened",), [[1]]),
    ],
)
def test_a_corrupt_file_is_ignored_with_a_reason(text: str) -> None:
    back, why = from_json(text, identity(SPEC))
    assert back is None
    assert why is not None
    assert "corrupt" in why or "version" in why


def test_another_version_is_ignored() -> None:
    back, why = from_json(_mutate(("version",), 2), identity(SPEC))
    assert back is None
    assert why is not None
    assert "version 2" in why


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from([Outcome.PASS, Outcome.NO_VERDICT]), max_size=40),
    st.integers(0, 1500),
    st.integers(0, 1500),
)
def test_a_restarted_pod_resumes_at_the_same_step_never_ahead(
    outcomes: list[Outcome], crash: int, later: int
) -> None:
    """Persist at `crash`, restart from the file at `crash + later`: never ahead of the pod that kept running."""
    s = replace(SPEC, promoted_step=0)
    running = new_state(s, T0)
    for k, o in enumerate(outcomes):
        running = record_verdict(running, k, WindowVerdict(o, ""))
    saved, _ = from_json(to_json(running), identity(s))
    assert saved is not None
    now = T0 + crash + later
    kept = position(s, observed(running, s, now, canary_loaded=True))
    resumed = position(s, observed(saved, s, now, canary_loaded=True))
    assert resumed == kept
    at_crash = position(s, observed(saved, s, T0 + crash, canary_loaded=True))
    assert at_crash.step <= resumed.step
