"""The syncer's Prometheus metrics, on a registry the caller owns (one per process or test)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
