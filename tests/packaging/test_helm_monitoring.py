"""The chart's opt-in monitoring objects: the Grafana dashboard ConfigMap and the PrometheusRule,
rendered by Helm's own engine; both equal the shipped files they wrap."""

from __future__ import annotations

import copy
import json
from typing import Any

import helm_python as helm
import pytest
import yaml
from packaging_support import CHART_DIR, SIDECAR_DIR, by_kind, load_objects

DASHBOARD = CHART_DIR / "dashboards" / "lora-syncer.json"
RULES = CHART_DIR / "files" / "lora-syncer.rules.yaml"
KUSTOMIZE_RULE = SIDECAR_DIR / "monitoring" / "prometheusrule.yaml"
ON = {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm.Chart.load(str(CHART_DIR))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(copy.deepcopy(values), name="demo", namespace="models", is_install=True)
    return load_objects(text for path, text in manifests.items() if not path.endswith("NOTES.txt"))


def test_off_by_default(chart: Any) -> None:
    objects = render(chart, {})
    assert by_kind(objects, "PrometheusRule") == []
    assert [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")] == []


def test_dashboard_configmap_for_the_grafana_sidecar(chart: Any) -> None:
    objects = render(
        chart,
        {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "vLLM"},
            }
        },
    )
    (cm,) = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "demo-lora-syncer-dashboard"
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "vLLM"}
    assert json.loads(cm["data"]["lora-syncer.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_label_can_be_changed(chart: Any) -> None:
    objects = render(chart, {"grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": "lora"}}})
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "lora"


def test_prometheusrule_holds_the_rules_file(chart: Any) -> None:
    objects = render(
        chart, {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    )
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_kustomize_prometheusrule_equals_the_rules_file() -> None:
    """sidecar/monitoring ships the same groups for kustomize users."""
    rule = yaml.safe_load(KUSTOMIZE_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_lint_strict_clean_with_monitoring_on() -> None:
    report = helm.lint(str(CHART_DIR), copy.deepcopy(ON), strict=True, kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"grafanaDashboard": {"enabled": "yes"}}, "/grafanaDashboard/enabled"),
        ({"grafanaDashboard": {"folder": "x"}}, "folder"),
        ({"prometheusRule": {"labels": {"release": 1}}}, "/prometheusRule/labels/release"),
        ({"prometheusRule": {"rules": []}}, "rules"),
    ],
)
def test_bad_values_fail_to_render(chart: Any, values: dict[str, Any], where: str) -> None:
    """A value of the wrong type or name fails rendering with a message naming it."""
    with pytest.raises(helm.HelmValuesError) as info:
        chart.render(values, name="demo")
    assert where in str(info.value)
