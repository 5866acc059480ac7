"""The proxy's lock-free per-request metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.proxy.metrics import HotCounter, HotHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
VALUES = (0.0, 0.001, 0.0010001, 0.05, 0.1, 3.0, 10.0, 11.0, 400.0)


def samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the `_created` timestamps, in exposition order."""
    out = []
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out.append((s.name, tuple(sorted(s.labels.items())), s.value))
    return out


def test_histogram_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("h_seconds", "help", ["alias"], ours, BUCKETS)
    ref = Histogram("h_seconds", "help", ["alias"], buckets=BUCKETS, registry=theirs)
    for i, v in enumerate(VALUES):
        alias = "a" if i % 3 else "b"
        hot.labels(alias).observe(v)
        ref.labels(alias).observe(v)
    assert samples(ours) == samples(theirs)
    assert "h_seconds_created" in generate_latest(ours).decode()


def test_counter_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("c", "help", ["alias", "status"], ours)
    ref = Counter("c", "help", ["alias", "status"], registry=theirs)
    for i in range(7):
        labels = ("a", "200") if i % 2 else ("b", "503")
        hot.labels(*labels).inc()
        ref.labels(*labels).inc()
    hot.labels("a", "200").inc(2.5)
    ref.labels("a", "200").inc(2.5)
    assert samples(ours) == samples(theirs)
    assert ours.get_sample_value("c_total", {"alias": "a", "status": "200"}) == 5.5


def test_duplicate_name_is_refused_like_any_collector() -> None:
    registry = CollectorRegistry()
    HotCounter("dup", "help", [], registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("dup", "help", registry=registry)
