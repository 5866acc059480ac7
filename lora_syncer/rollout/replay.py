"""Replaying the analysis windows a pod did not see, from fleet-wide answers (pure).

A pod that starts (or restarts without its state) after a rollout began has no counts of the
windows before it started. With `analysis.prometheus` it does not need them: the queries are
evaluated at each window's end (`time=`), so the answers are the ones every replica got. The
controller replays those windows in order, from the rollout's start: for window k it asks
`window_at` what the schedule had in force then (given the verdicts of windows 0..k-1), asks
Prometheus once per query at the window's end when the canary had traffic (I/O, in the
controller), and records `replayed_verdict`. Step, weights and verdicts then come out as on a
replica that was there all along (`replay` folds a whole sequence of answers, for tests and
reasoning).

What the pod cannot replay, and so differs from a watcher's verdict:
- this pod's own counts of those windows (it has none): checks without a Prometheus query
  (`maxEmptyRate`, `maxLengthRatio`, and `maxErrorRate`/`maxLatencyRatio` without their query)
  give no verdict, and the "stable is sick" rule never applies;
- webhook answers (a webhook judges the present; it is not asked about the past);
- holds and gate openings of other pods (each pod records its own, from its first sight).

A replayed window whose canary had no traffic is no verdict without a query, exactly as live.
A window is judged only when the rollout had not completed or aborted by its end (`counts`), live
or replayed, so both stop at the same window: later windows never count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from lora_syncer.rollout.schedule import Phase, RolloutPosition, WindowHistory, position
from lora_syncer.rollout.spec import RolloutSpec
from lora_syncer.rollout.state import RolloutState, observed, record_verdict, start_of
from lora_syncer.rollout.verdict import External, TargetCounts, Window, WindowVerdict, judge

# At most this many windows per rollout are asked of Prometheus when a pod starts (two queries
# each at most): 1000 windows of 30 s are 8 h of a rollout held at one step. The windows beyond
# are recorded as no verdict; an abort in them is still adopted through lora_syncer_rollout_phase.
MAX_REPLAY_WINDOWS = 1000

# Bound on positions sampled inside one window (steps with no traffic can pass mid-window).
_MAX_SAMPLES = 64
_FINISHED = (Phase.COMPLETED, Phase.ABORTED)


@dataclass(frozen=True)
class ReplayWindow:
    """Window `index` [start, end) and the highest canary weight and mirror percent in force in it."""

    index: int
    start: float
    end: float
    canary_weight: int
    mirror_percent: int

    @property
    def carries_traffic(self) -> bool:
        """Whether the canary had traffic: otherwise the window is no verdict and nothing is asked."""
        return self.canary_weight > 0 or self.mirror_percent > 0


def _upto(history: WindowHistory, judged: int) -> WindowHistory:
    judged = max(0, min(judged, history.judged))
    return WindowHistory(judged, tuple(k for k in history.failed if k < judged))


def _position(
    spec: RolloutSpec, state: RolloutState, at: float, history: WindowHistory, stable_loaded: bool
) -> RolloutPosition:
    # What had been seen by `at`: an abort or a canary failure this pod first saw later (a hand
    # abort in the document, an abort adopted from the fleet when it started) had not happened.
    if state.abort_at is not None and state.abort_at > at:
        spec = replace(spec, abort=False)
        state = replace(state, abort_at=None, abort_reason=None, control_abort=False)
    if state.canary_failed_at is not None and state.canary_failed_at > at:
        state = replace(state, canary_failed_at=None)
    # The canary counts as loaded in the past: this pod's own load wait is a hold from its first sight.
    obs = observed(state, spec, at, canary_loaded=True, stable_loaded=stable_loaded)
    return position(spec, replace(obs, history=history))


def counts(spec: RolloutSpec, state: RolloutState, index: int, *, stable_loaded: bool = True) -> bool:
    """Whether window `index` is judged: the rollout had not completed or aborted by its end, given
    the verdicts of the windows before it. The same rule for a live window and a replayed one."""
    analysis = spec.analysis
    assert analysis is not None, "only a rollout with an analysis has windows"
    end = start_of(spec, state) + (index + 1) * analysis.interval
    at_end = _position(spec, state, end, _upto(state.history, index), stable_loaded)
    return at_end.phase not in _FINISHED


def window_at(
    spec: RolloutSpec, state: RolloutState, index: int, *, stable_loaded: bool = True
) -> ReplayWindow | None:
    """Window `index` as the schedule had it, from the verdicts of windows 0..index-1 in `state`.

    None when the rollout had completed or aborted by the window's end (it is never judged).
    The weight is the highest in force at any time in the window, as a live pod records it: the
    weight before window index-1's verdict was known (a live pod learns it after the window ends),
    after it, and at every transition inside the window.
    """
    analysis = spec.analysis
    assert analysis is not None, "only a rollout with an analysis has windows"
    start = start_of(spec, state) + index * analysis.interval
    end = start + analysis.interval
    if not counts(spec, state, index, stable_loaded=stable_loaded):
        return None
    history = _upto(state.history, index)
    at_start = _position(spec, state, start, history, stable_loaded)
    before = _position(spec, state, start, _upto(history, index - 1), stable_loaded)
    weight = max(at_start.canary_weight, before.canary_weight)
    mirror = max(at_start.mirror_percent, before.mirror_percent)
    t, pos = start, at_start
    for _ in range(_MAX_SAMPLES):
        nxt = pos.next_transition
        if nxt is None or nxt <= t or nxt >= end or pos.phase in _FINISHED:
            break
        t, pos = nxt, _position(spec, state, nxt, history, stable_loaded)
        weight, mirror = max(weight, pos.canary_weight), max(mirror, pos.mirror_percent)
    return ReplayWindow(index, start, end, weight, mirror)


def replayed_verdict(spec: RolloutSpec, window: ReplayWindow, external: External | None) -> WindowVerdict:
    """The verdict of a replayed window: no counts of this pod, only the fleet-wide answers."""
    assert spec.analysis is not None
    empty = TargetCounts()
    return judge(Window(empty, empty, window.canary_weight, window.mirror_percent), spec.analysis, external)


@dataclass(frozen=True)
class Replayed:
    """The state after a replay, the windows replayed in order, and whether the rollout had finished."""

    state: RolloutState
    windows: tuple[ReplayWindow, ...]
    verdicts: tuple[WindowVerdict, ...]
    finished: bool


def replay(
    spec: RolloutSpec,
    state: RolloutState,
    answers: Mapping[int, External],
    until: int,
    *,
    stable_loaded: bool = True,
) -> Replayed:
    """Windows state.history.judged .. until-1 judged in order from `answers` (window index → the
    Prometheus answers at its end; a window absent was not asked, as one without canary traffic)."""
    windows: list[ReplayWindow] = []
    verdicts: list[WindowVerdict] = []
    for k in range(state.history.judged, until):
        window = window_at(spec, state, k, stable_loaded=stable_loaded)
        if window is None:
            return Replayed(state, tuple(windows), tuple(verdicts), True)
        verdict = replayed_verdict(spec, window, answers.get(k) if window.carries_traffic else None)
        state = record_verdict(state, k, verdict)
        windows.append(window)
        verdicts.append(verdict)
    return Replayed(state, tuple(windows), tuple(verdicts), False)
