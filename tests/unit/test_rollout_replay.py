"""Replaying the windows a pod did not see from Prometheus's answers: the pure replay, and the
controller's bounds (the window cap, a Prometheus that gives no answer)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.rollout import controller as controller_module
from lora_syncer.rollout.replay import ReplayWindow, counts, replay, window_at
from lora_syncer.rollout.schedule import Phase, RolloutPosition, position
from lora_syncer.rollout.spec import Analysis, Mirror, Pause, PrometheusCheck, RolloutSpec, SetWeight, Step
from lora_syncer.rollout.state import RolloutState, new_state, observe, observed, record_verdict, settle
from lora_syncer.rollout.verdict import External, Outcome, TargetCounts, Window, judge
from tests.support.rollouts import controller_at

T0 = 1_800_000_000.0
INTERVAL = 30
# A watcher judges each window this long after it ends (the controller's SETTLE + PROMETHEUS_LAG).
LAG = controller_module.SETTLE + controller_module.PROMETHEUS_LAG
OK, BAD = External(prometheus_error_rate=0.0), External(prometheus_error_rate=0.9)


def spec(steps: tuple[Step, ...], limit: int = 0, **kw: object) -> RolloutSpec:
    base = RolloutSpec(
        name="r",
        model="m",
        stable="m-v1",
        canary="m-v2",
        steps=steps,
        start_time=T0,
        analysis=Analysis(
            interval=INTERVAL,
            min_requests=1000,  # this pod's counts never decide: the fleet-wide answers do
            failure_limit=limit,
            max_error_rate=0.5,
            prometheus=PrometheusCheck(url="http://prometheus:9090", error_rate_query="q"),
        ),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def late_pod(s: RolloutSpec, now: float) -> RolloutState:
    """A pod with no saved state that first sees the rollout at `now`."""
    return observe(new_state(s, now), s, now, canary_loaded=True)


def at(s: RolloutSpec, state: RolloutState, now: float) -> RolloutPosition:
    return position(s, observed(state, s, now, canary_loaded=True))


def watch(
    s: RolloutSpec, answers: Mapping[int, External], end: float
) -> tuple[RolloutState, RolloutPosition]:
    """A replica that was there all along, ticking as the controller does: at each window's end
    (+ LAG) and at each transition, judging the windows that ended with the canary weight it had
    in force during each (its own record), then computing the position."""
    assert s.analysis is not None
    state = new_state(s, T0 - 1)
    notes: list[tuple[float, int, int]] = [(T0 - 1, 0, 0)]
    now = T0
    pos = at(s, state, now)
    while now <= end:
        ended = max(0, math.floor((now - LAG - T0) / INTERVAL))
        for k in range(state.history.judged, ended):
            if not counts(s, state, k):
                break
            ws, we = T0 + k * INTERVAL, T0 + (k + 1) * INTERVAL
            in_force = max((n for n in notes if n[0] <= ws), key=lambda n: n[0])
            inside = [n for n in notes if ws < n[0] < we]
            weight = max([in_force[1], *(n[1] for n in inside)])
            mirror = max([in_force[2], *(n[2] for n in inside)])
            empty = TargetCounts()
            verdict = judge(Window(empty, empty, weight, mirror), s.analysis, answers.get(k))
            state = record_verdict(state, k, verdict)
        state = observe(state, s, now, canary_loaded=True)
        pos = at(s, state, now)
        state = settle(state, pos)
        if notes[-1][1:] != (pos.canary_weight, pos.mirror_percent):
            notes.append((now, pos.canary_weight, pos.mirror_percent))
        nxt = T0 + (math.floor((now - LAG - T0) / INTERVAL) + 1) * INTERVAL + LAG
        if pos.next_transition is not None and now < pos.next_transition < nxt:
            nxt = pos.next_transition
        now = nxt
    return state, pos


def ended_by(now: float) -> int:
    return max(0, math.floor((now - LAG - T0) / INTERVAL))


def test_a_failure_before_the_pod_started_counts_and_the_abort_is_the_same() -> None:
    s = spec((SetWeight(50), Pause(), SetWeight(100)), limit=1)
    answers = {k: OK for k in range(10)} | {2: BAD}
    now = T0 + 6 * INTERVAL + LAG
    r = replay(s, late_pod(s, now), answers, ended_by(now))
    assert not r.finished
    assert r.state.history.judged == 6 and r.state.history.failed == (2,)
    assert [v.outcome for v in r.verdicts] == [Outcome.PASS] * 2 + [Outcome.FAIL] + [Outcome.PASS] * 3
    p = at(s, r.state, now)
    assert (p.phase, p.step, p.canary_weight, p.failed_windows) == (Phase.PAUSED, 1, 50, 1)
    # A second failure takes both over failureLimit 1: the same abort, at the same instant.
    answers[7] = BAD
    end = T0 + 9 * INTERVAL + LAG
    late = replay(s, late_pod(s, end), answers, ended_by(end))
    _, watched = watch(s, answers, end)
    mine = at(s, late.state, end)
    assert mine == watched
    assert mine.phase is Phase.ABORTED and mine.since == T0 + 8 * INTERVAL
    assert "2 failed windows > failureLimit 1 (window 7" in mine.reason


def test_an_abort_seen_at_the_pods_start_does_not_hide_the_history_before_it() -> None:
    """A pod started after the fleet aborted adopts that abort at its start (or reads `abort: true`
    then); the replay still finds the failures before, so the abort is the fleet's: same instant,
    same reason, same step."""
    s = spec((SetWeight(50), Pause(), SetWeight(100)), limit=1)
    answers = {k: OK for k in range(10)} | {2: BAD, 4: BAD}
    end = T0 + 9 * INTERVAL + LAG
    _, watched = watch(s, answers, end)
    assert watched.phase is Phase.ABORTED
    adopted = replace(late_pod(s, end), abort_at=end, abort_reason="aborted on another replica")
    by_hand = late_pod(replace(s, abort=True), end)
    for state, sp in ((adopted, s), (by_hand, replace(s, abort=True))):
        r = replay(sp, state, answers, ended_by(end))
        assert r.state.history.failed == (2, 4)
        mine = at(sp, r.state, end)
        assert (mine.phase, mine.since, mine.reason, mine.step) == (
            watched.phase,
            watched.since,
            watched.reason,
            watched.step,
        )


def test_windows_without_canary_traffic_are_not_asked_and_give_no_verdict() -> None:
    s = spec((Pause(60), SetWeight(20), Pause(60), SetWeight(100)), limit=5)
    now = T0 + 4 * INTERVAL + LAG
    state = late_pod(s, now)
    first = window_at(s, state, 0)
    assert first == ReplayWindow(0, T0, T0 + 30, 0, 0) and not first.carries_traffic
    r = replay(s, state, {k: BAD for k in range(10)}, ended_by(now))
    assert [v.outcome for v in r.verdicts] == [Outcome.NO_VERDICT] * 2 + [Outcome.FAIL] * 2
    assert r.verdicts[0].reason == "the canary gets no traffic at this step: no gate"


def test_a_step_passing_mid_window_gives_that_window_its_weight() -> None:
    s = spec((Pause(45), SetWeight(10), Pause(300), SetWeight(100)))
    state = late_pod(s, T0 + 1000)
    assert window_at(s, state, 0) == ReplayWindow(0, T0, T0 + 30, 0, 0)
    assert window_at(s, state, 1) == ReplayWindow(1, T0 + 30, T0 + 60, 10, 0)


def test_the_replay_stops_at_the_first_window_after_completion() -> None:
    s = spec((SetWeight(50), Pause(60), SetWeight(100)))
    now = T0 + 3600
    r = replay(s, late_pod(s, now), {k: OK for k in range(2)} | {k: BAD for k in range(2, 200)}, 120)
    assert r.finished and r.state.history.judged == 2 and r.state.history.failed == ()
    p = at(s, r.state, now)
    assert (p.phase, p.canary_weight, p.since) == (Phase.COMPLETED, 100, T0 + 60)


def test_an_answer_without_a_value_or_no_answer_is_no_verdict_yet_judged() -> None:
    s = spec((SetWeight(50), Pause(60), SetWeight(100)))
    r = replay(s, late_pod(s, T0 + 3600), {0: External(prometheus_error_rate=None)}, 2)
    assert [v.outcome for v in r.verdicts] == [Outcome.NO_VERDICT, Outcome.NO_VERDICT]
    assert "Prometheus gave no answer" in r.verdicts[0].reason
    assert at(s, r.state, T0 + 3600).phase is Phase.COMPLETED  # evidence of any outcome lets it pass


steps_st = st.lists(
    st.one_of(
        st.builds(SetWeight, st.integers(0, 100)),
        st.builds(Pause, st.integers(1, 200)),
        st.builds(Mirror, st.integers(1, 100), st.integers(1, 200)),
    ),
    min_size=1,
    max_size=6,
).map(tuple)
answer_st = st.one_of(
    st.none(),
    st.builds(External, prometheus_error_rate=st.sampled_from([None, 0.0, 0.2, 0.6, 1.0])),
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(steps_st, st.lists(answer_st, max_size=40), st.integers(0, 3), st.integers(0, 40), st.integers(0, 29))
def test_a_late_pod_replaying_the_answers_agrees_with_one_that_watched(
    steps: tuple[Step, ...], answers: list[External | None], limit: int, windows: int, offset: int
) -> None:
    """Whatever the steps and answers, a pod started at any instant and replaying the windows from
    Prometheus's answers is at the watcher's phase, step, weights, failures and reason."""
    s = spec(steps, limit)
    by_window = {k: a for k, a in enumerate(answers) if a is not None}
    end = T0 + windows * INTERVAL + LAG + offset
    watched_state, watched = watch(s, by_window, end)
    late = replay(s, late_pod(s, end), by_window, ended_by(end))
    mine = at(s, late.state, end)
    assert mine == watched
    # The same windows judged, the same failures, the same verdict (and reason) for each.
    assert late.state.history == watched_state.history
    mine_v = {v.window: (v.outcome, v.reason) for v in late.state.recent}
    theirs = {v.window: (v.outcome, v.reason) for v in watched_state.recent}
    common = mine_v.keys() & theirs.keys()
    assert {k: mine_v[k] for k in common} == {k: theirs[k] for k in common}


# --- the controller's bounds ------------------------------------------------------------------

HELD = """\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {name: held}
spec:
  model: m
  stable: m-v1
  canary: m-v2
  startTime: '2026-01-01T00:00:00Z'
  steps: [{setWeight: 50}, {pause: {}}, {setWeight: 100}]
  analysis:
    interval: 30s
    failureLimit: 3
    maxErrorRate: 0.5
    prometheus: {url: 'http://prometheus:9090', errorRateQuery: 'q'}
"""
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class Answers:
    """An analyzer answering from a table (window end → error rate), or with no answer at all."""

    def __init__(self, rates: Mapping[float, float], unanswered: str | None = None) -> None:
        self.rates = rates
        self.unanswered = unanswered
        self.asked: list[float] = []

    async def external(self, spec: RolloutSpec, window_start: float, window_end: float) -> External:
        return External(prometheus_error_rate=self.rates.get(window_end))

    async def fleet_aborted(self, spec: RolloutSpec, at: float) -> bool | None:
        return False

    async def history(
        self, spec: RolloutSpec, window_start: float, window_end: float
    ) -> tuple[External, str | None]:
        self.asked.append(window_end)
        if self.unanswered is not None:
            return External(), self.unanswered
        return External(prometheus_error_rate=self.rates.get(window_end)), None


async def _first_pass(tmp_path: Path, analyzer: Answers, now: float) -> dict[str, object]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(HELD)
    controller = await controller_at(rules, now, analyzer=analyzer)
    await controller.tick()
    rollout: dict[str, object] = controller.status()["rollouts"][0]
    return rollout


async def test_a_new_pod_replays_the_windows_from_prometheus(tmp_path: Path) -> None:
    rates = {START + (k + 1) * 30: (0.9 if k in (3, 5) else 0.1) for k in range(200)}
    analyzer = Answers(rates)
    r = await _first_pass(tmp_path, analyzer, START + 20 * 30 + 10)
    assert (r["phase"], r["step"], r["canaryWeight"], r["failedWindows"]) == ("paused", 1, 50, 2)
    assert r["windowsJudged"] == 20 and len(analyzer.asked) == 20  # one question per window
    assert r["replay"] == {
        "replayedWindows": 20,
        "askedWindows": 20,
        "windowsWithoutValue": 0,
        "notReplayed": 0,
        "stopReason": None,
    }


async def test_beyond_the_cap_windows_are_no_verdict_and_status_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "MAX_REPLAY_WINDOWS", 5)
    # Windows 1 and 10..13 failed: the pod finds the first, not the four after the cap (the fleet
    # aborted; this pod adopts that through lora_syncer_rollout_phase, not from its replay).
    fails = {1, 10, 11, 12, 13}
    analyzer = Answers({START + (k + 1) * 30: (0.9 if k in fails else 0.1) for k in range(200)})
    r = await _first_pass(tmp_path, analyzer, START + 20 * 30 + 10)
    assert len(analyzer.asked) == 5
    assert (r["windowsJudged"], r["failedWindows"], r["phase"]) == (20, 1, "paused")
    replayed = r["replay"]
    assert isinstance(replayed, dict)
    assert (replayed["replayedWindows"], replayed["notReplayed"]) == (5, 15)
    assert replayed["stopReason"] == "more than 5 windows to replay"
    last = r["lastWindows"]
    assert isinstance(last, list)
    assert "not replayed from Prometheus (more than 5 windows to replay)" in last[-1]["reason"]


async def test_a_prometheus_that_gives_no_answer_is_asked_once(tmp_path: Path) -> None:
    analyzer = Answers({}, unanswered="errorRate: Prometheus at http://prometheus:9090: connection refused")
    r = await _first_pass(tmp_path, analyzer, START + 20 * 30 + 10)
    assert len(analyzer.asked) == 1
    assert (r["phase"], r["step"], r["windowsJudged"], r["failedWindows"]) == ("paused", 1, 20, 0)
    replayed = r["replay"]
    assert isinstance(replayed, dict)
    assert replayed["notReplayed"] == 20 and replayed["replayedWindows"] == 0
    assert "Prometheus gave no answer for window 0: errorRate: Prometheus at" in str(replayed["stopReason"])


async def test_windows_prometheus_has_no_value_for_are_counted_and_no_verdict(tmp_path: Path) -> None:
    """Data Prometheus no longer holds (retention, a wiped volume) is an answer without a value."""
    analyzer = Answers({START + (k + 1) * 30: 0.1 for k in range(10, 200)})  # nothing for windows 0..9
    r = await _first_pass(tmp_path, analyzer, START + 20 * 30 + 10)
    replayed = r["replay"]
    assert isinstance(replayed, dict)
    assert (replayed["askedWindows"], replayed["windowsWithoutValue"], replayed["stopReason"]) == (
        20,
        10,
        None,
    )
    assert (r["phase"], r["step"], r["windowsJudged"], r["failedWindows"]) == ("paused", 1, 20, 0)
