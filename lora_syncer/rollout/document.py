"""Parse and validate one `AdapterRollout` document into a RolloutSpec (pure).

Errors are `Issue`s located by document path and line, as the rules file reports them
(`rules.yaml:14: error: spec.steps[2].pause.duration: ...`). Results are per document: one
broken AdapterRollout does not stop another in the same file from being used, so an
`abort: true` in a valid document is honoured whatever its neighbours hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from lora_syncer.config.errors import Issue, join_path
from lora_syncer.config.yamldoc import Document
from lora_syncer.rollout.spec import (
    API_GROUP,
    KIND,
    PLACEHOLDERS,
    Analysis,
    Mirror,
    Pause,
    PrometheusCheck,
    RolloutSpec,
    SetWeight,
    Step,
    WebhookCheck,
    parse_duration,
    parse_instant,
    strip_placeholders,
    template_placeholders,
)

Path = tuple[str | int, ...]


def _duration(value: Any) -> int:
    return parse_duration(value)


def _number(value: Any) -> float:
    # YAML gives int or float; a quoted "0.02" or a bool is a mistake worth naming, not coercing.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if math.isnan(value) or math.isinf(value):
        raise ValueError("must be a finite number")
    return float(value)


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return text


def _template(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    unknown = sorted(set(template_placeholders(value)) - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            "unknown placeholder "
            + ", ".join("{{" + u + "}}" for u in unknown)
            + ": use {{model}}, {{stable}}, {{canary}} or {{interval}}"
        )
    # `{{model` without its closing braces would reach Prometheus verbatim.
    rest = strip_placeholders(value)
    if "{{" in rest or "}}" in rest:
        raise ValueError(
            "has unbalanced {{ }}: placeholders are {{model}}, {{stable}}, {{canary}}, {{interval}}"
        )
    return value


Duration = Annotated[int, BeforeValidator(_duration)]
Number = Annotated[float, BeforeValidator(_number)]
Url = Annotated[str, BeforeValidator(_url)]
Template = Annotated[str, BeforeValidator(_template)]
Name = Annotated[StrictStr, Field(min_length=1)]


class _Spec(BaseModel):
    # An unknown key is an error: a misspelt `maxErrorRate` must not silently disable a check.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Prometheus(_Spec):
    url: Url
    bearerTokenFile: Name | None = None
    caFile: Name | None = None
    errorRateQuery: Template | None = None
    latencyRatioQuery: Template | None = None


class _Webhook(_Spec):
    url: Url


class _Analysis(_Spec):
    interval: Duration = 30
    minRequests: StrictInt = Field(default=50, ge=1)
    failureLimit: StrictInt = Field(default=0, ge=0)
    maxErrorRate: Annotated[Number, Field(ge=0, le=1)] | None = None
    maxLatencyRatio: Annotated[Number, Field(gt=0)] | None = None
    maxEmptyRate: Annotated[Number, Field(ge=0, le=1)] | None = None
    maxLengthRatio: Annotated[Number, Field(gt=0)] | None = None
    prometheus: _Prometheus | None = None
    webhook: _Webhook | None = None


class _PauseBody(_Spec):
    duration: Duration | None = None


class _MirrorBody(_Spec):
    percent: StrictInt = Field(ge=1, le=100)
    duration: Duration


class _SetWeightStep(_Spec):
    setWeight: StrictInt = Field(ge=0, le=100)


class _PauseStep(_Spec):
    pause: _PauseBody


class _MirrorStep(_Spec):
    mirror: _MirrorBody


class _RolloutSpec(_Spec):
    model: Name
    stable: Name
    canary: Name
    startTime: Any = None
    steps: list[Any]
    progressDeadline: Duration | None = None
    analysis: _Analysis | None = None
    promotedStep: StrictInt = Field(default=0, ge=0)
    paused: StrictBool = False
    abort: StrictBool = False


_STEP_MODELS: dict[str, type[BaseModel]] = {
    "setWeight": _SetWeightStep,
    "pause": _PauseStep,
    "mirror": _MirrorStep,
}

_HINTS: dict[str, str] = {
    "string_type": "must be a string (quote it if it looks like a number)",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "missing": "is required",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "extra_forbidden": "unknown key (check the spelling)",
}

_RANGES: dict[str, str] = {
    "setWeight": "weights are whole numbers from 0 to 100",
    "percent": "a mirror percent is a whole number from 1 to 100",
    "minRequests": "must be at least 1",
    "failureLimit": "must be 0 or more",
    "promotedStep": "must be 0 or more",
    "maxErrorRate": "a rate is a number from 0 to 1",
    "maxEmptyRate": "a rate is a number from 0 to 1",
    "maxLatencyRatio": "a ratio must be greater than 0",
    "maxLengthRatio": "a ratio must be greater than 0",
}


def _message(err: Any) -> str:
    kind = str(err.get("type", ""))
    loc = [p for p in err.get("loc", ()) if isinstance(p, str)]
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and loc:
        return "is out of range: " + _RANGES.get(loc[-1], str(err.get("msg", "")))
    if kind == "value_error":
        return str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return _HINTS.get(kind) or str(err.get("msg", "is invalid"))


@dataclass(frozen=True)
class RolloutResult:
    """One AdapterRollout document: its spec when it validates, and every issue found in it."""

    name: str
    index: int
    spec: RolloutSpec | None
    issues: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        return self.spec is not None


class _Out:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[Issue] = []

    def add(self, path: Path, message: str, severity: str = "error") -> None:
        self.issues.append(
            Issue(
                path=join_path(path),
                message=message,
                line=self.doc.line_of(path),
                severity="warning" if severity == "warning" else "error",
            )
        )

    def validate(self, model: type[BaseModel], value: Any, base: Path) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                self.add((*base, *loc), _message(err))
            return None

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def _step(raw: Any, path: Path, out: _Out) -> Step | None:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _STEP_MODELS:
        keys = sorted(str(k) for k in raw) if isinstance(raw, dict) else []
        what = f" (found {', '.join(keys)})" if keys else ""
        out.add(path, f"a step is one of setWeight, pause or mirror{what}")
        return None
    key = next(iter(raw))
    body = raw[key]
    if key == "pause" and body is None:
        body = {}  # `- pause:` with nothing after it reads as a manual gate, as in Argo Rollouts
    parsed = out.validate(_STEP_MODELS[key], {key: body}, path)
    if isinstance(parsed, _SetWeightStep):
        return SetWeight(parsed.setWeight)
    if isinstance(parsed, _PauseStep):
        return Pause(parsed.pause.duration)
    if isinstance(parsed, _MirrorStep):
        return Mirror(parsed.mirror.percent, parsed.mirror.duration)
    return None


def _analysis(raw: _Analysis) -> Analysis:
    prom = raw.prometheus
    return Analysis(
        interval=raw.interval,
        min_requests=raw.minRequests,
        failure_limit=raw.failureLimit,
        max_error_rate=raw.maxErrorRate,
        max_latency_ratio=raw.maxLatencyRatio,
        max_empty_rate=raw.maxEmptyRate,
        max_length_ratio=raw.maxLengthRatio,
        prometheus=PrometheusCheck(
            url=prom.url,
            error_rate_query=prom.errorRateQuery,
            latency_ratio_query=prom.latencyRatioQuery,
            bearer_token_file=prom.bearerTokenFile,
            ca_file=prom.caFile,
        )
        if prom is not None
        else None,
        webhook=WebhookCheck(raw.webhook.url) if raw.webhook is not None else None,
    )


def parse_adapter_rollout(doc: Document, base: Path = (), data: Any = None, index: int = 0) -> RolloutResult:
    """Validate one AdapterRollout: the document `doc`, or the List item `data` found at `base` in it.

    This is the parser to register for kind `AdapterRollout`. It never raises for a bad document:
    the result carries the issues (with lines) and no spec.
    """
    item = doc.data if data is None else data
    out = _Out(doc)
    if not isinstance(item, dict):
        out.add(base, "must be a mapping with apiVersion, kind, metadata and spec")
        return RolloutResult(f"document-{index + 1}", index, None, tuple(out.issues))
    api = item.get("apiVersion")
    if isinstance(api, str) and api and api.split("/")[0] != API_GROUP:
        out.add(
            (*base, "apiVersion"),
            f"unexpected API group in {api!r} (expected {API_GROUP}); read anyway",
            "warning",
        )
    meta = item.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name.strip():
        # The name is part of the rollout's identity: without one, state could not be matched to it.
        out.add(
            (*base, "metadata", "name") if isinstance(meta, dict) else (*base, "metadata"),
            "is required: name the rollout",
        )
        name = f"document-{index + 1}"
    name = name.strip()
    spec_path: Path = (*base, "spec")
    raw_spec = item.get("spec")
    if raw_spec is None:
        out.add(spec_path, "is required")
        return RolloutResult(name, index, None, tuple(out.issues))
    parsed = out.validate(_RolloutSpec, raw_spec, spec_path)
    if not isinstance(parsed, _RolloutSpec):
        return RolloutResult(name, index, None, tuple(out.issues))
    start: float | None = None
    if parsed.startTime is not None:
        try:
            start = parse_instant(parsed.startTime)
        except ValueError as exc:
            out.add((*spec_path, "startTime"), str(exc))
    if parsed.stable == parsed.canary:
        out.add(
            (*spec_path, "canary"), f"is the same adapter as stable ({parsed.stable!r}): name the new version"
        )
    for key in ("stable", "canary"):
        if getattr(parsed, key) == parsed.model:
            out.add(
                (*spec_path, key),
                f"is the client-facing model name {parsed.model!r}: the rollout rewrites it to adapter names, so name the adapter version",
            )
    steps: list[Step] = []
    if not parsed.steps:
        out.add((*spec_path, "steps"), "is empty: list at least one step (setWeight, pause or mirror)")
    for i, raw_step in enumerate(parsed.steps):
        step = _step(raw_step, (*spec_path, "steps", i), out)
        if step is not None:
            steps.append(step)
    if not out.has_errors and parsed.promotedStep > len(steps):
        out.add(
            (*spec_path, "promotedStep"),
            f"is past the last step (there are {len(steps)}); it is read as 'every gate passed'",
            "warning",
        )
    analysis = _analysis(parsed.analysis) if parsed.analysis is not None else None
    if analysis is not None and analysis.prometheus is not None:
        prom = analysis.prometheus
        if prom.error_rate_query is None and prom.latency_ratio_query is None:
            out.add(
                (*spec_path, "analysis", "prometheus"),
                "names no query: give errorRateQuery and/or latencyRatioQuery",
            )
        if prom.error_rate_query is not None and analysis.max_error_rate is None:
            out.add(
                (*spec_path, "analysis", "prometheus", "errorRateQuery"),
                "needs analysis.maxErrorRate to compare against",
            )
        if prom.latency_ratio_query is not None and analysis.max_latency_ratio is None:
            out.add(
                (*spec_path, "analysis", "prometheus", "latencyRatioQuery"),
                "needs analysis.maxLatencyRatio to compare against",
            )
    if out.has_errors:
        return RolloutResult(name, index, None, tuple(out.issues))
    line = doc.line_of(base) if base else doc.start_line
    spec = RolloutSpec(
        name=name,
        model=parsed.model,
        stable=parsed.stable,
        canary=parsed.canary,
        steps=tuple(steps),
        start_time=start,
        progress_deadline=parsed.progressDeadline,
        analysis=analysis,
        promoted_step=parsed.promotedStep,
        paused=parsed.paused,
        abort=parsed.abort,
        line=line,
    )
    return RolloutResult(name, index, spec, tuple(out.issues))


def rollouts_from_documents(docs: Sequence[Document]) -> list[RolloutResult]:
    """Every AdapterRollout among parsed documents (other kinds are skipped), one result each.

    Two valid rollouts with the same name: the later one is refused (names key persisted state).
    """
    results: list[RolloutResult] = []
    seen: dict[str, int] = {}
    index = 0
    for doc in docs:
        data = doc.data
        found: list[tuple[Path, Any]] = []
        if isinstance(data, dict) and data.get("kind") == KIND:
            found.append(((), data))
        elif isinstance(data, dict) and isinstance(data.get("items"), list):
            found.extend(
                (("items", i), it)
                for i, it in enumerate(data["items"])
                if isinstance(it, dict) and it.get("kind") == KIND
            )
        for base, item in found:
            result = parse_adapter_rollout(doc, base, item, index)
            index += 1
            if result.spec is not None and result.name in seen:
                issue = Issue(
                    path=join_path((*base, "metadata", "name")),
                    message=f"two AdapterRollout documents are named {result.name!r}; names must be unique",
                    line=doc.line_of((*base, "metadata", "name")),
                )
                result = RolloutResult(result.name, result.index, None, (*result.issues, issue))
            elif result.spec is not None:
                seen[result.name] = result.index
            results.append(result)
    return results
