"""The observability tier: a real Prometheus (tests/support/prometheus.py) and the shipped
dashboard and alert rules checked against it and against promtool."""

from tests.support.prometheus import prometheus_factory

__all__ = ["prometheus_factory"]
