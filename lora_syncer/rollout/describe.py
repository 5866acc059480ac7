"""A rollout in words, for `lora-syncer check` and `plan` (pure)."""

from __future__ import annotations

from lora_syncer.rollout.spec import Mirror, Pause, RolloutSpec, SetWeight, format_duration


def describe(spec: RolloutSpec) -> list[str]:
    """One header line, then one line per step with the earliest time it can be reached.

    The times assume no hold (canary loaded, never paused) and analysis windows that keep up.
    """
    lines = [
        f"rollout {spec.name}: {spec.model!r} from {spec.stable!r} to {spec.canary!r}, {len(spec.steps)} step(s)"
        + (" [abort: true]" if spec.abort else "")
        + (" [paused: true]" if spec.paused else "")
    ]
    at = 0
    gated = False
    weight = 0
    for i, step in enumerate(spec.steps):
        when = "after a manual gate" if gated else f"t+{format_duration(at) if at else '0s'}"
        if isinstance(step, SetWeight):
            weight = step.weight
            text = f"setWeight {step.weight}: {spec.stable} {100 - step.weight} / {spec.canary} {step.weight}"
        elif isinstance(step, Pause) and step.duration is None:
            opened = spec.promoted_step >= i
            text = f"pause: manual gate ({'open: promotedStep' if opened else 'set promotedStep'} >= {i})"
            gated = gated or not opened
        elif isinstance(step, Pause):
            text = f"pause {format_duration(step.duration or 0)} at {weight}%"
            at += step.duration or 0
        else:
            assert isinstance(step, Mirror)
            text = f"mirror {step.percent}% for {format_duration(step.duration)}"
            at += step.duration
        lines.append(f"  steps[{i}] {when}: {text}")
    done = "after a manual gate" if gated else f"t+{format_duration(at) if at else '0s'}"
    lines.append(f"  completed {done}: {spec.canary} 100%")
    a = spec.analysis
    if a is not None:
        checks = [
            f"{label} {value:g}"
            for label, value in (
                ("maxErrorRate", a.max_error_rate),
                ("maxLatencyRatio", a.max_latency_ratio),
                ("maxEmptyRate", a.max_empty_rate),
                ("maxLengthRatio", a.max_length_ratio),
            )
            if value is not None
        ]
        where = "Prometheus" if a.prometheus else "this pod's traffic"
        lines.append(
            f"  analysis every {format_duration(a.interval)} from {where}: "
            + (", ".join(checks) or "no bound")
            + f"; minRequests {a.min_requests}; aborts after more than {a.failure_limit} failed window(s)"
            + ("; webhook" if a.webhook else "")
        )
    return lines
