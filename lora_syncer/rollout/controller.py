"""The rollout controller: the I/O shell around the pure core (`schedule`, `verdict`, `state`, `weights`).

One supervised task (`rollout-controller`) of `lora-syncer run` and `lora-syncer proxy`. For
every AdapterRollout of the rules file it:

1. reads the document on its own (`document.rollouts_from_documents`): a broken neighbour never
   stops a valid document's `abort: true`; a document that turns invalid keeps its last valid
   version in force (as a bad file keeps the last good one), with the error in `/status`;
2. folds what the pod sees into the persisted state (`state.observe`): holds (a hand pause, the
   canary not loaded yet), gates opened, aborts first seen, a canary that failed to load;
3. judges each analysis window that ended (`verdict.judge`) from this pod's per-target samples
   (`proxy.telemetry`), plus the external results of an `Analyzer` when the analysis names
   Prometheus or a webhook; with `analysis.prometheus`, the windows that began before this pod
   tracked the rollout are replayed from Prometheus (`replay`), so a pod started mid-rollout or
   after completion arrives at the verdicts, step and weights of one that was there all along;
4. computes the position (`schedule.position`), persists the state atomically (`store`), and
   hands the routes (`weights.overrides`) to the proxy as an input of its route table;
5. sleeps until the next transition, the next window end, a file change or a control call
   (at most `TICK` seconds, so the canary's load state is seen promptly).

Every transition is one log line with the values that decided it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from lora_syncer.config.parsing import decode, load_text
from lora_syncer.config.source import Loaded
from lora_syncer.reloading import ReloadingFile, WatchOptions, Wording
from lora_syncer.rollout.document import RolloutResult, rollouts_from_documents
from lora_syncer.rollout.metrics import RolloutMetrics
from lora_syncer.rollout.replay import MAX_REPLAY_WINDOWS, counts, replayed_verdict, window_at
from lora_syncer.rollout.schedule import Phase, RolloutPosition, position
from lora_syncer.rollout.spec import RolloutSpec, identity
from lora_syncer.rollout.state import (
    RolloutState,
    new_state,
    observe,
    observed,
    record_verdict,
    set_control,
    settle,
    start_of,
)
from lora_syncer.rollout.store import StateStore
from lora_syncer.rollout.verdict import External, Outcome, TargetCounts, Window, WindowVerdict, judge
from lora_syncer.rollout.weights import RolloutRoute, overrides
from lora_syncer.supervisor import Supervisor

log = structlog.get_logger("lora_syncer.rollout")

TASK = "rollout-controller"
TICK = 1.0  # longest sleep: canary load state and hand edits are seen within this
# A window is judged this long after it ends, so requests finishing at its edge are in it.
SETTLE = 0.05
EXTERNAL_TIMEOUT = 10.0
# With analysis.prometheus a window is asked this long after it ends: a scrape is stamped when it
# starts and lands when it ends, so asking at once could miss samples a pod asking later sees.
PROMETHEUS_LAG = 2.0
# Wall-clock bound on one replay from Prometheus (besides MAX_REPLAY_WINDOWS): the first pass runs
# before the proxy binds, so a slow Prometheus must not hold a pod's start-up for long.
REPLAY_BUDGET = 60.0
MAX_WEIGHT_CHANGES = 256

WORDING = Wording(
    rejected_keeping="rules file unreadable for rollouts; the last AdapterRollout documents stay in force",
    rejected_nothing="rules file unreadable for rollouts; no rollout runs until it is fixed",
    valid_again="rules file readable for rollouts again",
)


class Analyzer(Protocol):
    """Results from outside this pod for one window (Prometheus queries, a webhook)."""

    async def external(self, spec: RolloutSpec, window_start: float, window_end: float) -> External: ...

    async def fleet_aborted(self, spec: RolloutSpec, at: float) -> bool | None:
        """Whether any replica reports `spec` aborted at `at` (None: unknown)."""
        ...

    async def history(
        self, spec: RolloutSpec, window_start: float, window_end: float
    ) -> tuple[External, str | None]:
        """Prometheus's answers for a past window, and why it gave no answer at all (None if it did)."""
        ...


class LocalOnly:
    """The default analyzer: nothing outside this pod is asked (Prometheus/webhook checks give no verdict)."""

    async def external(self, spec: RolloutSpec, window_start: float, window_end: float) -> External:
        return External()

    async def history(
        self, spec: RolloutSpec, window_start: float, window_end: float
    ) -> tuple[External, str | None]:
        return External(), "this process asks no Prometheus"

    async def fleet_aborted(self, spec: RolloutSpec, at: float) -> bool | None:
        return None


class WindowCounts(Protocol):
    def counts(self, alias: str, target: str, start: float, end: float) -> TargetCounts: ...


class AdapterView(Protocol):
    """What the syncer knows of an adapter (the `proxy` command has no syncer: everything counts as loaded)."""

    def loaded(self, name: str) -> bool: ...

    def failed(self, name: str) -> str | None:
        """Why `name` failed to load or to warm up, or None."""
        ...


class AssumeLoaded:
    def loaded(self, name: str) -> bool:
        return True

    def failed(self, name: str) -> str | None:
        return None


class _NoReloadMetrics:
    def reloaded(self, outcome: str) -> None:
        pass

    def valid(self, ok: bool) -> None:
        pass

    def good(self, at: float) -> None:
        pass


def parse_rollout_documents(raw: bytes, filename: str) -> list[RolloutResult]:
    """Every AdapterRollout of a rules file, each validated on its own. Raises ConfigError only when
    the file is not YAML at all."""
    docs = load_text(decode(raw, filename), filename)
    return rollouts_from_documents(docs)


@dataclass
class _Tracked:
    """One rollout as this pod runs it."""

    spec: RolloutSpec
    state: RolloutState
    position: RolloutPosition | None = None
    state_note: str | None = None  # why a saved state was ignored
    document_issues: tuple[str, ...] = ()  # errors of the document now in the file (last valid in force)
    # (instant, canary weight, mirror percent) whenever they changed: the weight a window saw.
    weights: list[tuple[float, int, int]] = field(default_factory=list)
    last_verdict: WindowVerdict | None = None
    persist_error: str | None = None
    fleet_checked: float = 0.0  # when Prometheus was last asked whether another replica aborted
    tracked_at: float = 0.0  # when this pod began tracking this rollout (identity)
    replay: _Replay | None = None  # set once windows were replayed from Prometheus


@dataclass
class _Replay:
    """What replaying the windows before this pod tracked a rollout did (`replay` in /status)."""

    windows: int = 0  # windows judged from Prometheus's answers
    asked: int = 0  # of them, windows the canary had traffic in (asked of Prometheus)
    without_value: int = 0  # of those, windows where a query gave no value (no data, NaN, empty)
    not_replayed: int = 0  # windows recorded as no verdict instead (cap, budget, no answer)
    stopped: str | None = None  # why the replay stopped asking

    def render(self) -> dict[str, Any]:
        return {
            "replayedWindows": self.windows,
            "askedWindows": self.asked,
            "windowsWithoutValue": self.without_value,
            "notReplayed": self.not_replayed,
            "stopReason": self.stopped,
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class RolloutController:
    def __init__(
        self,
        rules_path: Path,
        *,
        apply_routes: Callable[[dict[str, RolloutRoute]], None],
        aliases: Callable[[], Mapping[str, str]],
        telemetry: WindowCounts,
        metrics: RolloutMetrics,
        store: StateStore,
        adapters: AdapterView | None = None,
        analyzer: Analyzer | None = None,
        control: bool = False,
        watch: WatchOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.apply_routes = apply_routes
        self.aliases = aliases
        self.telemetry = telemetry
        self.metrics = metrics
        self.store = store
        self.adapters = adapters or AssumeLoaded()
        self.analyzer: Analyzer = analyzer or LocalOnly()
        self.control = control
        self.clock = clock
        self.file: ReloadingFile[list[RolloutResult]] = ReloadingFile(
            rules_path,
            parse_rollout_documents,
            name="rollouts",
            wording=WORDING,
            metrics=_NoReloadMetrics(),
            options=watch,
            on_change=self._documents_changed,
        )
        self.rollouts: dict[str, _Tracked] = {}
        self._invalid: dict[str, tuple[str, ...]] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._supervisor: Supervisor | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        await self.file.reload()
        await self.tick()
        await self.file.start(supervisor)
        supervisor.spawn(TASK, self._loop())

    async def stop(self) -> None:
        await self.file.stop()
        if self._supervisor is not None:
            await self._supervisor.cancel(TASK)

    async def _loop(self) -> None:
        while True:
            delay = self._next_wake(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            await self.tick()

    def wake(self) -> None:
        self._wake.set()

    def _next_wake(self, now: float) -> float:
        wake = now + TICK
        for t in self.rollouts.values():
            pos = t.position
            if pos is None or pos.phase in (Phase.COMPLETED, Phase.ABORTED):
                continue
            if pos.next_transition is not None:
                wake = min(wake, pos.next_transition)
            analysis = t.spec.analysis
            if analysis is not None:
                start = start_of(t.spec, t.state)
                lag = _lag(t.spec)
                if now >= start:
                    k = math.floor((now - lag - start) / analysis.interval) + 1
                    wake = min(wake, start + k * analysis.interval + lag)
                else:
                    wake = min(wake, start)
        return max(0.0, wake - now)

    # --- documents ---------------------------------------------------------------------

    def _documents_changed(self, loaded: Loaded[list[RolloutResult]]) -> None:
        self.wake()

    def _specs(self) -> list[RolloutSpec]:
        """The rollouts in force, in file order: each valid document, or the last valid version of an invalid one."""
        current = self.file.current
        results = current.value if current is not None else []
        specs: list[RolloutSpec] = []
        invalid: dict[str, tuple[str, ...]] = {}
        for r in results:
            if r.spec is not None:
                specs.append(r.spec)
                continue
            issues = tuple(i.format() for i in r.issues if i.severity == "error")
            invalid[r.name] = issues
            kept = self.rollouts.get(r.name)
            if kept is not None:
                specs.append(kept.spec)
        if invalid != self._invalid:
            for name, issues in invalid.items():
                if self._invalid.get(name) != issues:
                    kept_note = (
                        "its last valid version stays in force" if name in self.rollouts else "not used"
                    )
                    log.error(
                        "AdapterRollout document invalid; " + kept_note, rollout=name, errors=list(issues)
                    )
            self._invalid = invalid
        return specs

    # --- one pass ----------------------------------------------------------------------

    async def tick(self) -> None:
        """Observe, judge the windows that ended, compute every position, persist, route."""
        async with self._lock:
            specs = self._specs()
            names = {s.name for s in specs}
            for gone in [n for n in self.rollouts if n not in names]:
                t = self.rollouts.pop(gone)
                self.metrics.forget(t.spec.name, t.spec.model)
                log.info(
                    "AdapterRollout removed from the rules file; its model goes back to the rules",
                    rollout=gone,
                )
            pairs: list[tuple[RolloutSpec, RolloutPosition]] = []
            for spec in specs:
                now = self.clock()
                tracked = self._track(spec, now)
                await self._advance(tracked, now)
                assert tracked.position is not None
                pairs.append((spec, tracked.position))
            routes, _ = overrides(pairs, self.aliases())
            now = self.clock()
            for spec, pos in pairs:
                t = self.rollouts[spec.name]
                if spec.model in routes and routes[spec.model].document.endswith("/" + spec.name):
                    self._note_weight(t, now, pos.canary_weight, pos.mirror_percent)
            self.apply_routes(routes)

    def _track(self, spec: RolloutSpec, now: float) -> _Tracked:
        ident = identity(spec)
        t = self.rollouts.get(spec.name)
        if t is not None and t.state.identity == ident:
            t.spec = spec  # hand controls and tuning keep the rollout
            return t
        state, note = self.store.load(spec.name, ident)
        if note:
            log.warning("rollout state ignored", rollout=spec.name, reason=note)
        if state is None:
            state = new_state(spec, now)
        elif t is None:
            log.info(
                "rollout resumed from saved state",
                rollout=spec.name,
                windows_judged=state.history.judged,
                last_phase=state.last_phase.value if state.last_phase else None,
            )
        t = _Tracked(spec=spec, state=state, state_note=note, tracked_at=now)
        self.rollouts[spec.name] = t
        return t

    async def _advance(self, t: _Tracked, now: float) -> None:
        """One rollout's pass at `now` (the instant a new rollout is first seen, so a canary not
        loaded yet holds it from its very start)."""
        spec = t.spec
        before = t.state
        canary_loaded = self.adapters.loaded(spec.canary)
        failed = self.adapters.failed(spec.canary)
        stable_loaded = self.adapters.loaded(spec.stable)
        if before.abort_at is None and await self._aborted_elsewhere(t, now):
            before = replace(
                before,
                abort_at=now,
                abort_reason="aborted on another replica (lora_syncer_rollout_phase in Prometheus)",
            )
        if before.control_paused and spec.paused:
            # The document now holds the pause (as GitOps wants): from here `paused: false` resumes.
            before = set_control(before, paused=False)
        state = observe(before, spec, now, canary_loaded=canary_loaded, canary_failed=failed is not None)
        if failed is not None and before.canary_failed_at is None:
            log.warning("rollout canary failed to load", rollout=spec.name, canary=spec.canary, error=failed)
        previous = t.position
        if spec.analysis is not None:
            # Windows stop counting once the rollout finished (`replay.counts`, checked per window).
            state = await self._judge_windows(t, state, now)
        now = max(now, self.clock())
        pos = position(
            spec, observed(state, spec, now, canary_loaded=canary_loaded, stable_loaded=stable_loaded)
        )
        state = settle(state, pos)
        t.state = state
        t.position = pos
        self.metrics.position(spec.name, spec.model, pos)
        if previous is None or (previous.phase, previous.step, previous.canary_weight) != (
            pos.phase,
            pos.step,
            pos.canary_weight,
        ):
            self._log_transition(t, previous, pos)
        if state != before or t.persist_error is not None:
            try:
                self.store.save(state)
                t.persist_error = None
            except OSError as exc:
                if t.persist_error is None:
                    log.error("cannot persist rollout state", rollout=spec.name, error=str(exc))
                t.persist_error = str(exc)

    async def _judge_windows(self, t: _Tracked, state: RolloutState, now: float) -> RolloutState:
        spec = t.spec
        analysis = spec.analysis
        assert analysis is not None
        start = start_of(spec, state)
        interval = analysis.interval
        lag = _lag(spec)
        if now < start + interval + lag:
            return state
        ended = math.floor((now - lag - start) / interval)  # windows 0..ended-1 are over
        # Windows that began before this pod tracked the rollout: their counts are not all here.
        # With Prometheus they are replayed from its answers at their ends (the fleet's verdicts);
        # without, they count as judged with no verdict as soon as they are over (waiting for the
        # next window instead would hold a late pod behind the fleet for up to 2 intervals).
        unseen = min(ended, math.ceil((t.tracked_at - start) / interval))
        if unseen > state.history.judged:
            if analysis.prometheus is not None:
                state, finished = await self._replay(t, state, unseen)
                if finished:
                    return state
            else:
                state = record_verdict(
                    state,
                    unseen - 1,
                    WindowVerdict(Outcome.NO_VERDICT, "the pod was not running for the whole window"),
                )
        for k in range(state.history.judged, ended):
            if not counts(spec, state, k, stable_loaded=self.adapters.loaded(spec.stable)):
                break  # the rollout had finished by this window's end: it never counts (as replayed)
            ws, we = start + k * interval, start + (k + 1) * interval
            weight, mirror = self._weight_during(t, ws, we)
            window = Window(
                stable=self.telemetry.counts(spec.model, spec.stable, ws, we),
                canary=self.telemetry.counts(spec.model, spec.canary, ws, we),
                canary_weight=weight,
                mirror_percent=mirror,
            )
            external = await self._external(spec, ws, we)
            verdict = judge(window, analysis, external)
            state = record_verdict(state, k, verdict)
            t.last_verdict = verdict
            self.metrics.window(spec.name, spec.model, verdict)
            log.info(
                "rollout window judged",
                rollout=spec.name,
                window=k,
                outcome=verdict.outcome.value,
                reason=verdict.reason,
                canary_weight=weight,
                canary_requests=window.canary.requests,
                canary_errors=window.canary.errors,
                stable_requests=window.stable.requests,
                stable_errors=window.stable.errors,
            )
        return state

    async def _replay(self, t: _Tracked, state: RolloutState, unseen: int) -> tuple[RolloutState, bool]:
        """Judge windows judged..unseen-1 from Prometheus's answers at their ends, in order, as the
        schedule had them (`replay.window_at`); (the state, whether the rollout had finished).

        Bounded: one query per check per window the canary had traffic in, at most
        MAX_REPLAY_WINDOWS windows and REPLAY_BUDGET seconds, and none after Prometheus gave no
        answer at all. Windows left are recorded as no verdict (as without Prometheus), with the
        reason in the log and in /status (`replay`).
        """
        spec = t.spec
        r = t.replay = t.replay or _Replay()
        stable_loaded = self.adapters.loaded(spec.stable)
        began = time.monotonic()
        first, done, failed_before = state.history.judged, 0, len(state.history.failed)
        without_before = r.without_value
        finished = False
        while state.history.judged < unseen:
            k = state.history.judged
            if r.stopped is None and r.windows >= MAX_REPLAY_WINDOWS:
                r.stopped = f"more than {MAX_REPLAY_WINDOWS} windows to replay"
            elif r.stopped is None and time.monotonic() - began > REPLAY_BUDGET:
                r.stopped = f"replaying took over {REPLAY_BUDGET:g} s"
            if r.stopped is not None:
                why = f"not replayed from Prometheus ({r.stopped})"
                state = record_verdict(
                    state, unseen - 1, WindowVerdict(Outcome.NO_VERDICT, why), gap_reason=why
                )
                r.not_replayed += unseen - k
                log.warning(
                    "rollout windows not replayed: recorded as no verdict; an abort on another replica "
                    "is still adopted through lora_syncer_rollout_phase",
                    rollout=spec.name,
                    windows=f"{k}..{unseen - 1}",
                    reason=r.stopped,
                )
                break
            window = window_at(spec, state, k, stable_loaded=stable_loaded)
            if window is None:
                finished = True
                break
            external: External | None = None
            if window.carries_traffic:
                external, unanswered = await self._history(spec, window.start, window.end)
                if unanswered is not None:
                    r.stopped = f"Prometheus gave no answer for window {k}: {unanswered}"
                    continue  # this window is recorded with the rest, as not replayed
                r.asked += 1
                prom = spec.analysis.prometheus if spec.analysis is not None else None
                assert prom is not None
                if (prom.error_rate_query is not None and external.prometheus_error_rate is None) or (
                    prom.latency_ratio_query is not None and external.prometheus_latency_ratio is None
                ):
                    r.without_value += 1
            verdict = replayed_verdict(spec, window, external)
            state = record_verdict(state, k, verdict)
            t.last_verdict = verdict
            r.windows += 1
            done += 1
        if done:
            log.info(
                "rollout windows replayed from Prometheus",
                rollout=spec.name,
                windows=f"{first}..{first + done - 1}",
                failed=len(state.history.failed) - failed_before,
                asked=r.asked,
                without_value=r.without_value,
                finished=finished,
            )
        if r.without_value > without_before:
            log.warning(
                "rollout windows replayed without a value from Prometheus (data no longer kept, or "
                "never scraped): recorded as no verdict",
                rollout=spec.name,
                windows=r.without_value - without_before,
            )
        return state, finished

    async def _history(self, spec: RolloutSpec, ws: float, we: float) -> tuple[External, str | None]:
        try:
            return await asyncio.wait_for(self.analyzer.history(spec, ws, we), EXTERNAL_TIMEOUT)
        except Exception as exc:  # an unreachable Prometheus stops the replay, never the controller
            return External(), repr(exc)

    async def _aborted_elsewhere(self, t: _Tracked, now: float) -> bool:
        """With analysis.prometheus, adopt an abort any replica exports, asked once per interval."""
        analysis = t.spec.analysis
        if analysis is None or analysis.prometheus is None or now - t.fleet_checked < analysis.interval:
            return False
        t.fleet_checked = now
        try:
            aborted = await asyncio.wait_for(self.analyzer.fleet_aborted(t.spec, now), EXTERNAL_TIMEOUT)
        except Exception as exc:  # an unreachable Prometheus says nothing about the fleet
            log.warning("rollout fleet check failed", rollout=t.spec.name, error=repr(exc))
            return False
        if aborted:
            log.warning("rollout aborted on another replica; adopting the abort", rollout=t.spec.name)
        return bool(aborted)

    async def _external(self, spec: RolloutSpec, ws: float, we: float) -> External | None:
        analysis = spec.analysis
        if analysis is None or (analysis.prometheus is None and analysis.webhook is None):
            return None
        try:
            return await asyncio.wait_for(self.analyzer.external(spec, ws, we), EXTERNAL_TIMEOUT)
        except Exception as exc:  # an unreachable Prometheus or webhook is no verdict, never a crash
            log.warning("rollout analysis: external check failed", rollout=spec.name, error=repr(exc))
            return External()

    @staticmethod
    def _note_weight(t: _Tracked, now: float, weight: int, mirror: int) -> None:
        if not t.weights or t.weights[-1][1:] != (weight, mirror):
            t.weights.append((now, weight, mirror))
            del t.weights[:-MAX_WEIGHT_CHANGES]

    @staticmethod
    def _weight_during(t: _Tracked, ws: float, we: float) -> tuple[int, int]:
        """The highest canary weight and mirror percent in force at any time in [ws, we)."""
        weight = mirror = 0
        in_force: tuple[int, int] = (0, 0)
        for at, w, m in t.weights:
            if at <= ws:
                in_force = (w, m)
            elif at < we:
                weight, mirror = max(weight, w), max(mirror, m)
        return max(weight, in_force[0]), max(mirror, in_force[1])

    def _log_transition(self, t: _Tracked, previous: RolloutPosition | None, pos: RolloutPosition) -> None:
        spec = t.spec
        verdict = t.last_verdict
        log.info(
            "rollout transition",
            rollout=spec.name,
            model=spec.model,
            from_phase=previous.phase.value if previous else None,
            from_step=previous.step if previous else None,
            phase=pos.phase.value,
            step=pos.step,
            canary_weight=pos.canary_weight,
            mirror_percent=pos.mirror_percent,
            reason=pos.reason,
            failed_windows=pos.failed_windows,
            windows_judged=t.state.history.judged,
            last_window=verdict.outcome.value if verdict else None,
            last_checks={c.name: c.value for c in verdict.checks} if verdict else None,
        )

    # --- the control endpoint ----------------------------------------------------------

    async def control_action(self, name: str, action: str) -> tuple[int, dict[str, Any]]:
        """`abort` or `pause` a rollout now (persisted); (HTTP status, body)."""
        if not self.control:
            return 403, {"error": "the rollout control endpoint is off: start with --rollout-control"}
        if action not in ("abort", "pause"):
            return 404, {"error": f"unknown action {action!r}: use abort or pause"}
        async with self._lock:
            t = self.rollouts.get(name)
            if t is None:
                return 404, {"error": f"no AdapterRollout named {name!r}", "rollouts": sorted(self.rollouts)}
            t.state = (
                set_control(t.state, abort=True) if action == "abort" else set_control(t.state, paused=True)
            )
            log.info("rollout control", rollout=name, action=action)
        await self.tick()
        t = self.rollouts.get(name)
        return 200, self._render(t) if t is not None else {}

    # --- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The `rollouts` section of /status."""
        error = self.file.error
        return {
            "controlEndpoint": self.control,
            "stateDir": str(self.store.directory) if self.store.directory is not None else None,
            "fileError": error.summary() if error is not None else None,
            "invalidDocuments": {name: list(issues) for name, issues in self._invalid.items()},
            "rollouts": [self._render(t) for t in self.rollouts.values()],
        }

    def _render(self, t: _Tracked) -> dict[str, Any]:
        spec, state, pos = t.spec, t.state, t.position
        return {
            "name": spec.name,
            "model": spec.model,
            "stable": spec.stable,
            "canary": spec.canary,
            "identity": state.identity,
            "start": _iso(start_of(spec, state)),
            "phase": pos.phase.value if pos else None,
            "step": pos.step if pos else None,
            "steps": len(spec.steps),
            "canaryWeight": pos.canary_weight if pos else None,
            "mirrorPercent": pos.mirror_percent if pos else None,
            "reason": pos.reason if pos else None,
            "since": _iso(pos.since) if pos else None,
            "nextTransition": _iso(pos.next_transition) if pos else None,
            "failedWindows": pos.failed_windows if pos else 0,
            "windowsJudged": state.history.judged,
            "failureLimit": spec.analysis.failure_limit if spec.analysis else None,
            "lastWindows": [
                {"window": r.window, "outcome": r.outcome.value, "reason": r.reason}
                for r in state.recent[-10:]
            ],
            "lastChecks": [
                {
                    "check": c.name,
                    "outcome": c.outcome.value,
                    "reason": c.reason,
                    "value": c.value,
                    "limit": c.limit,
                }
                for c in (t.last_verdict.checks if t.last_verdict else ())
            ],
            "replay": t.replay.render() if t.replay is not None else None,
            "abortReason": state.abort_reason,
            "controlPaused": state.control_paused,
            "controlAbort": state.control_abort,
            "stateFile": str(self.store.path_of(spec.name)) if self.store.directory is not None else None,
            "stateNote": t.state_note,
            "persistError": t.persist_error,
            "documentErrors": list(self._invalid.get(spec.name, ())),
        }


def _lag(spec: RolloutSpec) -> float:
    """How long after a window ends it is judged: Prometheus needs its last scrapes in."""
    prometheus = spec.analysis is not None and spec.analysis.prometheus is not None
    return SETTLE + (PROMETHEUS_LAG if prometheus else 0.0)
