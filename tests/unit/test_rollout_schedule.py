"""The position function: steps, holds, gates, analysis aborts, stalls, and its properties."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.rollout.schedule import Hold, Observed, Phase, WindowHistory, position
from lora_syncer.rollout.spec import Analysis, Mirror, Pause, RolloutSpec, SetWeight, Step
from lora_syncer.rollout.state import new_state, observe, observed, record_verdict, settle
from lora_syncer.rollout.verdict import Outcome, WindowVerdict

T0 = 1_800_000_000.0
GUIDE_STEPS: tuple[Step, ...] = (SetWeight(10), Pause(300), SetWeight(50), Pause(), SetWeight(100))


def spec(steps: tuple[Step, ...] = GUIDE_STEPS, **kw: object) -> RolloutSpec:
    base = RolloutSpec(name="r", model="m", stable="m-v1", canary="m-v2", steps=steps)
    return replace(base, **kw)  # type: ignore[arg-type]


def at(s: RolloutSpec, seconds: float, **kw: object) -> Observed:
    return Observed(start=T0, now=T0 + seconds, **kw)  # type: ignore[arg-type]


def full_history(s: RolloutSpec, seconds: float) -> WindowHistory:
    assert s.analysis is not None
    return WindowHistory(int(seconds // s.analysis.interval))


def test_set_weight_passes_at_once_and_a_timed_pause_holds() -> None:
    s = spec()
    p = position(s, at(s, 0))
    assert (p.phase, p.step, p.canary_weight) == (Phase.PROGRESSING, 1, 10)
    assert p.since == T0
    assert p.next_transition == T0 + 300
    assert position(s, at(s, 299)).step == 1


def test_manual_gate_pauses_until_promoted_step_reaches_its_index() -> None:
    s = spec()
    p = position(s, at(s, 400))
    assert (p.phase, p.step, p.canary_weight) == (Phase.PAUSED, 3, 50)
    assert "promotedStep >= 3" in p.reason
    assert p.next_transition is None
    assert position(replace(s, promoted_step=2), at(s, 400)).step == 3
    done = position(replace(s, promoted_step=3), at(s, 500, gates_opened={3: T0 + 450}))
    assert (done.phase, done.step, done.canary_weight, done.since) == (Phase.COMPLETED, 5, 100, T0 + 450)


def test_gate_opened_before_it_is_reached_passes_on_arrival() -> None:
    s = replace(spec(), promoted_step=3)
    p = position(s, at(s, 301, gates_opened={3: T0 + 10}))
    assert (p.phase, p.since) == (Phase.COMPLETED, T0 + 300)


def test_gate_opened_now_when_not_recorded() -> None:
    s = replace(spec(), promoted_step=3)
    p = position(s, at(s, 500))
    assert (p.phase, p.since) == (Phase.COMPLETED, T0 + 500)


def test_hand_pause_stops_the_step_clock() -> None:
    s = spec()
    holds = (Hold(T0 + 100, T0 + 200, "paused"),)
    p = position(s, at(s, 350, holds=holds))
    assert (p.phase, p.step, p.next_transition) == (Phase.PROGRESSING, 1, T0 + 400)
    assert position(s, at(s, 400, holds=holds)).step == 3


def test_paused_now_is_phase_paused_and_holds_where_it_is() -> None:
    s = replace(spec(), paused=True)
    p = position(s, at(s, 1000, holds=(Hold(T0 + 100, None, "paused"),)))
    assert (p.phase, p.step, p.canary_weight) == (Phase.PAUSED, 1, 10)
    assert "spec.paused" in p.reason
    # The control endpoint's pause, not yet recorded as a hold, holds from now.
    q = position(spec(), at(s, 1000, paused=True))
    assert (q.phase, q.step) == (Phase.PAUSED, 3)


def test_canary_not_loaded_holds_its_step_and_sends_it_nothing() -> None:
    s = spec()
    p = position(s, at(s, 100, canary_loaded=False, holds=(Hold(T0, None, "canary-loading"),)))
    assert (p.phase, p.step, p.canary_weight) == (Phase.PROGRESSING, 0, 0)
    assert "canary to load" in p.reason
    # Loaded 60s late: the 5-minute pause counts from then.
    q = position(s, at(s, 330, holds=(Hold(T0, T0 + 60, "canary-loading"),)))
    assert (q.step, q.since, q.next_transition) == (1, T0 + 60, T0 + 360)


def test_a_canary_unloaded_mid_step_holds_the_step_clock() -> None:
    s = spec()
    p = position(s, at(s, 500, canary_loaded=False, holds=(Hold(T0 + 100, None, "canary-loading"),)))
    assert (p.phase, p.step, p.next_transition) == (Phase.PROGRESSING, 1, None)
    assert "canary to load" in p.reason
    assert position(s, at(s, 500, holds=(Hold(T0 + 100, T0 + 450, "canary-loading"),))).step == 1
    assert position(s, at(s, 650, holds=(Hold(T0 + 100, T0 + 450, "canary-loading"),))).step == 3


def test_canary_failing_to_load_aborts() -> None:
    s = spec()
    p = position(s, at(s, 100, canary_failed_at=T0 + 50))
    assert (p.phase, p.step, p.canary_weight, p.since) == (Phase.ABORTED, 1, 0, T0 + 50)
    assert "failed to load" in p.reason


def test_hand_abort_returns_traffic_to_the_stable_and_stays() -> None:
    s = spec()
    p = position(s, at(s, 350, abort_at=T0 + 310))
    assert (p.phase, p.step, p.canary_weight, p.mirror_percent) == (Phase.ABORTED, 3, 0, 0)
    assert "m-v1" in p.reason
    assert position(replace(s, abort=True), at(s, 10)).phase is Phase.ABORTED


def test_abort_after_completion_needs_the_stable_loaded() -> None:
    s = replace(spec(), promoted_step=3)
    refused = position(s, at(s, 500, gates_opened={3: T0}, abort_at=T0 + 450, stable_loaded=False))
    assert refused.phase is Phase.COMPLETED
    assert "refused" in refused.reason
    assert "not loaded" in refused.reason
    allowed = position(s, at(s, 500, gates_opened={3: T0}, abort_at=T0 + 450))
    assert (allowed.phase, allowed.canary_weight) == (Phase.ABORTED, 0)
    assert "after completion" in allowed.reason


def test_mirror_holds_for_its_duration_with_shadow_copies() -> None:
    s = spec(steps=(Mirror(20, 120), SetWeight(100)))
    p = position(s, at(s, 60))
    assert (p.step, p.canary_weight, p.mirror_percent, p.next_transition) == (0, 0, 20, T0 + 120)
    assert position(s, at(s, 120)).phase is Phase.COMPLETED


ANALYSED = spec(analysis=Analysis(interval=30, failure_limit=1, max_error_rate=0.02))


def test_a_timed_step_waits_for_the_verdicts_of_every_window_up_to_its_end() -> None:
    s = ANALYSED
    behind = position(s, at(s, 400, history=WindowHistory(9)))  # windows to 270s judged; step 1 ends 300s
    assert (behind.step, behind.phase) == (1, Phase.PROGRESSING)
    assert "analysis windows" in behind.reason
    assert behind.next_transition == T0 + 420  # the next window end, when the next verdict comes
    waiting = position(s, at(s, 290, history=WindowHistory(9)))
    assert waiting.next_transition == T0 + 300
    caught_up = position(s, at(s, 400, history=WindowHistory(10)))
    assert caught_up.step == 3
    # Verdicts for windows that have not ended yet are not evidence.
    assert position(s, at(s, 200, history=WindowHistory(100))).step == 1


def test_a_step_without_canary_traffic_has_no_gate() -> None:
    s = replace(ANALYSED, steps=(Pause(300), SetWeight(100)))
    assert position(s, at(s, 300)).phase is Phase.COMPLETED


def test_more_than_failure_limit_failed_windows_abort_at_the_window_end() -> None:
    s = ANALYSED  # failureLimit 1: the second failed window aborts
    one = position(s, at(s, 200, history=WindowHistory(6, (2,))))
    assert one.phase is Phase.PROGRESSING
    assert one.failed_windows == 1
    two = position(s, at(s, 400, history=WindowHistory(13, (2, 4))))
    assert (two.phase, two.step, two.canary_weight, two.since) == (Phase.ABORTED, 1, 0, T0 + 150)
    assert "failureLimit 1" in two.reason


def test_failed_windows_after_completion_do_not_abort() -> None:
    s = replace(ANALYSED, steps=(SetWeight(50), Pause(60), SetWeight(100)))
    p = position(s, at(s, 600, history=WindowHistory(20, (10, 11, 12))))
    assert p.phase is Phase.COMPLETED


def test_stalled_when_no_progress_past_the_deadline_but_not_aborted() -> None:
    s = replace(spec(), progress_deadline=120)
    waiting = Hold(T0, None, "canary-loading")
    early = position(s, at(s, 100, canary_loaded=False, holds=(waiting,)))
    assert (early.phase, early.next_transition) == (Phase.PROGRESSING, T0 + 120)
    late = position(s, at(s, 130, canary_loaded=False, holds=(waiting,)))
    assert (late.phase, late.step, late.canary_weight) == (Phase.STALLED, 0, 0)
    assert "canary to load" in late.reason
    # Once loaded it progresses again.
    assert position(s, at(s, 140, holds=(Hold(T0, T0 + 135, "canary-loading"),))).phase is Phase.PROGRESSING


def test_a_hand_pause_or_a_manual_gate_never_stalls() -> None:
    s = replace(spec(), progress_deadline=60)
    assert position(s, at(s, 5000)).phase is Phase.PAUSED  # the gate at step 3
    held = position(replace(s, paused=True), at(s, 5000, holds=(Hold(T0 + 10, None, "paused"),)))
    assert held.phase is Phase.PAUSED


def test_stalled_waiting_for_analysis_windows() -> None:
    s = replace(ANALYSED, progress_deadline=60)
    p = position(s, at(s, 400, history=WindowHistory(3)))
    assert p.phase is Phase.STALLED
    assert "analysis windows" in p.reason


def test_start_time_in_the_future() -> None:
    s = spec()
    p = position(s, Observed(start=T0, now=T0 - 10))
    assert (p.phase, p.step, p.canary_weight, p.next_transition) == (Phase.PROGRESSING, 0, 0, T0)
    aborted = position(replace(s, abort=True), Observed(start=T0, now=T0 - 10))
    assert (aborted.phase, aborted.canary_weight) == (Phase.ABORTED, 0)


# --- properties -------------------------------------------------------------------------------

steps_st = st.lists(
    st.one_of(
        st.builds(SetWeight, st.integers(0, 100)),
        st.builds(Pause, st.one_of(st.none(), st.integers(1, 600))),
        st.builds(Mirror, st.integers(1, 100), st.integers(1, 600)),
    ),
    min_size=1,
    max_size=6,
).map(tuple)

outcomes_st = st.lists(st.sampled_from(list(Outcome)), max_size=80)
holds_st = st.lists(
    st.tuples(st.integers(0, 2000), st.integers(1, 300), st.sampled_from(["paused", "canary-loading"])),
    max_size=3,
).map(lambda hs: tuple(Hold(T0 + a, T0 + a + d, k) for a, d, k in hs))  # type: ignore[arg-type]


def _spec_for(steps: tuple[Step, ...], promoted: int, limit: int) -> RolloutSpec:
    return spec(
        steps=steps,
        promoted_step=promoted,
        analysis=Analysis(interval=30, failure_limit=limit, max_error_rate=0.02),
        progress_deadline=900,
    )


def _rank(phase: Phase, step: int) -> tuple[int, int]:
    return (1 if phase in (Phase.COMPLETED, Phase.ABORTED) else 0, step)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    steps_st,
    outcomes_st,
    holds_st,
    st.integers(0, 6),
    st.integers(0, 3),
    st.lists(st.integers(0, 3000), min_size=2, max_size=6),
)
def test_progress_is_monotone_in_time(
    steps: tuple[Step, ...],
    outcomes: list[Outcome],
    holds: tuple[Hold, ...],
    promoted: int,
    limit: int,
    nows: list[int],
) -> None:
    s = _spec_for(steps, promoted, limit)
    history = WindowHistory.from_outcomes(outcomes)
    gates = {i: T0 for i in range(len(steps))}
    previous: tuple[int, int] | None = None
    terminal: Phase | None = None
    for n in sorted(nows):
        p = position(s, at(s, n, history=history, holds=holds, gates_opened=gates))
        rank = _rank(p.phase, p.step)
        if previous is not None:
            assert rank >= previous
        if terminal is not None:
            assert p.phase is terminal  # completed and aborted are final
        if p.phase in (Phase.COMPLETED, Phase.ABORTED):
            terminal = p.phase
        previous = rank


@settings(max_examples=150, deadline=None, derandomize=True)
@given(steps_st, st.integers(0, 80), st.integers(0, 80), st.integers(0, 3000), st.integers(0, 6))
def test_never_ahead_of_its_verdicts(
    steps: tuple[Step, ...], fewer: int, more: int, now: int, promoted: int
) -> None:
    s = _spec_for(steps, promoted, 0)
    lo, hi = sorted((fewer, more))
    p_lo = position(s, at(s, now, history=WindowHistory(lo)))
    p_hi = position(s, at(s, now, history=WindowHistory(hi)))
    assert p_lo.step <= p_hi.step
    if p_lo.phase is Phase.COMPLETED:
        assert p_hi.phase is Phase.COMPLETED


@settings(max_examples=60, deadline=None, derandomize=True)
@given(steps_st, outcomes_st, st.integers(0, 6), st.integers(0, 3), st.integers(1, 40), st.integers(0, 2))
def test_replicas_agree_whenever_they_started(
    steps: tuple[Step, ...], outcomes: list[Outcome], promoted: int, limit: int, ticks: int, late: int
) -> None:
    """A replica that watched every tick and one that starts at the end compute the same position."""
    s = replace(_spec_for(steps, promoted, limit), start_time=T0)
    end = T0 + ticks * 30
    watcher = new_state(s, T0)
    for k in range(ticks):
        now = T0 + (k + 1) * 30
        if k < len(outcomes):
            watcher = record_verdict(watcher, k, WindowVerdict(outcomes[k], ""))
        watcher = observe(watcher, s, now, canary_loaded=True)
        watcher = settle(watcher, position(s, observed(watcher, s, now, canary_loaded=True)))
    newcomer = new_state(s, end - late)
    for k in range(min(ticks, len(outcomes))):
        newcomer = record_verdict(newcomer, k, WindowVerdict(outcomes[k], ""))
    # Gates opened before the end count from when each replica first saw them, so give the newcomer
    # the watcher's record (the fleet shares spec.promotedStep, the instant is what a pod persisted).
    newcomer = replace(observe(newcomer, s, end, canary_loaded=True), gates_opened=watcher.gates_opened)
    a = position(s, observed(watcher, s, end, canary_loaded=True))
    b = position(s, observed(newcomer, s, end, canary_loaded=True))
    assert (a.phase, a.step, a.canary_weight, a.mirror_percent) == (
        b.phase,
        b.step,
        b.canary_weight,
        b.mirror_percent,
    )
