"""lora_syncer/rollout/analysis_io.py against a real Prometheus scraping a real metrics endpoint.

The endpoint (an aiohttp server on 127.0.0.1) serves prometheus_client metrics named as the proxy
names them; the test increments them, waits until Prometheus has scraped the new values, and asks
the Analyzer about windows ending now and in the past. The webhook is a real HTTP server too.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from structlog.testing import capture_logs

from lora_syncer.rollout.analysis_io import (
    DEFAULT_ERROR_RATE_QUERY,
    DEFAULT_LATENCY_RATIO_QUERY,
    Analyzer,
    ExternalResult,
    parse_query_answer,
    render_query,
)
from lora_syncer.rollout.spec import Analysis, PrometheusCheck, RolloutSpec, SetWeight, WebhookCheck
from lora_syncer.rollout.verdict import Outcome, TargetCounts, Window, judge
from tests.support.net import free_port
from tests.support.prometheus import Prometheus, PrometheusFactory

MODEL, STABLE, CANARY = "small-segment-lora", "small-segment-lora-v1", "small-segment-lora-v2"
# Buckets chosen so histogram_quantile is exact: every canary sample in (0.2, 0.4], every stable
# sample in (0.1, 0.2]: p95 = 0.2 + 0.95 x 0.2 = 0.39 and 0.1 + 0.95 x 0.1 = 0.195, ratio 2.
BUCKETS = (0.1, 0.2, 0.4, 0.8)
FRESH = "fresh-canary"
QUIET = "quiet-model"  # histograms exist, nothing observed: histogram_quantile gives NaN


@dataclass
class MetricsEndpoint:
    """prometheus_client metrics named as the proxy names them, served at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    port: int = 0

    def __post_init__(self) -> None:
        self.requests = Counter(
            "lora_syncer_proxy_requests", "r", ["alias", "target", "status"], registry=self.registry
        )
        self.errors = Counter(
            "lora_syncer_proxy_target_errors", "e", ["alias", "target", "class"], registry=self.registry
        )
        self.ttft = Histogram(
            "lora_syncer_proxy_target_ttft_seconds",
            "t",
            ["alias", "target"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.phase = Gauge(
            "lora_syncer_rollout_phase", "p", ["rollout", "model", "phase"], registry=self.registry
        )
        # Every series exists (at 0) before the first scrape, so increase() over a window that
        # starts before the traffic extrapolates the same way for all of them.
        for target in (STABLE, CANARY):
            self.requests.labels(MODEL, target, "200")
            self.requests.labels(MODEL, target, "502")
            self.errors.labels(MODEL, target, "upstream_5xx")
            self.ttft.labels(MODEL, target)
            self.ttft.labels(QUIET, target)
        self.requests.labels(MODEL, FRESH, "200")  # a canary with no error series at all
        for phase in ("progressing", "aborted"):
            self.phase.labels("r1", MODEL, phase)

    def traffic(self, target: str, requests: int, errors: int, ttft: float) -> None:
        """`requests` answers (of which `errors` failed), every one with this time to first token."""
        self.requests.labels(MODEL, target, "200").inc(requests - errors)
        self.requests.labels(MODEL, target, "502").inc(errors)
        self.errors.labels(MODEL, target, "upstream_5xx").inc(errors)
        for _ in range(requests - errors):
            self.ttft.labels(MODEL, target).observe(ttft)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[MetricsEndpoint]:
    metrics = MetricsEndpoint()

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    metrics.port = runner.addresses[0][1]
    try:
        yield metrics
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def prom(prometheus_factory: PrometheusFactory, endpoint: MetricsEndpoint) -> Prometheus:
    server = await prometheus_factory({"proxy": [endpoint.target]})
    await server.wait_scraped("proxy", scrapes=2)
    return server


@pytest_asyncio.fixture
async def analyzer() -> AsyncIterator[Analyzer]:
    async with Analyzer(timeout=10.0) as made:
        yield made


def rollout(prometheus: PrometheusCheck | None, webhook: str | None = None, **changes: Any) -> RolloutSpec:
    analysis = Analysis(
        interval=300,  # long enough that every window below starts before the first traffic
        max_error_rate=0.1,
        max_latency_ratio=1.5,
        prometheus=prometheus,
        webhook=WebhookCheck(webhook) if webhook else None,
    )
    spec = RolloutSpec(
        name="r1",
        model=MODEL,
        stable=STABLE,
        canary=CANARY,
        steps=(SetWeight(10), SetWeight(100)),
        analysis=analysis,
    )
    return replace(spec, **changes)


def defaults(url: str, **changes: Any) -> PrometheusCheck:
    return replace(
        PrometheusCheck(
            url=url,
            error_rate_query=DEFAULT_ERROR_RATE_QUERY,
            latency_ratio_query=DEFAULT_LATENCY_RATIO_QUERY,
        ),
        **changes,
    )


async def scraped(prom: Prometheus, promql: str, value: float) -> float:
    """Wait until Prometheus holds `value` for `promql`; the instant it saw it (Unix seconds)."""

    async def seen() -> bool:
        result = await prom.query(promql)
        return bool(result) and float(result[0]["value"][1]) == value

    await prom_eventually(seen, promql)
    return time.time()


async def prom_eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    from tests.support.wait import eventually

    await eventually(condition, interval=0.2, message=what)


# A window in which the canary gets traffic, with no local counts: only the external values decide.
TRAFFIC = Window(TargetCounts(), TargetCounts(), canary_weight=10)


def analysis_of(spec: RolloutSpec) -> Analysis:
    assert spec.analysis is not None
    return spec.analysis


CANARY_REQUESTS = f'sum(lora_syncer_proxy_requests_total{{alias="{MODEL}",target="{CANARY}"}})'


class TestPrometheus:
    async def test_default_queries_give_the_fleet_values(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """Error rate 5/100 and p95 TTFT 0.39 s / 0.195 s = 2 from the default templates, at time=window_end."""
        endpoint.traffic(CANARY, requests=100, errors=5, ttft=0.3)
        endpoint.traffic(STABLE, requests=100, errors=0, ttft=0.15)
        end = await scraped(prom, CANARY_REQUESTS, 100)
        spec = rollout(defaults(prom.url))

        result = await analyzer.external(spec, end - 300, end)

        assert isinstance(result, ExternalResult)
        assert result.prometheus_error_rate == pytest.approx(0.05)
        assert result.prometheus_latency_ratio == pytest.approx(2.0)
        assert result.webhook_pass is None
        assert result.reasons == ()
        # The pure verdict takes them as they are: 0.05 <= 0.1 passes, ratio 2 > 1.5 fails.
        verdict = judge(TRAFFIC, analysis_of(spec), result)
        assert verdict.outcome is Outcome.FAIL
        assert {c.name: c.outcome for c in verdict.checks} == {
            "errorRate": Outcome.PASS,
            "latencyRatio": Outcome.FAIL,
        }

    async def test_a_window_in_the_past_gives_the_values_of_then(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """Evaluated at time=window_end: later traffic does not change an earlier window's value."""
        endpoint.traffic(CANARY, requests=100, errors=5, ttft=0.3)
        first_end = await scraped(prom, CANARY_REQUESTS, 100)
        endpoint.traffic(CANARY, requests=100, errors=45, ttft=0.3)
        second_end = await scraped(prom, CANARY_REQUESTS, 200)
        spec = rollout(defaults(prom.url, latency_ratio_query=None))

        earlier = await analyzer.external(spec, first_end - 300, first_end)
        later = await analyzer.external(spec, second_end - 300, second_end)
        again = await analyzer.external(spec, first_end - 300, first_end)

        assert earlier.prometheus_error_rate == pytest.approx(0.05)
        assert later.prometheus_error_rate == pytest.approx(0.25)
        assert again == earlier  # every replica asking about the same window gets the same answer

    async def test_no_errors_at_all_is_a_rate_of_zero(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """Without any error series for the canary the default error rate is 0, not an empty result."""
        spec = rollout(defaults(prom.url, latency_ratio_query=None), canary=FRESH)
        endpoint.requests.labels(MODEL, FRESH, "200").inc(20)
        end = await scraped(
            prom, f'sum(lora_syncer_proxy_requests_total{{alias="{MODEL}",target="{FRESH}"}})', 20
        )
        result = await analyzer.external(spec, end - 300, end)
        assert result.prometheus_error_rate == 0.0
        assert result.reasons == ()

    async def test_nan_and_empty_results_are_no_verdict(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """NaN (no TTFT observed) and an empty result (no such series) are None with the reason."""
        end = time.time()
        quiet = rollout(defaults(prom.url), model=QUIET)
        unknown = rollout(defaults(prom.url), model="nobody-sends-this")

        nan = await analyzer.external(quiet, end - 300, end)
        empty = await analyzer.external(unknown, end - 300, end)

        assert nan.prometheus_latency_ratio is None
        assert nan.reason("latencyRatio") == "the query returned NaN"
        assert empty.prometheus_error_rate is None
        assert empty.prometheus_latency_ratio is None
        assert empty.reason("errorRate") == "the query returned an empty result"
        verdict = judge(TRAFFIC, analysis_of(unknown), empty)
        assert verdict.outcome is Outcome.NO_VERDICT

    async def test_infinity_and_several_series_are_no_verdict(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """+Inf (a division by zero) and a query returning one series per target (3) are never a value."""
        endpoint.traffic(CANARY, requests=10, errors=1, ttft=0.3)
        end = await scraped(prom, CANARY_REQUESTS, 10)
        spec = rollout(
            PrometheusCheck(
                url=prom.url,
                error_rate_query='sum(lora_syncer_proxy_requests_total{alias="{{model}}"}) / 0',
                latency_ratio_query='lora_syncer_proxy_requests_total{alias="{{model}}",status="200"}',
            )
        )
        result = await analyzer.external(spec, end - 300, end)
        assert result.prometheus_error_rate is None
        assert result.reason("errorRate") == "the query returned +Inf"
        assert result.prometheus_latency_ratio is None
        assert "returned 3 series" in (result.reason("latencyRatio") or "")

    async def test_a_query_error_keeps_the_reason_and_never_passes(
        self, prom: Prometheus, analyzer: Analyzer
    ) -> None:
        """A query Prometheus cannot parse is no verdict with Prometheus's own message."""
        spec = rollout(PrometheusCheck(url=prom.url, error_rate_query="sum(rate(x[{{interval}}])"))
        end = time.time()
        result = await analyzer.external(spec, end - 300, end)
        assert result.prometheus_error_rate is None
        reason = result.reason("errorRate") or ""
        assert reason.startswith("Prometheus answered 400: bad_data:"), reason
        verdict = judge(TRAFFIC, analysis_of(spec), result)
        assert verdict.outcome is Outcome.NO_VERDICT

    async def test_fleet_abort_is_seen_from_any_replica(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """`max(lora_syncer_rollout_phase{phase="aborted"})`: False before, True once a replica reports it."""
        spec = rollout(defaults(prom.url))
        before = time.time()
        assert await analyzer.fleet_aborted(spec, before) is False
        assert await analyzer.fleet_aborted(replace(spec, name="never-reported"), before) is False

        endpoint.phase.labels("r1", MODEL, "progressing").set(0)
        endpoint.phase.labels("r1", MODEL, "aborted").set(1)
        after = await scraped(prom, 'max(lora_syncer_rollout_phase{rollout="r1",phase="aborted"})', 1)

        assert await analyzer.fleet_aborted(spec, after) is True
        assert await analyzer.fleet_aborted(spec, before) is False  # the past is as it was
        assert await analyzer.fleet_aborted(replace(spec, analysis=None), after) is None

    async def test_history_gives_a_past_windows_answers_and_says_when_there_is_no_value(
        self, prom: Prometheus, endpoint: MetricsEndpoint, analyzer: Analyzer
    ) -> None:
        """What a pod replaying the past asks: the same values as a live pod got for that window;
        an empty result is an answer without a value (answered), a broken query is no answer."""
        endpoint.traffic(CANARY, requests=100, errors=5, ttft=0.3)
        endpoint.traffic(STABLE, requests=100, errors=0, ttft=0.15)
        end = await scraped(prom, CANARY_REQUESTS, 100)
        spec = rollout(defaults(prom.url))
        live = await analyzer.external(spec, end - 300, end)
        endpoint.traffic(CANARY, requests=100, errors=90, ttft=0.7)  # later traffic changes nothing
        await scraped(prom, CANARY_REQUESTS, 200)

        past, unanswered = await analyzer.history(spec, end - 300, end)
        assert unanswered is None
        assert past == live and past.prometheus_error_rate is not None

        nothing, unanswered = await analyzer.history(
            rollout(defaults(prom.url), model="nobody"), end - 300, end
        )
        assert unanswered is None and nothing.prometheus_error_rate is None
        assert nothing.reason("errorRate") == "the query returned an empty result"

        broken = rollout(PrometheusCheck(url=prom.url, error_rate_query="sum(rate(x[{{interval}}])"))
        _, unanswered = await analyzer.history(broken, end - 300, end)
        assert (unanswered or "").startswith("errorRate: Prometheus answered 400: bad_data:"), unanswered


class TestPrometheusAccess:
    async def test_an_unreachable_prometheus_is_no_verdict(self, analyzer: Analyzer) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        spec = rollout(defaults(url))
        end = time.time()
        result = await analyzer.external(spec, end - 300, end)
        assert result.prometheus_error_rate is None and result.prometheus_latency_ratio is None
        assert (result.reason("errorRate") or "").startswith(
            f"Prometheus at {url}/api/v1/query: ClientConnectorError"
        )
        assert await analyzer.fleet_aborted(spec, end) is None
        _, unanswered = await analyzer.history(spec, end - 300, end)
        assert (unanswered or "").startswith(
            f"errorRate: Prometheus at {url}/api/v1/query: ClientConnectorError"
        )

    async def test_a_prometheus_that_does_not_answer_in_time_is_no_verdict(self) -> None:
        """A server that accepts the query and hangs: no verdict after the Analyzer's timeout."""
        release = asyncio.Event()

        async def hang(_: web.Request) -> web.Response:
            await release.wait()
            return web.json_response(
                {"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}}
            )

        app = web.Application()
        app.router.add_post("/api/v1/query", hang)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with Analyzer(timeout=0.5) as analyzer:
                result = await analyzer.external(rollout(defaults(url)), 0.0, 300.0)
        finally:
            release.set()
            await runner.cleanup()
        assert result.prometheus_error_rate is None and result.prometheus_latency_ratio is None
        assert result.reason("errorRate") == f"Prometheus at {url}/api/v1/query did not answer within 0.5 s"

    async def test_bearer_token_is_read_at_each_call_and_never_logged(
        self, prom: Prometheus, endpoint: MetricsEndpoint, tmp_path: Path
    ) -> None:
        """A gateway in front of the real Prometheus wants the token of the moment; the file is re-read."""
        token_file = tmp_path / "token"
        wanted = {"token": "first-secret-token"}
        seen: list[str] = []

        async def gateway(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            seen.append(auth)
            if auth != f"Bearer {wanted['token']}":
                return web.json_response(
                    {"status": "error", "errorType": "unauthorized", "error": "bad token"}, status=401
                )
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{prom.url}/api/v1/query", data=await request.post()) as upstream,
            ):
                return web.Response(
                    body=await upstream.read(), status=upstream.status, content_type="application/json"
                )

        app = web.Application()
        app.router.add_post("/api/v1/query", gateway)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            endpoint.traffic(CANARY, requests=100, errors=5, ttft=0.3)
            end = await scraped(prom, CANARY_REQUESTS, 100)
            spec = rollout(defaults(url, bearer_token_file=str(token_file), latency_ratio_query=None))
            with capture_logs() as logs:
                async with Analyzer() as analyzer:
                    token_file.write_text("first-secret-token\n")
                    first = await analyzer.external(spec, end - 300, end)
                    wanted["token"] = "rotated-secret-token"  # the server rotated it ...
                    stale = await analyzer.external(spec, end - 300, end)
                    token_file.write_text("rotated-secret-token")  # ... and kubelet wrote the new one
                    rotated = await analyzer.external(spec, end - 300, end)
                    token_file.unlink()
                    missing = await analyzer.external(spec, end - 300, end)
        finally:
            await runner.cleanup()

        assert first.prometheus_error_rate == pytest.approx(0.05)
        assert stale.prometheus_error_rate is None
        assert stale.reason("errorRate") == "Prometheus answered 401: unauthorized: bad token"
        assert rotated.prometheus_error_rate == pytest.approx(0.05)
        assert missing.prometheus_error_rate is None
        assert missing.reason("errorRate") == f"cannot read {token_file}: No such file or directory"
        assert seen == [
            "Bearer first-secret-token",
            "Bearer first-secret-token",
            "Bearer rotated-secret-token",
        ]
        assert logs, "the no-value windows are logged"
        assert "secret-token" not in repr(logs)

    async def test_https_with_ca_file(
        self,
        prometheus_factory: PrometheusFactory,
        endpoint: MetricsEndpoint,
        tmp_path: Path,
        analyzer: Analyzer,
    ) -> None:
        """A Prometheus serving HTTPS with a private CA: trusted with caFile, no verdict without it."""
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        await asyncio.to_thread(
            subprocess.run,
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        secure = await prometheus_factory({"proxy": [endpoint.target]}, tls=(cert, key))
        await secure.wait_scraped("proxy", scrapes=2)
        end = time.time()
        spec = rollout(defaults(secure.url, ca_file=str(cert)), model=QUIET)
        trusted = await analyzer.external(spec, end - 300, end)
        untrusted = await analyzer.external(rollout(defaults(secure.url), model=QUIET), end - 300, end)
        bad_ca = await analyzer.external(
            rollout(defaults(secure.url, ca_file=str(key)), model=QUIET), end - 300, end
        )

        assert trusted.reason("latencyRatio") == "the query returned NaN"  # an answer over TLS
        assert trusted.reason("errorRate") == "the query returned an empty result"
        assert "ClientConnectorCertificateError" in (untrusted.reason("errorRate") or "")
        assert (bad_ca.reason("errorRate") or "").startswith(f"caFile {key}: not a usable CA bundle")


@dataclass
class Hook:
    """A webhook server answering what the test says; it records every document it received."""

    answer: Callable[[dict[str, Any]], Awaitable[web.Response]]
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[Hook]:
    made = Hook(answer=lambda doc: _json({"pass": True}))

    async def handle(request: web.Request) -> web.Response:
        doc = await request.json()
        made.received.append(doc)
        return await made.answer(doc)

    app = web.Application()
    app.router.add_post("/check", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    made.url = f"http://127.0.0.1:{runner.addresses[0][1]}/check"
    try:
        yield made
    finally:
        await runner.cleanup()


async def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status)


class TestWebhook:
    async def test_the_window_is_posted_and_pass_is_the_answer(self, hook: Hook, analyzer: Analyzer) -> None:
        spec = rollout(None, webhook=hook.url)
        window = Window(
            stable=TargetCounts(requests=90, errors=1, ttft=(0.1, 0.2), completion_tokens=900),
            canary=TargetCounts(requests=10, errors=0, ttft=(0.3,), empty=1, completion_tokens=80),
            canary_weight=10,
        )
        passed = await analyzer.external(spec, 1_796_119_200.0, 1_796_119_230.0, step=0, window=window)
        hook.answer = lambda doc: _json({"pass": False, "why": "evals regressed"})
        failed = await analyzer.external(spec, 1_796_119_230.0, 1_796_119_260.0)

        assert passed.webhook_pass is True and passed.reasons == ()
        assert failed.webhook_pass is False
        assert hook.received[0] == {
            "rollout": "r1",
            "model": MODEL,
            "stable": STABLE,
            "canary": CANARY,
            "step": 0,
            "windowStart": "2026-12-01T10:00:00Z",
            "windowEnd": "2026-12-01T10:00:30Z",
            "windowStartSeconds": 1_796_119_200.0,
            "windowEndSeconds": 1_796_119_230.0,
            "canaryWeight": 10,
            "mirrorPercent": 0,
            "counts": {
                "stable": {
                    "requests": 90,
                    "errors": 1,
                    "empty": 0,
                    "completionTokens": 900,
                    "ttftP95Seconds": 0.2,
                },
                "canary": {
                    "requests": 10,
                    "errors": 0,
                    "empty": 1,
                    "completionTokens": 80,
                    "ttftP95Seconds": 0.3,
                },
            },
        }
        assert hook.received[1]["step"] is None and hook.received[1]["counts"] is None

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [
            (lambda: _json({"pass": True}, status=500), "answered 500"),
            (lambda: _text("ok"), "a body that is not JSON: 'ok'"),
            (lambda: _json({"pass": "yes"}), 'must answer {"pass": true|false}'),
            (lambda: _json([True]), 'must answer {"pass": true|false}'),
            (lambda: _json({}), 'must answer {"pass": true|false}'),
        ],
        ids=["status-500", "not-json", "pass-not-bool", "not-an-object", "no-pass"],
    )
    async def test_anything_else_is_no_verdict(
        self, hook: Hook, analyzer: Analyzer, answer: Callable[[], Awaitable[web.Response]], reason: str
    ) -> None:
        hook.answer = lambda doc: answer()
        spec = rollout(None, webhook=hook.url)
        result = await analyzer.external(spec, 0.0, 30.0)
        assert result.webhook_pass is None
        assert reason in (result.reason("webhook") or "")
        verdict = judge(TRAFFIC, analysis_of(spec), result)
        assert verdict.outcome is not Outcome.PASS

    async def test_a_slow_webhook_is_no_verdict(self, hook: Hook) -> None:
        release = asyncio.Event()

        async def slow(doc: dict[str, Any]) -> web.Response:
            await release.wait()
            return await _json({"pass": True})

        hook.answer = slow
        async with Analyzer(timeout=0.5) as analyzer:
            result = await analyzer.external(rollout(None, webhook=hook.url), 0.0, 30.0)
        release.set()
        assert result.webhook_pass is None
        assert result.reason("webhook") == f"the webhook {hook.url} did not answer within 0.5 s"


class TestParsing:
    """The instant-query answer shapes Prometheus documents, without a server."""

    @pytest.mark.parametrize(
        ("body", "value", "reason"),
        [
            ('{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}', 0.5, ""),
            ('{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-Inf"]}]}}', None, "the query returned -Inf"),
            ('{"status":"success","data":{"resultType":"matrix","result":[]}}', None, "the query returned a matrix; it must return a scalar or one-series vector"),
            ('{"status":"success","data":{"resultType":"string","result":[1,"x"]}}', None, "the query returned a string; it must return a scalar or one-series vector"),
            ("[]", None, "Prometheus answered 200 with JSON that is not an object"),
        ],
    )  # fmt: skip
    def test_shapes(self, body: str, value: float | None, reason: str) -> None:
        assert parse_query_answer(200, body) == parse_query_answer(200, body)
        result = parse_query_answer(200, body)
        assert (result.value, result.reason) == (value, reason)

    def test_templates_render_escaped_names_and_the_interval(self) -> None:
        spec = rollout(None, canary='we"ird\\name')
        spec = replace(spec, analysis=replace(analysis_of(spec), interval=5400))
        assert (
            render_query(spec, "{{ canary }} [{{interval}}] {{model}}")
            == 'we\\"ird\\\\name [1h30m] small-segment-lora'
        )
