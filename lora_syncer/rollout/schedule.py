"""Where a rollout is: the position function (pure, deterministic).

`position(spec, observed)` walks the steps from the rollout's start instant, with no memory of
its own: a replica that starts mid-rollout, or after completion, computes the same step as one
that watched it all, given the same inputs. The inputs a pod must persist to get there (first-seen
instant, holds, gate openings, abort instant, window verdicts) are in `Observed`; `state.py`
records them.

Time model. Step clocks run in *effective time*: real time minus every hold (a hand pause, or the
canary not being loaded). A transition due while a hold is in force happens when it ends, so
nothing advances while paused and no weight is sent to a canary that is not loaded.

- `setWeight` takes effect and passes at once; `pause: {duration}` and `mirror` hold their
  duration of effective time; `pause: {}` passes when spec.promotedStep >= its index, at the
  instant that was first seen (`Observed.gates_opened`, else now).
- With an analysis, a timed step in which the canary gets traffic passes only once every window
  up to its end has a verdict (of any outcome): the rollout is never ahead of its evidence. Windows
  are fixed: window k runs from start + k x interval to start + (k + 1) x interval.
- More than failureLimit FAILED windows abort the rollout at the end of the window that made it
  so, unless the rollout had completed by then.
- A hand abort (spec.abort or the control endpoint) or a canary that failed to load aborts at the
  instant it was first seen; after completion that is refused unless the stable is loaded.
- progressDeadline: the current step has gone that long past its due instant (counting neither
  hand pauses nor waits at a manual gate): phase `stalled`, which is reported, not acted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from lora_syncer.rollout.spec import Mirror, Pause, RolloutSpec, SetWeight
from lora_syncer.rollout.verdict import Outcome

HoldKind = Literal["paused", "canary-loading"]


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    STALLED = "stalled"


@dataclass(frozen=True)
class Hold:
    """An interval in which step clocks stood still; `end` None while it lasts."""

    start: float
    end: float | None
    kind: HoldKind


@dataclass(frozen=True)
class WindowHistory:
    """Which windows have a verdict: 0..judged-1, and the indices of those that FAILED (ascending).

    Only failures matter to the position, so the history stays small however long a rollout runs.
    """

    judged: int = 0
    failed: tuple[int, ...] = ()

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[Outcome]) -> WindowHistory:
        return cls(len(outcomes), tuple(i for i, o in enumerate(outcomes) if o is Outcome.FAIL))


@dataclass(frozen=True)
class Observed:
    """Everything besides the spec that the position depends on."""

    start: float
    now: float
    history: WindowHistory = field(default_factory=WindowHistory)
    holds: Sequence[Hold] = ()
    canary_loaded: bool = True
    canary_failed_at: float | None = None
    stable_loaded: bool = True
    gates_opened: Mapping[int, float] = field(default_factory=dict)
    paused: bool = False  # the control endpoint's pause, on top of spec.paused
    abort_at: float | None = (
        None  # when an abort (spec, control endpoint, or a settled analysis failure) was first seen
    )
    abort_reason: str | None = None  # why, when the state recorded it


@dataclass(frozen=True)
class RolloutPosition:
    """The rollout at `now`. `step` is len(steps) once completed; `next_transition` says when to wake."""

    phase: Phase
    step: int
    canary_weight: int
    mirror_percent: int
    reason: str
    since: float
    next_transition: float | None = None
    failed_windows: int = 0


_INF = math.inf


class _Clock:
    """Effective time over [start, now]: real time minus the union of the given holds."""

    def __init__(self, start: float, now: float, holds: Sequence[tuple[float, float | None]]) -> None:
        spans: list[tuple[float, float]] = []
        for h_start, h_end in holds:
            lo = max(h_start, start)
            hi = _INF if h_end is None or h_end > now else h_end
            if lo > now or hi <= lo:
                continue
            spans.append((lo, hi))
        spans.sort()
        merged: list[list[float]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.held_now = bool(merged) and merged[-1][1] == _INF
        # Unheld segments (a, b, effective time at a); the last is open-ended unless held now.
        self.segments: list[tuple[float, float, float]] = []
        cursor, eff = start, 0.0
        for lo, hi in merged:
            if lo > cursor:
                self.segments.append((cursor, lo, eff))
                eff += lo - cursor
            cursor = hi
        if not self.held_now:
            self.segments.append((cursor, _INF, eff))

    def effective(self, t: float) -> float:
        """Effective time at real instant t."""
        total = 0.0
        for a, b, _ in self.segments:
            if t <= a:
                break
            total += min(t, b) - a
        return total

    def real(self, e: float) -> float | None:
        """The last real instant at effective time e (the end of a hold in force then); None if unknown yet."""
        for a, b, ea in self.segments:
            if e < ea + (b - a):
                return a + max(0.0, e - ea)
        return None


@dataclass(frozen=True)
class _Walk:
    """The steps walked up to some instant."""

    step: int
    completed_at: float | None
    entered: bool
    weight: int
    mirror: int
    since: float
    due: float | None  # when the current step's clock runs out (None: unknown or no clock)
    waiting: str  # what the current step waits for
    expected: float  # effective seconds the current step is meant to take (for the stall clock)
    gate: bool  # waiting for a hand promotion


def _holds(
    spec: RolloutSpec, obs: Observed, now: float, kinds: tuple[HoldKind, ...]
) -> list[tuple[float, float | None]]:
    out: list[tuple[float, float | None]] = [(h.start, h.end) for h in obs.holds if h.kind in kinds]
    open_kinds = {h.kind for h in obs.holds if h.end is None or h.end > now}
    # A hold in force now but not yet recorded counts from now: it changes the phase, not the past.
    if "paused" in kinds and (spec.paused or obs.paused) and "paused" not in open_kinds:
        out.append((now, None))
    if "canary-loading" in kinds and not obs.canary_loaded and "canary-loading" not in open_kinds:
        out.append((now, None))
    return out


def _judged_until(spec: RolloutSpec, obs: Observed, now: float) -> float:
    if spec.analysis is None:
        return _INF
    interval = spec.analysis.interval
    complete = math.floor((now - obs.start) / interval) if now >= obs.start else 0
    return obs.start + min(obs.history.judged, max(0, complete)) * interval


def _walk(spec: RolloutSpec, obs: Observed, now: float) -> _Walk:
    clock = _Clock(obs.start, now, _holds(spec, obs, now, ("paused", "canary-loading")))
    judged_until = _judged_until(spec, obs, now)
    e = 0.0
    weight = 0
    last = obs.start
    for i, step in enumerate(spec.steps):
        entry = clock.real(e)
        if entry is None or entry > now:
            why = "the canary to load" if not obs.canary_loaded else "the hold to end"
            return _Walk(i, None, False, weight, 0, last, None, why, 0.0, False)
        last = entry
        if isinstance(step, SetWeight):
            weight = step.weight
            continue
        mirror = step.percent if isinstance(step, Mirror) else 0
        if isinstance(step, Pause) and step.duration is None:
            if spec.promoted_step < i:
                return _Walk(
                    i, None, True, weight, 0, entry, None, f"promotion (spec.promotedStep >= {i})", 0.0, True
                )
            opened = min(obs.gates_opened.get(i, now), now)
            x = max(e, clock.effective(opened))
            expected = 0.0
        else:
            duration = step.duration if isinstance(step, Pause | Mirror) else 0
            x = e + (duration or 0)
            expected = float(duration or 0)
        exit_ = clock.real(x)
        if exit_ is None or exit_ > now:
            why = (
                "its duration"
                if not clock.held_now
                else "the canary to load"
                if not obs.canary_loaded
                else "the hold to end"
            )
            return _Walk(i, None, True, weight, mirror, entry, exit_, why, expected, False)
        carries_traffic = weight > 0 or mirror > 0
        if carries_traffic and exit_ > judged_until:
            return _Walk(
                i, None, True, weight, mirror, entry, exit_, "analysis windows up to its end", expected, False
            )
        e = x
        last = exit_
    return _Walk(len(spec.steps), last, True, 100, 0, last, None, "", 0.0, False)


def _at(spec: RolloutSpec, obs: Observed, instant: float) -> _Walk:
    """The walk as it stood at an earlier instant (for the step an abort happened at)."""
    return _walk(spec, obs, max(obs.start, instant))


def _window_end(spec: RolloutSpec, obs: Observed, k: int) -> float:
    assert spec.analysis is not None
    return obs.start + (k + 1) * spec.analysis.interval


def position(spec: RolloutSpec, obs: Observed) -> RolloutPosition:
    """The phase, step, weights and next wake-up of `spec` at `obs.now`."""
    now = obs.now
    if now < obs.start:
        if spec.abort or obs.abort_at is not None or obs.canary_failed_at is not None:
            why = f"aborted before the start; traffic stays on {spec.stable!r}"
            return RolloutPosition(Phase.ABORTED, 0, 0, 0, why, now)
        return RolloutPosition(
            Phase.PROGRESSING, 0, 0, 0, "not started: startTime is in the future", now, obs.start
        )
    walk = _walk(spec, obs, now)
    completed_at = walk.completed_at

    # Analysis abort: the window that took the failures past failureLimit.
    failures = 0
    abort: tuple[float, str] | None = None
    if spec.analysis is not None:
        interval = spec.analysis.interval
        counted = [
            k for k in obs.history.failed if k < obs.history.judged and _window_end(spec, obs, k) <= now
        ]
        failures = len(counted)
        limit = spec.analysis.failure_limit
        if failures > limit:
            k = counted[limit]
            end = _window_end(spec, obs, k)
            if completed_at is None or end <= completed_at:
                failures = sum(1 for f in counted if _window_end(spec, obs, f) <= end)
                abort = (
                    end,
                    f"analysis failed: {failures} failed windows > failureLimit {limit} "
                    f"(window {k}, ending {interval * (k + 1)}s after start)",
                )

    # Hand aborts and a canary that failed to load: the earliest first-seen instant.
    hand: list[tuple[float, str]] = []
    if obs.abort_at is not None or spec.abort:
        hand.append(
            (obs.abort_at if obs.abort_at is not None else now, obs.abort_reason or "aborted by hand")
        )
    if obs.canary_failed_at is not None:
        hand.append((obs.canary_failed_at, f"the canary {spec.canary!r} failed to load"))
    refused = ""
    for when, why in sorted(hand):
        if completed_at is not None and completed_at <= when:
            if not obs.stable_loaded:
                refused = (
                    f"{why}, refused: the rollout completed and the stable {spec.stable!r} is not loaded"
                )
                continue
            why += " after completion"
        if abort is None or when < abort[0]:
            abort = (when, why)
        break

    if abort is not None:
        at = _at(spec, obs, abort[0])
        return RolloutPosition(
            Phase.ABORTED,
            at.step,
            0,
            0,
            abort[1] + f"; traffic back to {spec.stable!r}",
            abort[0],
            None,
            failures,
        )

    if completed_at is not None:
        reason = refused or f"every step passed: {spec.canary!r} serves 100%"
        return RolloutPosition(Phase.COMPLETED, walk.step, 100, 0, reason, completed_at, None, failures)

    weight = walk.weight
    where = f"steps[{walk.step}]"
    if spec.paused or obs.paused:
        who = "spec.paused" if spec.paused else "the control endpoint"
        return RolloutPosition(
            Phase.PAUSED,
            walk.step,
            weight,
            walk.mirror,
            f"held at {where} by {who}",
            walk.since,
            None,
            failures,
        )
    if walk.gate:
        return RolloutPosition(
            Phase.PAUSED,
            walk.step,
            weight,
            0,
            f"{where} waits for {walk.waiting}",
            walk.since,
            None,
            failures,
        )

    # The stall clock: real time since the step began, minus hand pauses, minus what the step is
    # meant to take. Holds for the canary count: waiting for it is lack of progress.
    wake: list[float] = []
    if walk.due is not None and walk.due > now:
        wake.append(walk.due)
    elif walk.due is not None and spec.analysis is not None:
        # Waiting for verdicts: the window covering the due instant, or (if the pod is behind and
        # that window's end has passed) the next window end, when the next verdict is recorded.
        interval = spec.analysis.interval
        covering = obs.start + math.ceil((walk.due - obs.start) / interval) * interval
        upcoming = obs.start + (math.floor((now - obs.start) / interval) + 1) * interval
        wake.append(max(covering, upcoming))
    deadline = spec.progress_deadline
    if deadline is not None:
        user = _Clock(obs.start, now, _holds(spec, obs, now, ("paused",)))
        overdue = user.effective(now) - user.effective(walk.since) - walk.expected
        if overdue >= deadline:
            return RolloutPosition(
                Phase.STALLED,
                walk.step,
                weight,
                walk.mirror,
                f"no progress for {deadline}s past due: {where} waits for {walk.waiting}",
                walk.since,
                None,
                failures,
            )
        wake.append(now + (deadline - overdue))
    nxt = min(wake) if wake else None
    return RolloutPosition(
        Phase.PROGRESSING,
        walk.step,
        weight,
        walk.mirror,
        f"{where} waits for {walk.waiting}",
        walk.since,
        nxt,
        failures,
    )
