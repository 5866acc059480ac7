"""Per-alias, per-target telemetry: an exchange observer for dashboards, alerts and rollout analysis.

Every exchange that a rule matched and sent to a target feeds:

- Prometheus series labelled `{alias, target}` (names are a contract with dashboards and alerts):
  `lora_syncer_proxy_target_errors_total{class}`, `lora_syncer_proxy_target_ttft_seconds`,
  `lora_syncer_proxy_target_duration_seconds`, `lora_syncer_proxy_target_finish_reasons_total{reason}`
  and `lora_syncer_proxy_target_completion_tokens_total` (requests by status are the existing
  `lora_syncer_proxy_requests_total{alias, target, status}`);
- a bounded buffer of raw samples per (alias, target), from which `counts()` gives a rollout's
  analysis window (`rollout.verdict.TargetCounts`): local p95 comes from real samples, not buckets.

Error classes are the upstream's failures only (`exchange.ErrorClass`); a 4xx answer is a request
that is not an error, and a client that went away says nothing about the target (not counted in
the samples; the metrics count it under its 499 status).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry

from lora_syncer.proxy.exchange import Exchange
from lora_syncer.proxy.metrics import CounterChild, HistogramChild, HotCounter, HotHistogram
from lora_syncer.rollout.verdict import TargetCounts

# Time to first token runs from tens of milliseconds to a minute under load.
_TTFT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Samples kept per (alias, target): enough for several minutes of a busy canary, bounded whatever the load.
MAX_SAMPLES: Final = 50_000
# Samples older than this are dropped (no analysis window is longer than a few minutes in practice).
RETENTION_SECONDS: Final = 3600.0
# finish_reason values kept as label values; anything else is counted as "other" (bounded cardinality).
KNOWN_FINISH_REASONS: Final = frozenset({"stop", "length", "tool_calls", "content_filter", "abort", "error"})


class _Series:
    """The label children of one (alias, target), bound once: the observer runs on every request."""

    __slots__ = ("duration", "finish", "tokens", "ttft")

    def __init__(self, telemetry: TargetTelemetry, alias: str, target: str) -> None:
        self.ttft: HistogramChild = telemetry.ttft.labels(alias, target)
        self.duration: HistogramChild = telemetry.duration.labels(alias, target)
        self.tokens: CounterChild = telemetry.completion_tokens.labels(alias, target)
        self.finish: dict[str, CounterChild] = {}


# One finished request to a target: (at, error, ttft, empty, completion_tokens), `at` in wall-clock
# Unix seconds. A plain tuple: one is made per request and tens of thousands are kept; a tuple of
# plain values is cheap to make and is left alone by the garbage collector (a NamedTuple's
# constructor is interpreted Python even in the compiled build).
Sample = tuple[float, bool, float | None, bool, int]


class TargetTelemetry:
    """The observer (`observe`) and the window query (`counts`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        self.clock = clock
        self.max_samples = max_samples
        self._samples: dict[tuple[str, str], deque[Sample]] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        # Hot families (lock-free, see proxy.metrics): updated on the event-loop thread only.
        self.errors = HotCounter(
            "lora_syncer_proxy_target_errors",
            "Upstream failures per alias and target, by class "
            "(upstream_5xx, connect, timeout, broken_stream, sse_error).",
            ["alias", "target", "class"],
            registry,
        )
        self.ttft = HotHistogram(
            "lora_syncer_proxy_target_ttft_seconds",
            "Time from receiving a request to the first body chunk from its target (time to first token).",
            ["alias", "target"],
            registry,
            _TTFT_BUCKETS,
        )
        self.duration = HotHistogram(
            "lora_syncer_proxy_target_duration_seconds",
            "Time from receiving a request to the last byte of its answer, per alias and target.",
            ["alias", "target"],
            registry,
            _DURATION_BUCKETS,
        )
        self.finish_reasons = HotCounter(
            "lora_syncer_proxy_target_finish_reasons",
            "Answers per alias and target by finish_reason (stop, length, ...; other for unknown values).",
            ["alias", "target", "reason"],
            registry,
        )
        self.completion_tokens = HotCounter(
            "lora_syncer_proxy_target_completion_tokens",
            "Completion tokens the target's answers reported (usage.completion_tokens).",
            ["alias", "target"],
            registry,
        )

    def observe(self, ex: Exchange) -> None:
        """The exchange observer: only requests a rule sent to a target are counted."""
        target = ex.target
        alias = ex.alias
        if target is None or not alias:
            return
        key = (alias, target)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, alias, target)
        if ex.error is not None and not ex.client_closed:
            self.errors.labels(alias, target, ex.error).value += 1
        ttft = ex.first_chunk - ex.started if ex.first_chunk is not None else None
        if ttft is not None:
            series.ttft.observe(ttft)
        if ex.ended is not None:
            series.duration.observe(ex.ended - ex.started)
        if ex.finish_reason is not None:
            reason = ex.finish_reason if ex.finish_reason in KNOWN_FINISH_REASONS else "other"
            child = series.finish.get(reason)
            if child is None:
                child = series.finish[reason] = self.finish_reasons.labels(alias, target, reason)
            child.value += 1
        tokens = ex.completion_tokens or 0
        if tokens > 0:
            series.tokens.value += tokens
        if ex.client_closed:
            return  # the client left: nothing learnt about the target
        error = ex.error is not None
        # An answer that reported no completion tokens at all is empty (a broken adapter's favourite).
        at = self.clock()
        sample: Sample = (
            at,
            error,
            ttft if not error else None,
            not error and ex.completion_tokens == 0,
            tokens,
        )
        buf = self._samples.get(key)
        if buf is None:
            buf = self._samples[key] = deque(maxlen=self.max_samples)
        buf.append(sample)
        horizon = at - RETENTION_SECONDS
        while buf and buf[0][0] < horizon:
            buf.popleft()

    def counts(self, alias: str, target: str, start: float, end: float) -> TargetCounts:
        """What `target` did for `alias` among requests that finished in [start, end)."""
        buf = self._samples.get((alias, target))
        if not buf:
            return TargetCounts()
        requests = errors = empty = tokens = 0
        ttft: list[float] = []
        for at, error, first, was_empty, completion in buf:
            if at < start or at >= end:
                continue
            requests += 1
            if error:
                errors += 1
                continue
            if first is not None:
                ttft.append(first)
            if was_empty:
                empty += 1
            tokens += completion
        return TargetCounts(
            requests=requests, errors=errors, ttft=tuple(ttft), empty=empty, completion_tokens=tokens
        )
