"""The shared adapter cache volume, in the Helm chart (rendered by Helm's own engine) and in the
optional kustomize component: a disk-backed emptyDir big enough for the budget plus the largest
download, mounted at the same path in vLLM (read-only) and the sidecar, and the sidecar told
where it is and what its budget and grace are. The settings are read back by the real parser."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from packaging_support import (
    CHART_DIR,
    SIDECAR_DIR,
    SIDECAR_NAME,
    by_kind,
    env_of,
    load_objects,
    sidecar_container,
    validate_against_kubernetes,
)

from lora_syncer.options.parser import command_parser
from lora_syncer.settings import syncer_settings_from_args

ON: dict[str, Any] = {"adapterCache": {"enabled": True, "maxGiB": 40, "largestDownloadGiB": 8}}


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm.Chart.load(str(CHART_DIR))


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = by_kind(objects, "Deployment")
    spec: dict[str, Any] = deployments[0]["spec"]["template"]["spec"]
    return spec


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(copy.deepcopy(values), name="demo", namespace="models", is_install=True)
    return load_objects(text for path, text in manifests.items() if not path.endswith("NOTES.txt"))


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts") or []}


def settings_from_env(env: dict[str, Any]) -> Any:
    """The SyncerSettings `lora-syncer run` builds from these variables (the real parser)."""
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if isinstance(v, str)})
        args = command_parser("run").parse_args([])
        return syncer_settings_from_args(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_cache_pod(spec: dict[str, Any], native: bool = True) -> Any:
    side = sidecar_container(spec, native=native)
    vllm = next(c for c in spec["containers"] if c["name"] != SIDECAR_NAME)
    volume = next(v for v in spec["volumes"] if v["name"] == "adapter-cache")
    assert "medium" not in volume["emptyDir"], "the cache is disk-backed, not memory"
    side_mount, vllm_mount = mounts(side)["adapter-cache"], mounts(vllm)["adapter-cache"]
    assert side_mount["mountPath"] == vllm_mount["mountPath"], "vLLM reads the paths the sidecar writes"
    assert vllm_mount.get("readOnly") is True and not side_mount.get("readOnly")
    settings = settings_from_env(env_of(side))
    assert str(settings.adapter_cache) == side_mount["mountPath"]
    return volume, settings


def test_chart_cache_off_by_default(chart: Any) -> None:
    spec = pod_spec(render(chart, {}))
    assert all(v["name"] != "adapter-cache" for v in spec["volumes"])
    assert "LORA_SYNCER_ADAPTER_CACHE" not in env_of(sidecar_container(spec))


@pytest.mark.parametrize("native", [True, False])
def test_chart_cache_volume_and_settings(chart: Any, native: bool) -> None:
    values = {**ON, "sidecar": {"native": native}}
    objects = render(chart, values)
    volume, settings = check_cache_pod(pod_spec(objects), native=native)
    # The budget plus the largest download: a download sits in .tmp/ until it is published.
    assert volume["emptyDir"]["sizeLimit"] == "48Gi"
    assert settings.adapter_cache_max_bytes == 40 * 1024**3
    assert settings.adapter_cache_gc_grace == 900
    assert validate_against_kubernetes(objects, "1.29.0" if native else "1.27.0") >= 2


def test_chart_cache_lint_clean(chart: Any) -> None:
    report = helm.lint(str(CHART_DIR), copy.deepcopy(ON), strict=True, kube_version="v1.29.0")
    assert report["errors"] == []


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"adapterCache": {"maxGiB": 0}}, "/adapterCache/maxGiB"),
        ({"adapterCache": {"largestDownloadGiB": "5Gi"}}, "/adapterCache/largestDownloadGiB"),
        ({"adapterCache": {"mountPath": "relative"}}, "/adapterCache/mountPath"),
        ({"adapterCache": {"gcGraceSeconds": 0}}, "/adapterCache/gcGraceSeconds"),
        ({"adapterCache": {"size": 1}}, "size"),
    ],
)
def test_chart_cache_bad_values_fail(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.render(values, name="demo")
    assert where in str(info.value)


def test_kustomize_component_adds_the_shared_volume(tmp_path: Path) -> None:
    """An overlay using the sidecar component plus `sidecar/adapter-cache` gets the volume in both containers."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize overlays"
    here = tmp_path / "overlay"
    here.mkdir()
    rel = os.path.relpath(SIDECAR_DIR, here)
    (here / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel}/overlays/vllm-qwen3-32b\n"
        f"components:\n  - {rel}/adapter-cache\n"
    )
    proc = subprocess.run(
        [kubectl, "kustomize", str(here)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    objects = load_objects([proc.stdout])
    volume, settings = check_cache_pod(pod_spec(objects))
    limit = volume["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi") and int(limit[:-2]) * 1024**3 > settings.adapter_cache_max_bytes
    assert validate_against_kubernetes(objects) >= 2
