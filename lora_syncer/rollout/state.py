"""What a pod persists about a rollout (under --state-dir) so a restart resumes at the same step, never ahead.

Pure: the caller reads and writes the file; this module turns observations into a new state, the
state into the position function's inputs, and the state to and from JSON. A file that is corrupt,
of another version, or of another rollout (identity) is ignored with a reason: starting over from
the document is safe, because the position is recomputed from the start instant.

Bounds keep the file small whatever happens: failed-window indices (the first MAX_FAILED; far
more than any failureLimit), recent verdicts for display (MAX_RECENT), holds (MAX_HOLDS: beyond
it the two oldest merge into one spanning both, which can only put the rollout behind).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from lora_syncer.rollout.schedule import Hold, HoldKind, Observed, Phase, RolloutPosition, WindowHistory
from lora_syncer.rollout.spec import Pause, RolloutSpec, identity
from lora_syncer.rollout.verdict import Outcome, WindowVerdict

STATE_VERSION = 1
MAX_FAILED = 1024
MAX_RECENT = 32
MAX_HOLDS = 256


@dataclass(frozen=True)
class RecordedVerdict:
    window: int
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class RolloutState:
    identity: str
    name: str
    first_seen: float
    history: WindowHistory = field(default_factory=WindowHistory)
    recent: tuple[RecordedVerdict, ...] = ()
    holds: tuple[Hold, ...] = ()
    gates_opened: tuple[tuple[int, float], ...] = ()
    abort_at: float | None = None
    abort_reason: str | None = None
    canary_failed_at: float | None = None
    control_paused: bool = False
    control_abort: bool = False
    last_phase: Phase | None = None


def new_state(spec: RolloutSpec, now: float) -> RolloutState:
    """The state of a rollout first seen at `now`."""
    return RolloutState(identity=identity(spec), name=spec.name, first_seen=now)


def start_of(spec: RolloutSpec, state: RolloutState) -> float:
    """The start instant: spec.startTime (the same on every replica) or this pod's first-seen instant."""
    return spec.start_time if spec.start_time is not None else state.first_seen


def record_verdict(
    state: RolloutState, window: int, verdict: WindowVerdict, *, gap_reason: str = "the pod was not running"
) -> RolloutState:
    """Add the verdict of window `window`. Windows already judged are left as they are.

    Windows skipped (the pod was not running, so their counts are gone) count as judged with no
    verdict, `gap_reason` saying why: otherwise a restart would hold a timed step for ever.
    """
    judged = state.history.judged
    if window < judged:
        return state
    failed = state.history.failed
    if verdict.outcome is Outcome.FAIL and len(failed) < MAX_FAILED:
        failed = (*failed, window)
    recent = list(state.recent)
    if window > judged:
        recent.append(
            RecordedVerdict(
                judged,
                Outcome.NO_VERDICT,
                f"windows {judged}..{window - 1} not judged: {gap_reason}",
            )
        )
    recent.append(RecordedVerdict(window, verdict.outcome, verdict.reason))
    return replace(
        state,
        history=WindowHistory(window + 1, failed),
        recent=tuple(recent[-MAX_RECENT:]),
    )


def _set_hold(holds: tuple[Hold, ...], kind: HoldKind, on: bool, now: float) -> tuple[Hold, ...]:
    open_ = [i for i, h in enumerate(holds) if h.kind == kind and h.end is None]
    if on and not open_:
        holds = (*holds, Hold(now, None, kind))
    elif not on and open_:
        i = open_[0]
        holds = (*holds[:i], replace(holds[i], end=max(now, holds[i].start)), *holds[i + 1 :])
    while len(holds) > MAX_HOLDS:
        a, b = holds[0], holds[1]
        # The merged hold spans the gap too: more held time puts the rollout behind, never ahead.
        # It counts as a canary hold, which the stall clock does not forgive.
        holds = (
            Hold(
                min(a.start, b.start),
                None if a.end is None or b.end is None else max(a.end, b.end),
                "canary-loading",
            ),
            *holds[2:],
        )
    return holds


def observe(
    state: RolloutState,
    spec: RolloutSpec,
    now: float,
    *,
    canary_loaded: bool,
    canary_failed: bool = False,
) -> RolloutState:
    """Fold what the pod sees now into the state: holds open and close, gates and aborts first seen."""
    holds = _set_hold(state.holds, "paused", spec.paused or state.control_paused, now)
    holds = _set_hold(holds, "canary-loading", not canary_loaded, now)
    gates = dict(state.gates_opened)
    for i, step in enumerate(spec.steps):
        if i <= spec.promoted_step and i not in gates and isinstance(step, Pause) and step.duration is None:
            gates[i] = now
    abort_at, reason = state.abort_at, state.abort_reason
    if abort_at is None and (spec.abort or state.control_abort):
        abort_at, reason = now, "aborted by hand" + ("" if spec.abort else " (control endpoint)")
    failed_at = state.canary_failed_at
    if failed_at is None and canary_failed:
        failed_at = now
    return replace(
        state,
        holds=holds,
        gates_opened=tuple(sorted(gates.items())),
        abort_at=abort_at,
        abort_reason=reason,
        canary_failed_at=failed_at,
    )


def set_control(
    state: RolloutState, *, paused: bool | None = None, abort: bool | None = None
) -> RolloutState:
    """The control endpoint: hold or release, or abort (an abort cannot be taken back)."""
    return replace(
        state,
        control_paused=state.control_paused if paused is None else paused,
        control_abort=state.control_abort or bool(abort),
    )


def settle(state: RolloutState, position: RolloutPosition) -> RolloutState:
    """Remember the phase, and make an abort final: raising failureLimit later must not revive it."""
    if position.phase is Phase.ABORTED and state.abort_at is None:
        return replace(
            state, last_phase=position.phase, abort_at=position.since, abort_reason=position.reason
        )
    return replace(state, last_phase=position.phase)


def observed(
    state: RolloutState, spec: RolloutSpec, now: float, *, canary_loaded: bool, stable_loaded: bool = True
) -> Observed:
    """The position function's inputs from the state."""
    return Observed(
        start=start_of(spec, state),
        now=now,
        history=state.history,
        holds=state.holds,
        canary_loaded=canary_loaded,
        canary_failed_at=state.canary_failed_at,
        stable_loaded=stable_loaded,
        gates_opened=dict(state.gates_opened),
        paused=state.control_paused,
        abort_at=state.abort_at,
        abort_reason=state.abort_reason,
    )


def to_json(state: RolloutState) -> str:
    body: dict[str, Any] = {
        "version": STATE_VERSION,
        "identity": state.identity,
        "name": state.name,
        "firstSeen": state.first_seen,
        "windows": {"judged": state.history.judged, "failed": list(state.history.failed)},
        "recent": [
            {"window": r.window, "outcome": r.outcome.value, "reason": r.reason} for r in state.recent
        ],
        "holds": [{"start": h.start, "end": h.end, "kind": h.kind} for h in state.holds],
        "gatesOpened": [[i, t] for i, t in state.gates_opened],
        "abortAt": state.abort_at,
        "abortReason": state.abort_reason,
        "canaryFailedAt": state.canary_failed_at,
        "controlPaused": state.control_paused,
        "controlAbort": state.control_abort,
        "lastPhase": state.last_phase.value if state.last_phase is not None else None,
    }
    return json.dumps(body, sort_keys=True, indent=1)


def _instant(value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("an instant must be a finite number")
    return float(value)


def _req_instant(value: Any) -> float:
    out = _instant(value)
    assert out is not None
    return out


def _hold(raw: Any) -> Hold:
    kind = raw["kind"]
    if kind not in ("paused", "canary-loading"):
        raise ValueError(f"unknown hold kind {kind!r}")
    start, end = _req_instant(raw["start"]), _instant(raw["end"], optional=True)
    if end is not None and end < start:
        raise ValueError("a hold ends before it starts")
    return Hold(start, end, kind)


def from_json(text: str, expected_identity: str) -> tuple[RolloutState | None, str | None]:
    """The state in `text` if it is valid and of this rollout; else (None, why it was ignored)."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        version = raw.get("version")
        if version != STATE_VERSION:
            return None, f"state version {version!r} is not {STATE_VERSION}: starting over"
        if raw["identity"] != expected_identity:
            return (
                None,
                f"state is of another rollout (identity {raw['identity']!r}, now {expected_identity!r}): starting over",
            )
        windows = raw["windows"]
        judged = int(windows["judged"])
        failed = tuple(int(k) for k in windows["failed"])
        if judged < 0 or any(k < 0 or k >= judged for k in failed) or list(failed) != sorted(set(failed)):
            raise ValueError("window history is inconsistent")
        phase = raw.get("lastPhase")
        state = RolloutState(
            identity=str(raw["identity"]),
            name=str(raw["name"]),
            first_seen=_req_instant(raw["firstSeen"]),
            history=WindowHistory(judged, failed[:MAX_FAILED]),
            recent=tuple(
                RecordedVerdict(int(r["window"]), Outcome(r["outcome"]), str(r["reason"]))
                for r in raw["recent"]
            )[-MAX_RECENT:],
            holds=tuple(
                _hold(h) for h in raw["holds"]
            ),  # never trimmed here: dropping a hold would put the rollout ahead
            gates_opened=tuple(sorted((int(i), _req_instant(t)) for i, t in raw["gatesOpened"])),
            abort_at=_instant(raw.get("abortAt"), optional=True),
            abort_reason=raw.get("abortReason") if isinstance(raw.get("abortReason"), str) else None,
            canary_failed_at=_instant(raw.get("canaryFailedAt"), optional=True),
            control_paused=raw.get("controlPaused") is True,
            control_abort=raw.get("controlAbort") is True,
            last_phase=Phase(phase) if phase is not None else None,
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        # json.JSONDecodeError is a ValueError.
        return None, f"state file is corrupt ({exc.__class__.__name__}: {exc}): starting over"
    return state, None
