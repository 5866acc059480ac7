"""Per-target telemetry: the metrics and the raw samples a rollout window is judged from."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from lora_syncer.proxy.exchange import ErrorClass, Exchange
from lora_syncer.proxy.telemetry import TargetTelemetry


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def exchange(
    target: str | None,
    *,
    status: int = 200,
    error: ErrorClass | None = None,
    ttft: float | None = 0.2,
    tokens: int | None = 5,
    closed: bool = False,
) -> Exchange:
    ex = Exchange(make_mocked_request("POST", "/v1/completions"), 10.0)
    ex.alias, ex.target, ex.status, ex.error, ex.client_closed = "m", target, status, error, closed
    ex.first_chunk = 10.0 + ttft if ttft is not None else None
    ex.ended = 11.0
    ex.finish_reason = "stop" if tokens else None
    ex.completion_tokens = tokens
    return ex


def test_counts_per_window_and_the_metrics() -> None:
    registry = CollectorRegistry()
    clock = Clock()
    tel = TargetTelemetry(registry, clock=clock)
    tel.observe(exchange("m-v2", ttft=0.1))
    tel.observe(exchange("m-v2", status=500, error="upstream_5xx", ttft=None, tokens=None))
    tel.observe(exchange("m-v2", status=400, tokens=0))  # a 4xx is a request, not an error
    tel.observe(exchange("m-v2", status=499, closed=True))  # the client left: not counted
    tel.observe(exchange("m-v1", ttft=0.3, tokens=7))
    clock.t = 1001.0
    tel.observe(exchange("m-v2", ttft=0.4))  # the next window
    c = tel.counts("m", "m-v2", 1000.0, 1001.0)
    assert (c.requests, c.errors, c.empty, c.completion_tokens) == (3, 1, 1, 5)
    assert [round(t, 6) for t in sorted(c.ttft)] == [0.1, 0.2]
    assert tel.counts("m", "m-v1", 1000.0, 1001.0).completion_tokens == 7
    assert tel.counts("m", "m-v2", 1001.0, 1002.0).requests == 1
    assert tel.counts("other", "x", 0, 2000).requests == 0
    value = registry.get_sample_value
    assert (
        value(
            "lora_syncer_proxy_target_errors_total", {"alias": "m", "target": "m-v2", "class": "upstream_5xx"}
        )
        == 1
    )
    assert value("lora_syncer_proxy_target_ttft_seconds_count", {"alias": "m", "target": "m-v2"}) == 4
    assert value("lora_syncer_proxy_target_duration_seconds_count", {"alias": "m", "target": "m-v1"}) == 1
    assert (
        value(
            "lora_syncer_proxy_target_finish_reasons_total",
            {"alias": "m", "target": "m-v1", "reason": "stop"},
        )
        == 1
    )
    assert value("lora_syncer_proxy_target_completion_tokens_total", {"alias": "m", "target": "m-v1"}) == 7


def test_unmatched_requests_are_ignored_and_buffers_are_bounded() -> None:
    tel = TargetTelemetry(CollectorRegistry(), clock=Clock(), max_samples=10)
    tel.observe(exchange(None))
    for _ in range(25):
        tel.observe(exchange("m-v2"))
    assert tel.counts("m", "m-v2", 0, 2000).requests == 10
