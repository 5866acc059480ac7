"""Pool-level rollouts in the Helm chart (second pool, router, Gateway HTTPRoute) and the shipped
node-update / base-model examples, rendered by Helm's own engine and validated."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from packaging_support import (
    CHART_DIR,
    EXAMPLES_DIR,
    RULES_KEY,
    assert_check_passes,
    by_kind,
    load_objects,
    validate_against_kubernetes,
    write_manifest,
)

from lora_syncer.config.rules import parse_rules
from lora_syncer.proxy.pools import route_pools, split_pools_env

ROLLOUTS = ("node-update-rollout", "base-model-rollout")
OLD, NEW = "vllm-llama3-8b-instruct", "vllm-llama3-8b-instruct-new"


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm.Chart.load(str(CHART_DIR))
    yield loaded
    loaded.close()


def values_of(rollout: str, *overlays: str) -> dict[str, Any]:
    """The example's values.yaml with weight overlays merged on top (as `-f a -f b` does for these keys)."""
    values: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / rollout / "helm" / "values.yaml").read_text())
    for name in overlays:
        overlay = yaml.safe_load((EXAMPLES_DIR / rollout / "helm" / name).read_text())
        for key, sub in overlay.items():
            values.setdefault(key, {}).update(sub)
    return values


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(copy.deepcopy(values), name=OLD, namespace="models", is_install=True)
    return load_objects(text for path, text in manifests.items() if not path.endswith("NOTES.txt"))


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    return obj


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


class TestSecondPool:
    @pytest.mark.parametrize("rollout", ROLLOUTS)
    def test_example_renders_valid_objects(self, chart: Any, rollout: str) -> None:
        """Each example's values render two pools and a router that validate against Kubernetes 1.29 and 1.35."""
        objects = render(chart, values_of(rollout))
        assert {d["metadata"]["name"] for d in by_kind(objects, "Deployment")} == {OLD, NEW, f"{OLD}-router"}
        for version in ("1.29.0", "1.35.0"):
            assert validate_against_kubernetes(objects, version) == len(objects)

    @pytest.mark.parametrize("rollout", ROLLOUTS)
    def test_lint_strict_clean(self, rollout: str) -> None:
        """`helm lint --strict` has no warning or error for the example values."""
        report = helm.lint(str(CHART_DIR), values_of(rollout), strict=True, kube_version="v1.29.0")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []

    def test_second_pool_shares_adapters_and_has_its_own_placement(self, chart: Any) -> None:
        """The new pool mounts the first pool's adapters ConfigMap, runs on its own nodes, and neither selector matches the other's pods."""
        objects = render(chart, values_of("node-update-rollout"))
        old, new = named(objects, "Deployment", OLD), named(objects, "Deployment", NEW)
        volumes = {v["name"]: v for v in new["spec"]["template"]["spec"]["volumes"]}
        assert volumes["lora-syncer-config"]["configMap"]["name"] == f"{OLD}-adapters"
        assert new["spec"]["template"]["spec"]["nodeSelector"] == {
            "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"
        }
        assert old["spec"]["template"]["spec"]["nodeSelector"] == {
            "cloud.google.com/gke-accelerator": "nvidia-l4"
        }
        assert container(new, "vllm")["image"].endswith(":v0.33.0")
        assert container(old, "vllm")["image"].endswith(":v0.32.0")
        for a, b in ((old, new), (new, old)):
            selector = a["spec"]["selector"]["matchLabels"]
            pod_labels = b["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= pod_labels.items()
        assert len([c for c in by_kind(objects, "ConfigMap") if "configmap.yaml" in c["data"]]) == 1

    def test_base_model_pool_serves_the_new_model_and_enforces(self, chart: Any) -> None:
        """The base model example: the new pool runs the new --model; both sidecars enforce the base model policy."""
        objects = render(chart, values_of("base-model-rollout"))
        new = named(objects, "Deployment", NEW)
        args = container(new, "vllm")["args"]
        assert args[args.index("--model") + 1] == "meta-llama/Llama-3.2-3B-Instruct"
        for name in (OLD, NEW):
            assert env(container(named(objects, "Deployment", name), "lora-syncer"))[
                "LORA_SYNCER_BASE_MODEL_POLICY"
            ] == ("enforce")
        # The new pool's sidecar reads its own rules (for a Gateway in front of the Services).
        rules_cm = named(objects, "ConfigMap", f"{NEW}-rules")
        ruleset = parse_rules(rules_cm["data"][RULES_KEY].encode(), "rules.yaml")
        assert [r.pool for r in ruleset.rules] == [NEW]


class TestRouter:
    @pytest.mark.parametrize("rollout", ROLLOUTS)
    @pytest.mark.parametrize(
        ("overlay", "weights"),
        [
            (None, {OLD: 100, NEW: 0}),
            ("weights-90-10.yaml", {OLD: 90, NEW: 10}),
            ("weights-50-50.yaml", {OLD: 50, NEW: 50}),
            ("weights-0-100.yaml", {OLD: 0, NEW: 100}),
            ("weights-rollback.yaml", {OLD: 100, NEW: 0}),
        ],
    )
    def test_router_rules_carry_the_weights(
        self, chart: Any, rollout: str, overlay: str | None, weights: dict[str, int]
    ) -> None:
        """The router's rules file holds an HTTPRoute with the step's weights, and its pools map to the pools' Services."""
        objects = render(chart, values_of(rollout, *([overlay] if overlay else [])))
        cm = named(objects, "ConfigMap", f"{OLD}-router")
        ruleset = parse_rules(cm["data"][RULES_KEY].encode(), "rules.yaml")
        assert ruleset.route is not None
        router = container(named(objects, "Deployment", f"{OLD}-router"), "router")
        urls = dict(entry.split("=", 1) for entry in split_pools_env(env(router)["LORA_SYNCER_POOLS"]))
        pools = route_pools(ruleset.route, urls)
        assert {p.name: p.weight for p in pools} == weights
        assert {p.name: p.url for p in pools} == {OLD: f"http://{OLD}:8000", NEW: f"http://{NEW}:8000"}
        # Each pool's Service exposes vLLM's port for the router.
        for name in (OLD, NEW):
            ports = {p["name"]: p for p in named(objects, "Service", name)["spec"]["ports"]}
            assert ports["vllm"]["port"] == 8000 and ports["vllm"]["targetPort"] == "http"
        assert router["args"] == ["proxy"]

    def test_rendered_router_configmaps_pass_check(self, chart: Any, tmp_path: Path) -> None:
        """`lora-syncer check` accepts every rules ConfigMap the pool examples render."""
        files: list[Path] = []
        for rollout in ROLLOUTS:
            for i, cm in enumerate(by_kind(render(chart, values_of(rollout)), "ConfigMap")):
                files.append(write_manifest(cm, tmp_path / f"{rollout}-{i}.yaml"))
        assert (
            len(files) == 7
        )  # adapters, rules and router of each; the base model's new pool has its own rules
        assert_check_passes(files)

    def test_gateway_route_splits_between_the_services(self, chart: Any) -> None:
        """gatewayRoute.enabled renders a Gateway API HTTPRoute whose backendRefs are the two Services with the weights."""
        values = values_of("node-update-rollout", "weights-90-10.yaml")
        values["gatewayRoute"] = {"enabled": True, "parentRefs": [{"name": "inference-gateway"}]}
        (route,) = by_kind(render(chart, values), "HTTPRoute")
        refs = route["spec"]["rules"][0]["backendRefs"]
        assert [(r["kind"], r["name"], r["port"], r["weight"]) for r in refs] == [
            ("Service", OLD, 80, 90),
            ("Service", NEW, 80, 10),
        ]
        assert parse_rules(yaml.safe_dump(route).encode(), "route.yaml").route is not None

    @pytest.mark.parametrize(
        ("values", "where"),
        [
            ({"secondPool": {"enabled": True, "weight": -1}}, "/secondPool/weight"),
            ({"secondPool": {"enabled": True, "weight": 1, "vllm": {"modle": "x"}}}, "modle"),
            (
                {
                    "router": {
                        "enabled": True,
                        "port": 0,
                        "metricsPort": 8080,
                        "service": {"type": "ClusterIP", "port": 80},
                    }
                },
                "/router/port",
            ),
            ({"pool": {"weight": 1, "name": "Not_A_Name"}}, "/pool/name"),
        ],
    )
    def test_bad_values_fail_to_render(self, chart: Any, values: dict[str, Any], where: str) -> None:
        """Bad pool, router or second-pool values fail rendering with a message naming them."""
        with pytest.raises(helm.HelmValuesError) as info:
            chart.render(values, name="demo")
        assert where in str(info.value)


class TestExampleFiles:
    def test_every_pool_example_passes_check(self) -> None:
        """`lora-syncer check` accepts every router, adapters and Gateway example file."""
        files = sorted(
            p
            for rollout in ROLLOUTS
            for p in (EXAMPLES_DIR / rollout).rglob("*.yaml")
            if p.parent.name != "helm"
        )
        assert len(files) == 11
        assert_check_passes(files)

    @pytest.mark.parametrize("rollout", ROLLOUTS)
    def test_router_steps_and_gateway_form(self, rollout: str) -> None:
        """The router ConfigMaps go 100/0 -> 90/10 -> 50/50 -> 0/100; the Gateway file is the 90/10 step."""
        seen = []
        for path in sorted((EXAMPLES_DIR / rollout / "router").glob("*.yaml")):
            cm = yaml.safe_load(path.read_text())
            assert cm["metadata"]["name"] == f"{OLD}-router"
            route = parse_rules(cm["data"][RULES_KEY].encode(), str(path)).route
            assert route is not None
            seen.append(tuple(b.weight for b in route.backends))
        assert seen == [(100, 0), (90, 10), (50, 50), (0, 100)]
        gateway = parse_rules((EXAMPLES_DIR / rollout / "gateway" / "httproute-90-10.yaml").read_bytes(), "g")
        assert gateway.route is not None
        assert [(b.name, b.weight) for b in gateway.route.backends] == [(OLD, 90), (NEW, 10)]
