"""An `AdapterRollout` document once validated: frozen values, durations, and the rollout's identity.

Instants are Unix seconds (float) and durations whole seconds (int) everywhere in
`lora_syncer.rollout`, so the same inputs give the same arithmetic on every replica.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

KIND = "AdapterRollout"
API_GROUP = "lora-syncer.io"
PLACEHOLDERS = frozenset({"model", "stable", "canary", "interval"})

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def parse_duration(value: object) -> int:
    """`"2s"`, `"5m"`, `"1h30m"` (units in the order h, m, s) or a whole number of seconds -> seconds.

    Raises ValueError for anything else, and for zero: every duration in the document must be positive.
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            raise ValueError(
                f"{value!r} is not a duration: use whole numbers with s, m or h, such as 30s, 5m or 1h30m"
            )
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError("must be a duration such as 30s, 5m or 1h30m")
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def format_duration(seconds: int) -> str:
    """The inverse of parse_duration, shortest form: 5400 -> `1h30m`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"


def parse_instant(value: object) -> float:
    """An RFC 3339 timestamp (`2026-12-01T10:00:00Z`; YAML may already have made it a datetime) -> Unix seconds."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("must be a timestamp such as 2026-12-01T10:00:00Z") from None
    else:
        raise ValueError("must be a timestamp such as 2026-12-01T10:00:00Z")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # as Kubernetes does: timestamps without a zone are UTC
    return parsed.timestamp()


def template_placeholders(template: str) -> list[str]:
    """Every `{{name}}` in a query template, in order."""
    return _PLACEHOLDER.findall(template)


def strip_placeholders(template: str) -> str:
    """The template with every well-formed `{{name}}` removed (what is left must hold no braces)."""
    return _PLACEHOLDER.sub("", template)


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill `{{model}}`, `{{stable}}`, `{{canary}}`, `{{interval}}`; the document was checked to use no other."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of the model's requests to the canary; takes effect and passes at once."""

    weight: int


@dataclass(frozen=True)
class Pause:
    """Wait `duration` seconds; with no duration, a manual gate that passes when promotedStep >= its index."""

    duration: int | None = None


@dataclass(frozen=True)
class Mirror:
    """For `duration` seconds, shadow copies of `percent` percent of requests go to the canary as well."""

    percent: int
    duration: int


Step = SetWeight | Pause | Mirror


@dataclass(frozen=True)
class PrometheusCheck:
    """A fleet-wide signal: queries whose result replaces this pod's counts for that check."""

    url: str
    error_rate_query: str | None = None
    latency_ratio_query: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class WebhookCheck:
    """POST the window to `url`; the answer `{"pass": bool}` is one more check."""

    url: str


@dataclass(frozen=True)
class Analysis:
    """How each window is judged. Every bound is optional; those given must all hold."""

    interval: int = 30
    min_requests: int = 50
    failure_limit: int = 0
    max_error_rate: float | None = None
    max_latency_ratio: float | None = None
    max_empty_rate: float | None = None
    max_length_ratio: float | None = None
    prometheus: PrometheusCheck | None = None
    webhook: WebhookCheck | None = None


@dataclass(frozen=True)
class RolloutSpec:
    """One validated AdapterRollout document."""

    name: str
    model: str
    stable: str
    canary: str
    steps: tuple[Step, ...]
    start_time: float | None = None
    progress_deadline: int | None = None
    analysis: Analysis | None = None
    promoted_step: int = 0
    paused: bool = False
    abort: bool = False
    line: int | None = None


def _step_json(step: Step) -> dict[str, object]:
    if isinstance(step, SetWeight):
        return {"setWeight": step.weight}
    if isinstance(step, Pause):
        return {"pause": {"duration": step.duration}}
    return {"mirror": {"percent": step.percent, "duration": step.duration}}


def identity(spec: RolloutSpec) -> str:
    """A stable hash of what defines the rollout's path: name, model, stable, canary, steps and startTime.

    paused, abort, promotedStep, analysis and progressDeadline are hand controls and tuning: editing
    them keeps the rollout (and its persisted state). startTime is part of the path because every
    window and step instant is counted from it.
    """
    body = {
        "name": spec.name,
        "model": spec.model,
        "stable": spec.stable,
        "canary": spec.canary,
        "steps": [_step_json(s) for s in spec.steps],
        "startTime": spec.start_time,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:16]
