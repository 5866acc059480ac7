"""The plain manifests: `kubectl kustomize` renders each overlay (a base vLLM Deployment plus the
sidecar component), the result has the sidecar's shape, and its ConfigMaps pass `lora-syncer check`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_support import (
    ADAPTERS_KEY,
    EXAMPLES_DIR,
    RULES_KEY,
    SIDECAR_DIR,
    assert_check_passes,
    by_kind,
    check_no_checksum_annotation,
    check_pod_spec,
    load_objects,
    port_names,
    sidecar_container,
    validate_against_kubernetes,
    write_manifest,
)

# overlay -> (the example files it ships as its initial ConfigMaps)
OVERLAYS: dict[str, tuple[str, str]] = {
    "vllm-qwen3-32b": ("qwen3-32b-rewrite/00-adapters.yaml", "qwen3-32b-rewrite/01-rules-v1.yaml"),
    "vllm-llama3-8b-instruct": (
        "llama3-8b-instruct-inferencemodel/00-adapters.yaml",
        "llama3-8b-instruct-inferencemodel/00-rules-baseline.yaml",
    ),
}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize overlays"
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return load_objects([proc.stdout])


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, kustomize(SIDECAR_DIR / "overlays" / name)


class TestOverlays:
    def test_overlays_cover_every_directory(self) -> None:
        """Every overlay directory is exercised by these tests."""
        assert sorted(p.name for p in (SIDECAR_DIR / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)

    def test_sidecar_added_to_the_deployment(self, overlay: tuple[str, list[dict[str, Any]]]) -> None:
        """The overlay's Deployment keeps its name and gains the native sidecar with probes, env and mounts."""
        name, objects = overlay
        (deployment,) = by_kind(objects, "Deployment")
        assert deployment["metadata"]["name"] == name
        check_no_checksum_annotation(deployment)
        pod = deployment["spec"]["template"]["spec"]
        configmaps = check_pod_spec(pod, native=True, proxy=True)
        assert configmaps == {"/config": f"{name}-adapters", "/rules": f"{name}-rules"}
        assert [c["name"] for c in pod["containers"]] == ["vllm"]

    def test_objects_valid_for_kubernetes(self, overlay: tuple[str, list[dict[str, Any]]]) -> None:
        """Every object the overlay renders validates strictly against the Kubernetes 1.29 schema."""
        _, objects = overlay
        assert validate_against_kubernetes(objects, "1.29.0") == 4

    def test_configmaps_mounted_exist_with_their_keys(
        self, overlay: tuple[str, list[dict[str, Any]]]
    ) -> None:
        """The ConfigMaps the sidecar mounts are in the output and hold configmap.yaml and rules.yaml."""
        name, objects = overlay
        configmaps = {cm["metadata"]["name"]: cm for cm in by_kind(objects, "ConfigMap")}
        assert ADAPTERS_KEY in configmaps[f"{name}-adapters"]["data"]
        assert RULES_KEY in configmaps[f"{name}-rules"]["data"]
        adapters = yaml.safe_load(configmaps[f"{name}-adapters"]["data"][ADAPTERS_KEY])["vLLMLoRAConfig"]
        assert adapters["name"] == f"{name}-adapters"

    def test_service_goes_through_the_proxy(self, overlay: tuple[str, list[dict[str, Any]]]) -> None:
        """The Service selects the pod and sends its http port to the sidecar's proxy port."""
        _, objects = overlay
        (service,) = by_kind(objects, "Service")
        (deployment,) = by_kind(objects, "Deployment")
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        side_ports = port_names(sidecar_container(pod["spec"]))
        assert ports["http"] == "proxy"
        assert "proxy" in side_ports
        assert ports["metrics"] == "metrics"
        assert "metrics" in side_ports

    def test_configmaps_pass_lora_syncer_check(
        self, overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path
    ) -> None:
        """`lora-syncer check` accepts the adapters and rules ConfigMaps as kustomize renders them."""
        _, objects = overlay
        files = [
            write_manifest(cm, tmp_path / f"{i}.yaml") for i, cm in enumerate(by_kind(objects, "ConfigMap"))
        ]
        assert len(files) == 2
        assert_check_passes(files)

    @pytest.mark.parametrize("name", sorted(OVERLAYS))
    def test_initial_configmaps_are_the_examples(self, name: str) -> None:
        """The overlay's ConfigMap files are byte-for-byte the first step of the matching guide in examples/."""
        adapters, rules = OVERLAYS[name]
        here = SIDECAR_DIR / "overlays" / name
        assert (here / "adapters-configmap.yaml").read_bytes() == (EXAMPLES_DIR / adapters).read_bytes()
        assert (here / "rules-configmap.yaml").read_bytes() == (EXAMPLES_DIR / rules).read_bytes()


class TestBasesAndComponent:
    @pytest.mark.parametrize("name", sorted(OVERLAYS))
    def test_base_has_no_sidecar_yet(self, name: str) -> None:
        """Each base is a plain vLLM Deployment (the thing being patched), ready for runtime LoRA updates."""
        (deployment,) = kustomize(SIDECAR_DIR / "bases" / name)
        pod = deployment["spec"]["template"]["spec"]
        assert "initContainers" not in pod
        (vllm,) = pod["containers"]
        assert "--enable-lora" in vllm["args"]
        assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"} in vllm["env"]

    def test_component_is_a_kustomize_component(self) -> None:
        """sidecar/component is a kustomize Component patching Deployments."""
        doc = yaml.safe_load((SIDECAR_DIR / "component" / "kustomization.yaml").read_text())
        assert doc["kind"] == "Component"
        assert doc["patches"][0]["target"]["kind"] == "Deployment"
