"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk, no helm binary),
with the objects checked and the rendered ConfigMaps validated by `lora-syncer check`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from packaging_support import (
    ADAPTERS_KEY,
    CHART_DIR,
    RULES_KEY,
    assert_check_passes,
    by_kind,
    check_no_checksum_annotation,
    check_pod_spec,
    env_of,
    load_objects,
    package_version,
    sidecar_container,
    validate_against_kubernetes,
    write_manifest,
)

SEED_ADAPTERS: dict[str, Any] = {
    "name": "vllm-qwen3-32b-adapters",
    "ensureExist": [
        {"id": "small-segment-lora-v1", "source": "ttt421/nec119-small-segment-lora"},
        {"id": "small-segment-lora-v2", "source": "ttt421/nec119-small-segment-lora"},
    ],
}
SEED_REWRITE_90_10: dict[str, Any] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
    "kind": "InferenceModelRewrite",
    "metadata": {"name": "small-segment-lora-rewrite"},
    "spec": {
        "poolRef": {"group": "inference.networking.k8s.io", "name": "vllm-qwen3-32b"},
        "rules": [
            {
                "matches": [{"model": {"type": "Exact", "value": "small-segment-lora"}}],
                "targets": [
                    {"modelRewrite": "small-segment-lora-v1", "weight": 90},
                    {"modelRewrite": "small-segment-lora-v2", "weight": 10},
                ],
            }
        ],
    },
}
SEED_INFERENCE_MODEL: dict[str, Any] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
    "kind": "InferenceModel",
    "metadata": {"name": "food-review"},
    "spec": {
        "modelName": "food-review",
        "criticality": "Standard",
        "poolRef": {"name": "vllm-llama3-8b-instruct"},
        "targetModels": [{"name": "food-review-1", "weight": 90}, {"name": "food-review-2", "weight": 10}],
    },
}

# name -> (values, native sidecar, proxy on)
VALUE_SETS: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "defaults": ({}, True, True),
    "seed-rollout": (
        {
            "vllm": {"maxLoras": 2, "maxLoraRank": 8, "port": 9000},
            "adapters": {
                **SEED_ADAPTERS,
                "ensureNotExist": [{"id": "old", "source": "x/old", "base-model": "Qwen/Qwen3-32B"}],
            },
            "rules": {"documents": [SEED_REWRITE_90_10, SEED_INFERENCE_MODEL]},
        },
        True,
        True,
    ),
    "plain-container-no-proxy": (
        {"sidecar": {"native": False}, "proxy": {"enabled": False}, "adapters": SEED_ADAPTERS},
        False,
        False,
    ),
    "existing-configmaps": (
        {
            "adapters": {"existingConfigMap": "vllm-qwen3-32b-adapters"},
            "rules": {"existingConfigMap": "vllm-qwen3-32b-rules"},
            "serviceMonitor": {"enabled": True},
            "sidecar": {"readyWhen": "synced", "prune": True, "allowedSources": ["ttt421/"]},
        },
        True,
        True,
    ),
}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm.Chart.load(str(CHART_DIR))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(copy.deepcopy(values), name="demo", namespace="models", is_install=True)
    return load_objects(text for path, text in manifests.items() if not path.endswith("NOTES.txt"))


def the_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = by_kind(objects, "Deployment")
    assert len(deployments) == 1
    return deployments[0]


class TestLint:
    @pytest.mark.parametrize("name", sorted(VALUE_SETS))
    def test_lint_strict_clean(self, name: str) -> None:
        """`helm lint --strict` has no warning or error for each value set (only the icon hint)."""
        report = helm.lint(
            str(CHART_DIR), copy.deepcopy(VALUE_SETS[name][0]), strict=True, kube_version="v1.29.0"
        )
        assert report["errors"] == []
        assert report["total_charts_linted"] == 1
        assert [m for m in report["messages"] if m["severity"] >= 2] == []
        assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}


class TestRenderedObjects:
    @pytest.mark.parametrize("name", sorted(VALUE_SETS))
    def test_pod_shape(self, chart: Any, name: str) -> None:
        """The Deployment has the sidecar (native or plain), vLLM flags, probes, mounts and securityContext."""
        values, native, proxy = VALUE_SETS[name]
        objects = render(chart, values)
        deployment = the_deployment(objects)
        check_no_checksum_annotation(deployment)
        pod = deployment["spec"]["template"]["spec"]
        configmaps = check_pod_spec(pod, native=native, proxy=proxy)
        rendered_cms = {cm["metadata"]["name"] for cm in by_kind(objects, "ConfigMap")}
        adapters_existing = values.get("adapters", {}).get("existingConfigMap")
        assert configmaps["/config"] == adapters_existing or configmaps["/config"] in rendered_cms
        if proxy:
            rules_existing = values.get("rules", {}).get("existingConfigMap")
            assert configmaps["/rules"] == rules_existing or configmaps["/rules"] in rendered_cms
        assert pod["automountServiceAccountToken"] is False

    def test_sidecar_image_tag_is_the_app_version(self, chart: Any) -> None:
        """By default the sidecar image tag is the chart's appVersion, the package version."""
        pod = the_deployment(render(chart, {}))["spec"]["template"]["spec"]
        assert sidecar_container(pod)["image"] == f"lora-syncer:{package_version()}"

    def test_vllm_flags_from_values(self, chart: Any) -> None:
        """--max-loras, --max-lora-rank and --port come from values, and the sidecar targets that port."""
        pod = the_deployment(render(chart, VALUE_SETS["seed-rollout"][0]))["spec"]["template"]["spec"]
        vllm = pod["containers"][0]
        args = vllm["args"]
        assert args[args.index("--max-loras") + 1] == "2"
        assert args[args.index("--max-lora-rank") + 1] == "8"
        assert args[args.index("--port") + 1] == "9000"
        assert vllm["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
        assert env_of(sidecar_container(pod))["LORA_SYNCER_SERVER"] == "http://127.0.0.1:9000"

    def test_sidecar_settings_become_env(self, chart: Any) -> None:
        """readyWhen, prune and allowedSources reach the sidecar as LORA_SYNCER_* variables."""
        pod = the_deployment(render(chart, VALUE_SETS["existing-configmaps"][0]))["spec"]["template"]["spec"]
        env = env_of(sidecar_container(pod))
        assert env["LORA_SYNCER_READY_WHEN"] == "synced"
        assert env["LORA_SYNCER_PRUNE"] == "true"
        assert env["LORA_SYNCER_ALLOWED_SOURCES"] == "ttt421/"

    @pytest.mark.parametrize(
        ("name", "target"), [("defaults", "proxy"), ("plain-container-no-proxy", "http")]
    )
    def test_service_targets_proxy_or_vllm(self, chart: Any, name: str, target: str) -> None:
        """The Service's http port goes to the proxy, or straight to vLLM when the proxy is off."""
        objects = render(chart, VALUE_SETS[name][0])
        (service,) = by_kind(objects, "Service")
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["http"]["targetPort"] == target
        assert ports["metrics"]["targetPort"] == "metrics"
        labels = the_deployment(objects)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()

    def test_no_rules_configmap_without_proxy(self, chart: Any) -> None:
        """With the proxy off only the adapters ConfigMap is rendered."""
        objects = render(chart, VALUE_SETS["plain-container-no-proxy"][0])
        assert [cm["metadata"]["name"] for cm in by_kind(objects, "ConfigMap")] == [
            "demo-lora-syncer-adapters"
        ]

    def test_existing_configmaps_are_not_rendered(self, chart: Any) -> None:
        """Existing ConfigMaps are mounted by name and none is rendered; the ServiceMonitor scrapes /metrics."""
        objects = render(chart, VALUE_SETS["existing-configmaps"][0])
        assert by_kind(objects, "ConfigMap") == []
        (monitor,) = by_kind(objects, "ServiceMonitor")
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"

    def test_servicemonitor_off_by_default(self, chart: Any) -> None:
        """No ServiceMonitor unless asked for (its CRD may not exist)."""
        assert by_kind(render(chart, {}), "ServiceMonitor") == []

    def test_rendered_adapters_match_values(self, chart: Any) -> None:
        """The adapters ConfigMap holds exactly the adapters given in values, in the upstream format."""
        objects = render(chart, VALUE_SETS["seed-rollout"][0])
        (cm,) = [c for c in by_kind(objects, "ConfigMap") if ADAPTERS_KEY in c["data"]]
        config = yaml.safe_load(cm["data"][ADAPTERS_KEY])["vLLMLoRAConfig"]
        assert config["name"] == "vllm-qwen3-32b-adapters"
        assert config["port"] == 9000
        assert config["defaultBaseModel"] == "Qwen/Qwen3-32B"
        assert config["ensureExist"]["models"] == SEED_ADAPTERS["ensureExist"]
        assert config["ensureNotExist"]["models"] == [
            {"id": "old", "source": "x/old", "base-model": "Qwen/Qwen3-32B"}
        ]

    def test_rendered_rules_match_values(self, chart: Any) -> None:
        """The rules ConfigMap holds the rule documents given in values, one YAML document each."""
        objects = render(chart, VALUE_SETS["seed-rollout"][0])
        (cm,) = [c for c in by_kind(objects, "ConfigMap") if RULES_KEY in c["data"]]
        docs = list(yaml.safe_load_all(cm["data"][RULES_KEY]))
        assert docs == [SEED_REWRITE_90_10, SEED_INFERENCE_MODEL]


class TestKubernetesSchemas:
    @pytest.mark.parametrize("name", sorted(VALUE_SETS))
    @pytest.mark.parametrize("version", ["1.29.0", "1.35.0"])
    def test_objects_valid_for_kubernetes(self, chart: Any, name: str, version: str) -> None:
        """Every rendered built-in object validates strictly against Kubernetes' own OpenAPI schema."""
        objects = render(chart, VALUE_SETS[name][0])
        assert validate_against_kubernetes(objects, version) >= 2  # Deployment and Service at least

    def test_plain_container_valid_for_older_kubernetes(self, chart: Any) -> None:
        """With sidecar.native=false the objects validate against Kubernetes 1.27, before native sidecars."""
        objects = render(chart, VALUE_SETS["plain-container-no-proxy"][0])
        assert validate_against_kubernetes(objects, "1.27.0") == 3

    def test_native_sidecar_rejected_by_older_kubernetes(self, chart: Any) -> None:
        """The native sidecar needs Kubernetes >= 1.29: the 1.27 schema has no restartPolicy on init containers."""
        with pytest.raises(AssertionError, match=r"initContainers\.0: .*'restartPolicy' was unexpected"):
            validate_against_kubernetes(render(chart, {}), "1.27.0")


class TestRenderedConfigMapsPassCheck:
    def test_lora_syncer_check_accepts_rendered_configmaps(self, chart: Any, tmp_path: Path) -> None:
        """`lora-syncer check` accepts every adapters and rules ConfigMap the chart renders."""
        files: list[Path] = []
        for name in ("defaults", "seed-rollout", "plain-container-no-proxy"):
            for i, cm in enumerate(by_kind(render(chart, VALUE_SETS[name][0]), "ConfigMap")):
                if _has_no_rules(cm):
                    continue  # the default: no rule documents, checked by the next test
                files.append(write_manifest(cm, tmp_path / f"{name}-{i}.yaml"))
        assert len(files) == 4
        assert_check_passes(files)

    def test_default_rules_file_means_pass_through(self, chart: Any) -> None:
        """With no rule documents the rules file parses to no rules (pass-through), with no error."""
        from lora_syncer.config.rules import parse_rules

        (cm,) = [c for c in by_kind(render(chart, {}), "ConfigMap") if RULES_KEY in c["data"]]
        assert _has_no_rules(cm)
        ruleset = parse_rules(cm["data"][RULES_KEY].encode(), "rules.yaml")
        assert ruleset.rules == ()
        assert [w for w in ruleset.warnings if w.severity == "error"] == []


def _has_no_rules(configmap: dict[str, Any]) -> bool:
    text = configmap["data"].get(RULES_KEY)
    return text is not None and not [doc for doc in yaml.safe_load_all(text) if doc]


class TestSchema:
    @pytest.mark.parametrize(
        ("values", "where"),
        [
            ({"vllm": {"port": "8000"}}, "/vllm/port"),
            ({"vllm": {"maxLoras": 0}}, "/vllm/maxLoras"),
            ({"sidecar": {"native": "yes"}}, "/sidecar/native"),
            ({"sidecar": {"baseModelPolicy": "strict"}}, "/sidecar/baseModelPolicy"),
            ({"sidecar": {"readyWhen": "never"}}, "/sidecar/readyWhen"),
            ({"proxy": {"port": 70000}}, "/proxy/port"),
            ({"adapters": {"ensureExist": [{"id": "a"}]}}, "/adapters/ensureExist/0"),
            ({"adapters": {"ensureExist": [{"id": "a", "source": ""}]}}, "/adapters/ensureExist/0/source"),
            ({"adapters": {"existingConfigMap": "Not_A_Name"}}, "/adapters/existingConfigMap"),
            (
                {"rules": {"documents": [{"apiVersion": "v1", "kind": "Pod", "spec": {}}]}},
                "/rules/documents/0/kind",
            ),
            ({"service": {"type": "Ingress"}}, "/service/type"),
            ({"typo": True}, "typo"),
            ({"sidecar": {"imag": {}}}, "imag"),
        ],
    )
    def test_bad_values_fail_to_render(self, chart: Any, values: dict[str, Any], where: str) -> None:
        """A value of the wrong type, range or name fails rendering with a message naming it."""
        with pytest.raises(helm.HelmValuesError) as info:
            chart.render(values, name="demo")
        assert where in str(info.value)

    def test_defaults_pass_schema(self, chart: Any) -> None:
        """The chart's own values.yaml satisfies its schema."""
        chart.validate_schema(chart.values)
