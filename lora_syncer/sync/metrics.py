"""The syncer's Prometheus metrics, on a registry the caller owns (one per process or test)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lora_syncer.sync.capacity import CapacityReport
from lora_syncer.sync.states import AdapterState
from lora_syncer.sync.status import SyncStatus


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The upstream sidecar's gauge, kept name for name so dashboards keep working. Read from
        # the sync status at scrape time: no per-adapter metric objects to keep in step.
        self._status: SyncStatus | None = None
        registry.register(_AdapterStatusCollector(self))
        self.adapters_by_state = Gauge(
            "lora_syncer_adapters", "Adapters known to the syncer, by state", ["state"], registry=registry
        )
        self.passes = Counter(
            "lora_syncer_reconcile_passes", "Reconcile passes, by result", ["result"], registry=registry
        )
        self.pass_seconds = Histogram(
            "lora_syncer_reconcile_duration_seconds",
            "Wall time of one reconcile pass",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.operations = Counter(
            "lora_syncer_adapter_operations",
            "Load/unload calls to vLLM, by operation and result",
            ["op", "result"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "lora_syncer_config_reloads", "Adapters-file reads, by result", ["result"], registry=registry
        )
        self.config_valid = Gauge(
            "lora_syncer_config_valid",
            "1 when the adapters file in place parsed and validated",
            registry=registry,
        )
        self.last_good_reload = Gauge(
            "lora_syncer_config_last_success_timestamp_seconds",
            "When a good adapters file was last taken into force",
            registry=registry,
        )
        self._last_good_at: float | None = None
        since = Gauge(
            "lora_syncer_config_seconds_since_last_success",
            "Seconds since a good adapters file was last read (-1 before the first)",
            registry=registry,
        )
        since.set_function(lambda: -1.0 if self._last_good_at is None else time.time() - self._last_good_at)
        self.prune_held = Gauge(
            "lora_syncer_prune_held_adapters",
            "Undeclared adapters --prune would unload, held because they exceed --prune-max",
            registry=registry,
        )
        self.server_up = Gauge(
            "lora_syncer_server_up", "1 when vLLM answered the last pass", registry=registry
        )
        # Remote adapter sources (--adapter-cache).
        self.download_bytes = Counter(
            "lora_syncer_source_download_bytes",
            "Bytes downloaded from s3:// and https:// adapter sources",
            registry=registry,
        )
        self.download_seconds = Histogram(
            "lora_syncer_source_download_seconds",
            "Wall time of one successful adapter download (fetch and verify)",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self.download_failures = Counter(
            "lora_syncer_source_download_failures",
            "Failed adapter downloads, by reason (checksum_mismatch, download_failed, too_large, ...)",
            ["reason"],
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "lora_syncer_adapter_cache_bytes", "Bytes of adapter versions in the cache", registry=registry
        )
        self.cache_overflow_bytes = Gauge(
            "lora_syncer_adapter_cache_overflow_bytes",
            "Bytes over --adapter-cache-max-bytes that GC may not free (declared or loaded versions)",
            registry=registry,
        )

        self.warmups = Counter(
            "lora_syncer_warmups",
            "Warm-up requests (--warmup), by result: ok, failed, server_unavailable",
            ["result"],
            registry=registry,
        )
        self.warmup_seconds = Histogram(
            "lora_syncer_warmup_duration_seconds",
            "Wall time of one adapter's warm-up request (with the client's retries), by result",
            ["result"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.capacity_exceeded = Gauge(
            "lora_syncer_capacity_exceeded",
            "1 when more adapters are declared than the server keeps in CPU memory (max_cpu_loras)",
            registry=registry,
        )
        self.capacity_declared = Gauge(
            "lora_syncer_capacity_declared_adapters",
            "Adapters declared in ensureExist, as counted by the capacity check",
            registry=registry,
        )
        self.capacity_limit = Gauge(
            "lora_syncer_capacity_max_cpu_loras",
            "Adapters the server keeps in CPU memory, as used by the capacity check (-1 unknown)",
            registry=registry,
        )
        self.capacity_max_lora = Gauge(
            "lora_syncer_capacity_max_loras",
            "Adapters the server runs at once (GPU slots), from vLLM's /metrics max_lora (-1 unknown)",
            registry=registry,
        )
        self.capacity_limit.set(-1)
        self.capacity_max_lora.set(-1)

    def watch(self, status: SyncStatus) -> None:
        """Serve `lora_syncer_adapter_status` from this status."""
        self._status = status

    # The adapters file's `ReloadMetrics`.

    def reloaded(self, outcome: str) -> None:
        self.config_reloads.labels(result=outcome).inc()

    def valid(self, ok: bool) -> None:
        self.config_valid.set(1 if ok else 0)

    def good(self, at: float) -> None:
        self._last_good_at = at
        self.last_good_reload.set(at)

    def set_capacity(self, report: CapacityReport) -> None:
        self.capacity_exceeded.set(1 if report.exceeded else 0)
        self.capacity_declared.set(report.declared)
        self.capacity_limit.set(-1 if report.limit is None else report.limit)
        self.capacity_max_lora.set(-1 if report.max_lora is None else report.max_lora)

    # The adapter cache's `DownloadMeter`.

    def downloaded(self, nbytes: int, seconds: float) -> None:
        self.download_bytes.inc(nbytes)
        self.download_seconds.observe(seconds)

    def download_failed(self, reason: str, nbytes: int) -> None:
        self.download_bytes.inc(nbytes)
        self.download_failures.labels(reason=reason).inc()

    def set_state_counts(self, counts: dict[str, int]) -> None:
        for state in AdapterState:
            self.adapters_by_state.labels(state=state.value).set(counts.get(state.value, 0))


class _AdapterStatusCollector(Collector):
    """`lora_syncer_adapter_status{adapter_name}`: 1 when the server lists the adapter, else 0."""

    labelnames = ("adapter_name",)

    def __init__(self, metrics: SyncMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return [_family()]

    def collect(self) -> Iterator[Metric]:
        family = _family()
        status = self._metrics._status
        if status is not None:
            served = status.served
            for adapter_id in status.adapters:
                family.add_metric([adapter_id], 1.0 if adapter_id in served else 0.0)
        yield family


def _family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "lora_syncer_adapter_status",
        "Status of LoRA adapters (1=loaded, 0=not_loaded)",
        labels=["adapter_name"],
    )
