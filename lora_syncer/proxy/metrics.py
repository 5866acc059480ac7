"""Prometheus metrics of the rewrite proxy, registered on the registry the caller owns.

Label values come only from the rules file (aliases, targets, rule ids) and from a fixed set
(status codes, error kinds): never from what a client sends, so cardinality stays bounded.
Requests that no rule matched carry `alias=""` and `target=""`; requests the proxy answered
before choosing a target (refused, drained, or failed before the rewrite) carry `target="(none)"`
and the alias when a rule matched.

The per-request series (requests, durations, time to first byte, pool requests, rewrite
decisions) are `HotCounter`/`HotHistogram`: plain numbers in slotted children, added up by a
collector at scrape time. prometheus_client's own take a lock and go through several layers on
every update, which cost the proxy several percent of its CPU; the proxy updates them only on
its event-loop thread, where the scrape also runs, so no lock is needed. The exposition is the
same (`_total`, `_bucket`, `_sum`, `_count`, `_created`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics import _use_created
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from lora_syncer.proxy.exchange import Exchange
from lora_syncer.proxy.shadow import ShadowMetrics

# Proxy overhead is sub-millisecond; generations run for seconds or minutes.
_DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # `le` buckets: the first bound >= value, +Inf past the last. A plain scan: a dozen bounds,
        # compiled to a C loop, costs less than calling bisect with a boxed float.
        i = 0
        for bound in self.bounds:
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.sum += value


class _Hot(Collector):
    """A labelled family updated without locks on the event-loop thread and read at scrape time."""

    typ = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.typ)]

    def _labels(self, values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))


class HotCounter(_Hot):
    """A counter (`<name>_total`) whose children are plain floats."""

    typ = "counter"

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
            child = self._children[values] = CounterChild()
        return child

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, self.typ)
        for values, child in list(self._children.items()):
            labels = self._labels(values)
            metric.add_sample(self.name + "_total", labels, child.value)
            if _use_created:
                metric.add_sample(self.name + "_created", labels, child.created)
        yield metric


class HotHistogram(_Hot):
    """A histogram whose children keep per-bucket counts (cumulated at scrape time)."""

    typ = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, self.typ)
        name = self.name
        for values, child in list(self._children.items()):
            labels = self._labels(values)
            running = 0
            for le, count in zip(self._le, child.counts, strict=True):
                running += count
                metric.add_sample(name + "_bucket", {**labels, "le": le}, running)
            metric.add_sample(name + "_count", labels, running)
            metric.add_sample(name + "_sum", labels, child.sum)
            if _use_created:
                metric.add_sample(name + "_created", labels, child.created)
        yield metric


class ProxyMetrics:
    """The proxy's counters, histograms and gauges; label children are cached for the hot path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = HotCounter(
            "lora_syncer_proxy_requests",
            "Requests answered by the proxy, by alias (rule match), served target and HTTP status.",
            ["alias", "target", "status"],
            registry,
        )
        self.duration = HotHistogram(
            "lora_syncer_proxy_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its answer.",
            ["alias"],
            registry,
            _DURATION_BUCKETS,
        )
        self.first_byte = HotHistogram(
            "lora_syncer_proxy_time_to_first_byte_seconds",
            "Time from receiving a request to sending the answer's headers.",
            ["alias"],
            registry,
            _DURATION_BUCKETS,
        )
        self.upstream_errors = Counter(
            "lora_syncer_proxy_upstream_errors",
            "Failures talking to the model server, by kind (connect, timeout, disconnect, other).",
            ["kind"],
            registry=registry,
        )
        self.refused = Counter(
            "lora_syncer_proxy_refused_requests",
            "Requests the proxy answered itself, by reason (admin_route, bad_request, too_large, drained).",
            ["reason"],
            registry=registry,
        )
        # Plain counters on the hot path, read by the gauges at scrape time (no lock per request).
        self.forwarding = 0
        self.streaming = 0
        self.active_requests = Gauge(
            "lora_syncer_proxy_active_requests", "Requests being forwarded right now.", registry=registry
        )
        self.active_requests.set_function(lambda: self.forwarding)
        self.active_streams = Gauge(
            "lora_syncer_proxy_active_streams",
            "Streamed answers (server-sent events or chunked) being relayed right now.",
            registry=registry,
        )
        self.active_streams.set_function(lambda: self.streaming)
        self.client_disconnects = Counter(
            "lora_syncer_proxy_client_disconnects",
            "Requests whose client went away before the answer was complete (the upstream call is cancelled).",
            registry=registry,
        )
        self.decisions = HotCounter(
            "lora_syncer_model_rewrite_decisions",
            "Rewrite decisions by rule id and chosen target (`drained` when every target has weight 0).",
            ["rule", "target"],
            registry,
        )
        self.rules_reloads = Counter(
            "lora_syncer_proxy_rules_reloads",
            "Rules file reloads by outcome (changed, unchanged, error).",
            ["outcome"],
            registry=registry,
        )
        self.rules_valid = Gauge(
            "lora_syncer_proxy_rules_file_valid",
            "1 when the rules file last read was valid, 0 when the last good rules are kept in force.",
            registry=registry,
        )
        self.rules_last_success = Gauge(
            "lora_syncer_proxy_rules_last_success_timestamp_seconds",
            "When a good rules file was last taken into force",
            registry=registry,
        )
        self.rules_in_force = Gauge(
            "lora_syncer_proxy_rules", "Rules in force (one per alias plus the catch-all).", registry=registry
        )
        self.pool_requests = HotCounter(
            "lora_syncer_proxy_pool_requests",
            "Requests answered through each upstream pool, by HTTP status.",
            ["pool", "status"],
            registry,
        )
        self.pool_errors = Counter(
            "lora_syncer_proxy_pool_errors",
            "Failures of each pool: connect, timeout, disconnect (before an answer) and status_5xx answers.",
            ["pool", "kind"],
            registry=registry,
        )
        self.pool_retries = Counter(
            "lora_syncer_proxy_pool_retries",
            "Requests that could not reach this pool and were sent to another pool instead.",
            ["pool"],
            registry=registry,
        )
        self.pool_up_gauge = Gauge(
            "lora_syncer_proxy_pool_up",
            "1 while the pool is in the rotation, 0 while its circuit breaker keeps it out.",
            ["pool"],
            registry=registry,
        )
        self.pool_weight = Gauge(
            "lora_syncer_proxy_pool_weight",
            "The pool's weight in force (from --pool or the rules file's HTTPRoute).",
            ["pool"],
            registry=registry,
        )
        self.shadow = ShadowMetrics(registry)  # copies are counted apart from the real traffic
        self._pools: set[str] = set()
        # Pre-bound children per label set: one dict lookup per series on the hot path.
        self._pool_children: dict[tuple[str, int], CounterChild] = {}
        self._children: dict[tuple[str, str, int], CounterChild] = {}
        self._durations: dict[str, HistogramChild] = {}
        self._first_bytes: dict[str, HistogramChild] = {}

    def observe(self, alias: str, target: str, status: int, duration: float) -> None:
        """Count one finished request and record its duration."""
        key = (alias, target, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(alias, target, str(status))
        child.value += 1
        hist = self._durations.get(alias)
        if hist is None:
            hist = self._durations[alias] = self.duration.labels(alias)
        hist.observe(duration)

    def observe_exchange(self, ex: Exchange) -> None:
        """The observer of every finished exchange: requests, durations, time to first byte, pool requests."""
        started = ex.started
        ended = ex.ended if ex.ended is not None else started
        alias = ex.alias
        status = ex.status
        self.observe(alias, ex.target_label, status, ended - started)
        if ex.head_sent is not None:
            hist = self._first_bytes.get(alias)  # observe_first_byte, inlined: once per request
            if hist is None:
                hist = self._first_bytes[alias] = self.first_byte.labels(alias)
            hist.observe(ex.head_sent - started)
        if ex.pool:
            self.pool_request(ex.pool, status)

    def observe_first_byte(self, alias: str, seconds: float) -> None:
        hist = self._first_bytes.get(alias)
        if hist is None:
            hist = self._first_bytes[alias] = self.first_byte.labels(alias)
        hist.observe(seconds)

    def decision(self, rule: str, target: str) -> None:
        """Count one rewrite decision (`target` is `drained` when every target has weight 0)."""
        self.decisions.labels(rule, target).value += 1

    def set_pools(self, weights: dict[str, int], up: dict[str, bool]) -> None:
        """Publish the pools in force; pools that left the set lose their gauges."""
        for gone in self._pools - set(weights):
            for gauge in (self.pool_up_gauge, self.pool_weight):
                with contextlib.suppress(KeyError):  # never set
                    gauge.remove(gone)
        self._pools = set(weights)
        for name, weight in weights.items():
            self.pool_weight.labels(name).set(weight)
            self.pool_up_gauge.labels(name).set(1 if up.get(name, True) else 0)

    def pool_up(self, pool: str, up: bool) -> None:
        if pool in self._pools:
            self.pool_up_gauge.labels(pool).set(1 if up else 0)

    def pool_request(self, pool: str, status: int) -> None:
        key = (pool, status)
        child = self._pool_children.get(key)
        if child is None:
            child = self._pool_children[key] = self.pool_requests.labels(pool, str(status))
        child.value += 1

    def pool_error(self, pool: str, kind: str) -> None:
        self.pool_errors.labels(pool, kind).inc()

    def pool_retry(self, pool: str) -> None:
        self.pool_retries.labels(pool).inc()
