"""The I/O half of rollout analysis: Prometheus queries and the webhook, once per window.

The controller calls `Analyzer.external(spec, window_start, window_end)` when a window ends and
hands the result to the pure `verdict.judge`. Everything here turns a missing or doubtful answer
into *no verdict* (None) with the reason kept, never into a pass:

- Prometheus: each query template is rendered (`{{model}}`, `{{stable}}`, `{{canary}}`,
  `{{interval}}` as a Prometheus duration such as `30s`) and evaluated with the instant query API
  at `time=window_end`, so every replica, one started mid-rollout or after completion included,
  computes the same value for the same window. NaN, ±Inf, an empty result or more than one
  series is no verdict; so is any error (HTTP status, `status: error`, timeout, TLS).
- The bearer token is read from `bearerTokenFile` at every call (tokens are rotated) and never
  logged; `caFile` is read at every call too.
- Webhook: the window is POSTed as JSON (`webhook_document`); the answer must be 2xx with a JSON
  object holding `"pass": true|false`. Anything else is no verdict.

`fleet_aborted(spec, at)` asks Prometheus whether any replica reports the rollout aborted, so an
abort seen on one pod is adopted by all within one interval.

`history(spec, window_start, window_end)` is what a pod replaying windows it did not see asks
(`replay.py`): the Prometheus queries only, plus why Prometheus gave no answer at all (unreachable,
timeout, an HTTP or API error), which stops the replay; an answer without a value does not.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from lora_syncer.rollout.spec import PrometheusCheck, RolloutSpec, format_duration, render_template
from lora_syncer.rollout.verdict import External, TargetCounts, Window, p95

log = structlog.get_logger("lora_syncer.rollout")

# Answers longer than this are cut in reasons: a reason is one line in /status and the logs.
_REASON_BODY = 200

# Documented defaults (docs/observability.md), built on the proxy's per-target metrics. Both are
# fleet-wide: summed over every pod Prometheus scrapes, over the window that ends at `time=`.
# No error series at all means no errors (`or vector(0)`); no requests leaves the result empty.
DEFAULT_ERROR_RATE_QUERY = (
    '(sum(increase(lora_syncer_proxy_target_errors_total{alias="{{model}}",target="{{canary}}"}[{{interval}}]))'
    " or vector(0))"
    ' / sum(increase(lora_syncer_proxy_requests_total{alias="{{model}}",target="{{canary}}"}[{{interval}}]))'
)
DEFAULT_LATENCY_RATIO_QUERY = (
    "histogram_quantile(0.95, sum by (le) (increase("
    'lora_syncer_proxy_target_ttft_seconds_bucket{alias="{{model}}",target="{{canary}}"}[{{interval}}])))'
    " / histogram_quantile(0.95, sum by (le) (increase("
    'lora_syncer_proxy_target_ttft_seconds_bucket{alias="{{model}}",target="{{stable}}"}[{{interval}}])))'
)
FLEET_ABORT_QUERY = 'max(lora_syncer_rollout_phase{rollout="{rollout}",phase="aborted"})'


@dataclass(frozen=True)
class ExternalResult(External):
    """`verdict.External` plus why each check asked has no value (`reasons`: (check, reason) pairs).

    Checks: `errorRate`, `latencyRatio` (Prometheus) and `webhook`, as verdict.CheckResult names them.
    """

    reasons: tuple[tuple[str, str], ...] = ()

    def reason(self, check: str) -> str | None:
        return next((why for name, why in self.reasons if name == check), None)


@dataclass(frozen=True)
class QueryResult:
    """One instant query: a finite value, or None with the reason.

    `answered` is False when Prometheus gave no usable answer at all (unreachable, a timeout, an
    HTTP or API error, a body that is not its JSON), as opposed to an answer without a value
    (empty, NaN, ±Inf, several series): a replay stops at the first, not at the second.
    """

    value: float | None
    reason: str = ""
    answered: bool = True


def promql_string(value: str) -> str:
    """`value` escaped to sit inside a double-quoted PromQL string (adapter names are put in label matchers)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def template_values(spec: RolloutSpec) -> dict[str, str]:
    """The placeholders of spec's query templates: model, stable, canary and interval (`30s`)."""
    interval = spec.analysis.interval if spec.analysis is not None else 30
    return {
        "model": promql_string(spec.model),
        "stable": promql_string(spec.stable),
        "canary": promql_string(spec.canary),
        "interval": format_duration(interval),
    }


def render_query(spec: RolloutSpec, template: str) -> str:
    return render_template(template, template_values(spec))


def instant(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _counts(counts: TargetCounts) -> dict[str, Any]:
    return {
        "requests": counts.requests,
        "errors": counts.errors,
        "empty": counts.empty,
        "completionTokens": counts.completion_tokens,
        "ttftP95Seconds": p95(counts.ttft),
    }


def webhook_document(
    spec: RolloutSpec, window_start: float, window_end: float, step: int | None, window: Window | None
) -> dict[str, Any]:
    """What the webhook receives: the rollout, the window and this pod's counts in it (null when not given)."""
    return {
        "rollout": spec.name,
        "model": spec.model,
        "stable": spec.stable,
        "canary": spec.canary,
        "step": step,
        "windowStart": instant(window_start),
        "windowEnd": instant(window_end),
        "windowStartSeconds": window_start,
        "windowEndSeconds": window_end,
        "canaryWeight": window.canary_weight if window is not None else None,
        "mirrorPercent": window.mirror_percent if window is not None else None,
        "counts": (
            {"stable": _counts(window.stable), "canary": _counts(window.canary)}
            if window is not None
            else None
        ),
    }


def parse_query_answer(status: int, body: str) -> QueryResult:
    """One value from an instant query's answer (pure): a scalar, or a vector of exactly one sample."""
    try:
        doc = json.loads(body)
    except ValueError:
        return QueryResult(
            None,
            f"Prometheus answered {status} with a body that is not JSON: {body[:_REASON_BODY]!r}",
            answered=False,
        )
    if not isinstance(doc, dict):
        return QueryResult(
            None, f"Prometheus answered {status} with JSON that is not an object", answered=False
        )
    if doc.get("status") != "success" or status != 200:
        what = f"{doc.get('errorType', 'error')}: {doc.get('error', '')}".strip()
        return QueryResult(None, f"Prometheus answered {status}: {what[:_REASON_BODY]}", answered=False)
    data = doc.get("data")
    if not isinstance(data, dict):
        return QueryResult(None, "Prometheus answered without data", answered=False)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        raw = result[1]
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return QueryResult(None, "the query returned an empty result")
        if len(result) > 1:
            return QueryResult(
                None, f"the query returned {len(result)} series; aggregate it (sum, max) to one value"
            )
        sample = result[0].get("value") if isinstance(result[0], dict) else None
        if not isinstance(sample, list) or len(sample) != 2:
            return QueryResult(None, "the query returned a sample without a value")
        raw = sample[1]
    else:
        return QueryResult(None, f"the query returned a {kind}; it must return a scalar or one-series vector")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return QueryResult(None, f"the query returned {raw!r}, not a number")
    if math.isnan(value) or math.isinf(value):
        return QueryResult(None, f"the query returned {raw}")
    return QueryResult(value)


def _read_text(path: str) -> str:
    return Path(path).read_text().strip()


def _ssl_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


class Analyzer:
    """Asks Prometheus and the webhook about one window. One per process; `close()` when done."""

    def __init__(self, timeout: float = 8.0, session: aiohttp.ClientSession | None = None) -> None:
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Analyzer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def external(
        self,
        spec: RolloutSpec,
        window_start: float,
        window_end: float,
        *,
        step: int | None = None,
        window: Window | None = None,
    ) -> ExternalResult:
        """The external results for the window [window_start, window_end) of `spec`.

        `step` and `window` (this pod's counts) only go into the webhook's document.
        """
        analysis = spec.analysis
        if analysis is None:
            return ExternalResult()
        prom, hook = analysis.prometheus, analysis.webhook
        reasons: list[tuple[str, str]] = []

        async def query_check(name: str, template: str | None) -> float | None:
            result = await self._check(spec, template, window_end)
            if result is None:
                return None
            if result.value is None:
                reasons.append((name, result.reason))
            return result.value

        async def webhook_check() -> bool | None:
            if hook is None:
                return None
            document = webhook_document(spec, window_start, window_end, step, window)
            answer, reason = await self.ask_webhook(hook.url, document)
            if answer is None:
                reasons.append(("webhook", reason))
            return answer

        error_rate, latency, webhook_pass = await asyncio.gather(
            query_check("errorRate", prom.error_rate_query if prom else None),
            query_check("latencyRatio", prom.latency_ratio_query if prom else None),
            webhook_check(),
        )
        for check, why in reasons:
            log.info("rollout_analysis_no_value", rollout=spec.name, check=check, reason=why)
        return ExternalResult(
            prometheus_error_rate=error_rate,
            prometheus_latency_ratio=latency,
            webhook_pass=webhook_pass,
            reasons=tuple(sorted(reasons)),
        )

    async def _check(self, spec: RolloutSpec, template: str | None, at: float) -> QueryResult | None:
        """One query template of spec's Prometheus check at `at`; None when not configured."""
        prom = spec.analysis.prometheus if spec.analysis is not None else None
        if prom is None or template is None:
            return None
        return await self.query(prom, render_query(spec, template), at)

    async def history(
        self, spec: RolloutSpec, window_start: float, window_end: float
    ) -> tuple[ExternalResult, str | None]:
        """Prometheus's answers for a past window (one query per check, at `time=window_end`), and
        why Prometheus gave no answer at all (None when it answered, with a value or without).

        The webhook is not asked: it judges the present, and a replay must not send it a pod's
        whole history.
        """
        prom = spec.analysis.prometheus if spec.analysis is not None else None
        if prom is None:
            return ExternalResult(), None
        checks = (("errorRate", prom.error_rate_query), ("latencyRatio", prom.latency_ratio_query))
        results = await asyncio.gather(*(self._check(spec, q, window_end) for _, q in checks))
        values: dict[str, float | None] = {}
        reasons: list[tuple[str, str]] = []
        unanswered: str | None = None
        for (name, _), result in zip(checks, results, strict=True):
            values[name] = result.value if result is not None else None
            if result is not None and result.value is None:
                reasons.append((name, result.reason))
                if not result.answered and unanswered is None:
                    unanswered = f"{name}: {result.reason}"
        return (
            ExternalResult(
                prometheus_error_rate=values["errorRate"],
                prometheus_latency_ratio=values["latencyRatio"],
                reasons=tuple(sorted(reasons)),
            ),
            unanswered,
        )

    async def fleet_aborted(self, spec: RolloutSpec, at: float) -> bool | None:
        """Whether any replica Prometheus scrapes reports `spec` aborted at `at`; None when unknown.

        An empty result (no replica reports the rollout yet) is False: nobody aborted it.
        """
        prom = spec.analysis.prometheus if spec.analysis is not None else None
        if prom is None:
            return None
        query = FLEET_ABORT_QUERY.replace("{rollout}", promql_string(spec.name))
        result = await self.query(prom, query, at)
        if result.value is None:
            if result.reason == "the query returned an empty result":
                return False
            log.info("rollout_fleet_abort_unknown", rollout=spec.name, reason=result.reason)
            return None
        return result.value >= 1

    async def query(self, prom: PrometheusCheck, promql: str, at: float) -> QueryResult:
        """Evaluate `promql` with the instant query API at `at`; never raises."""
        url = prom.url.rstrip("/") + "/api/v1/query"
        headers: dict[str, str] = {}
        try:
            if prom.bearer_token_file:
                token = await asyncio.to_thread(_read_text, prom.bearer_token_file)
                headers["Authorization"] = f"Bearer {token}"
            ssl_arg: ssl.SSLContext | bool = True
            if prom.ca_file:
                ssl_arg = await asyncio.to_thread(_ssl_context, prom.ca_file)
        except ssl.SSLError as exc:  # an OSError too: caught first
            return QueryResult(None, f"caFile {prom.ca_file}: not a usable CA bundle: {exc}", answered=False)
        except OSError as exc:
            return QueryResult(None, f"cannot read {exc.filename}: {exc.strerror or exc}", answered=False)
        return await self._post(url, {"query": promql, "time": f"{at:.3f}"}, headers, ssl_arg)

    async def _post(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str], ssl_arg: ssl.SSLContext | bool
    ) -> QueryResult:
        try:
            async with self._client().post(
                url,
                data=dict(form),
                headers=dict(headers),
                ssl=ssl_arg,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                body = await resp.text(errors="replace")
                return parse_query_answer(resp.status, body)
        except TimeoutError:
            return QueryResult(
                None, f"Prometheus at {url} did not answer within {self.timeout:g} s", answered=False
            )
        except aiohttp.ClientError as exc:
            # The exception names the host and the cause, never the request's headers (the token).
            return QueryResult(None, f"Prometheus at {url}: {type(exc).__name__}: {exc}", answered=False)

    async def ask_webhook(self, url: str, document: Mapping[str, Any]) -> tuple[bool | None, str]:
        """POST `document`; (the answer's `pass`, "") or (None, why there is no answer). Never raises."""
        try:
            async with self._client().post(
                url, json=dict(document), timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                body = await resp.text(errors="replace")
                status = resp.status
        except TimeoutError:
            return None, f"the webhook {url} did not answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            return None, f"the webhook {url}: {type(exc).__name__}: {exc}"
        if not 200 <= status < 300:
            return None, f"the webhook {url} answered {status}: {body[:_REASON_BODY]!r}"
        try:
            answer = json.loads(body)
        except ValueError:
            return None, f"the webhook {url} answered with a body that is not JSON: {body[:_REASON_BODY]!r}"
        verdict = answer.get("pass") if isinstance(answer, dict) else None
        if not isinstance(verdict, bool):
            return None, f'the webhook {url} must answer {{"pass": true|false}}, not {body[:_REASON_BODY]!r}'
        return verdict, ""
