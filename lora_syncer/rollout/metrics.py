"""Prometheus gauges of automated rollouts (names and labels are a contract with dashboards and alerts)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from lora_syncer.rollout.schedule import Phase, RolloutPosition
from lora_syncer.rollout.verdict import Outcome, WindowVerdict

OUTCOME_LABEL = {Outcome.PASS: "pass", Outcome.FAIL: "fail", Outcome.NO_VERDICT: "no_verdict"}


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.phase = Gauge(
            "lora_syncer_rollout_phase",
            "1 for the rollout's current phase, 0 for the others "
            "(progressing, paused, completed, aborted, stalled).",
            ["rollout", "model", "phase"],
            registry=registry,
        )
        self.step = Gauge(
            "lora_syncer_rollout_step",
            "Index of the rollout's current step (len(steps) once completed).",
            ["rollout", "model"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "lora_syncer_rollout_canary_weight",
            "Percent of the model's requests the rollout sends to the canary now.",
            ["rollout", "model"],
            registry=registry,
        )
        self.windows = Counter(
            "lora_syncer_rollout_windows",
            "Analysis windows judged by this pod, by outcome (pass, fail, no_verdict).",
            ["rollout", "model", "outcome"],
            registry=registry,
        )
        self.last_value = Gauge(
            "lora_syncer_rollout_last_value",
            "The value of each check in the last window that measured it (errorRate, latencyRatio, ...).",
            ["rollout", "model", "check"],
            registry=registry,
        )
        self._known: set[tuple[str, str]] = set()

    def position(self, rollout: str, model: str, pos: RolloutPosition) -> None:
        self._known.add((rollout, model))
        for phase in Phase:
            self.phase.labels(rollout, model, phase.value).set(1 if pos.phase is phase else 0)
        self.step.labels(rollout, model).set(pos.step)
        self.canary_weight.labels(rollout, model).set(pos.canary_weight)

    def window(self, rollout: str, model: str, verdict: WindowVerdict) -> None:
        self.windows.labels(rollout, model, OUTCOME_LABEL[verdict.outcome]).inc()
        for check in verdict.checks:
            if check.value is not None:
                self.last_value.labels(rollout, model, check.name).set(check.value)

    def forget(self, rollout: str, model: str) -> None:
        """A rollout whose document is gone: its gauges go too."""
        self._known.discard((rollout, model))
        for phase in Phase:
            with contextlib.suppress(KeyError):
                self.phase.remove(rollout, model, phase.value)
        for gauge in (self.step, self.canary_weight):
            with contextlib.suppress(KeyError):
                gauge.remove(rollout, model)

    @property
    def known(self) -> set[tuple[str, str]]:
        return set(self._known)
