"""The settings the shipped manifests give the sidecar (environment variables and args of the
container, ENV of the image) are accepted by `lora-syncer run`'s own flag parsing and mean what the
manifests intend: the mounted files, the container ports, the local vLLM."""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from dockerfile_model import parse
from packaging_support import (
    CHART_DIR,
    DOCKERFILE,
    SIDECAR_DIR,
    by_kind,
    load_objects,
    port_names,
    sidecar_container,
)

from lora_syncer.cli import build_parser
from lora_syncer.cliutil import ENV_PREFIX
from lora_syncer.proxy.options import proxy_options_from_args
from lora_syncer.settings import SyncerSettings, syncer_settings_from_args


def _deployment_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects, "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _chart_pod(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(str(CHART_DIR)) as chart:
        manifests = chart.render(copy.deepcopy(values), name="demo")
    return _deployment_pod(load_objects(t for p, t in manifests.items() if not p.endswith("NOTES.txt")))


def _overlay_pod(name: str) -> dict[str, Any]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize overlays"
    proc = subprocess.run(
        [kubectl, "kustomize", str(SIDECAR_DIR / "overlays" / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return _deployment_pod(load_objects([proc.stdout]))


def _parse_as_container(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[argparse.Namespace, SyncerSettings]:
    """Parse the container's args with exactly its environment, the way the image would start."""
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("DYNAMIC_LORA_ROLLOUT_CONFIG", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    for env in container.get("env") or []:
        # valueFrom (a Secret) has no value here; a placeholder stands in for it.
        monkeypatch.setenv(env["name"], env.get("value", "from-a-secret"))
    args = [str(a) for a in container.get("args") or ["run"]]
    assert args[0] == "run"
    namespace = build_parser(only="run").parse_args(args)
    return namespace, syncer_settings_from_args(namespace)


CHART_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "port-9000-synced-prune": {
        "vllm": {"port": 9000},
        "sidecar": {
            "readyWhen": "started",
            "prune": True,
            "allowedSources": ["ttt421/", "Kawon/"],
            "baseModelPolicy": "enforce",
            "metricsPort": 9090,
            "apiKeySecret": {"name": "vllm-key"},
        },
        "proxy": {"port": 9091},
    },
    "no-proxy": {"proxy": {"enabled": False}, "sidecar": {"native": False}},
}


@pytest.mark.parametrize("case", sorted(CHART_CASES))
def test_chart_sidecar_settings(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's sidecar env parses into settings that point at /config, its ports and the pod's vLLM."""
    values = CHART_CASES[case]
    native = values.get("sidecar", {}).get("native", True)
    side = sidecar_container(_chart_pod(values), native=native)
    namespace, settings = _parse_as_container(side, monkeypatch)
    ports = port_names(side)
    assert settings.config == Path("/config/configmap.yaml")
    assert settings.metrics_port == ports["metrics"]
    assert settings.server == f"http://127.0.0.1:{values.get('vllm', {}).get('port', 8000)}"
    assert settings.log_format == "json"
    sidecar_values = values.get("sidecar", {})
    assert settings.prune is sidecar_values.get("prune", False)
    assert settings.base_model_policy == sidecar_values.get("baseModelPolicy", "warn")
    assert list(settings.allowed_sources) == sidecar_values.get("allowedSources", [])
    if "readyWhen" in sidecar_values:
        assert settings.ready_when == sidecar_values["readyWhen"]
    assert (settings.api_key is not None) == ("apiKeySecret" in sidecar_values)
    if values.get("proxy", {}).get("enabled", True):
        assert settings.server is not None
        proxy = proxy_options_from_args(namespace, settings.server)
        assert proxy.rules_path == Path("/rules/rules.yaml")
        assert proxy.port == ports["proxy"]
        assert proxy.host == "0.0.0.0"
    else:
        assert not namespace.rules


@pytest.mark.parametrize("overlay", ["vllm-llama3-8b-instruct", "vllm-qwen3-32b"])
def test_kustomize_sidecar_settings(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kustomize sidecar's env parses into settings for /config, /rules and its two ports."""
    side = sidecar_container(_overlay_pod(overlay))
    namespace, settings = _parse_as_container(side, monkeypatch)
    ports = port_names(side)
    assert settings.config == Path("/config/configmap.yaml")
    assert settings.metrics_port == ports["metrics"]
    assert settings.log_format == "json"
    proxy = proxy_options_from_args(namespace, "http://localhost:8000")
    assert proxy.rules_path == Path("/rules/rules.yaml")
    assert proxy.port == ports["proxy"]
    assert proxy.host == "0.0.0.0"


def test_image_environment_alone_runs_the_upstream_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the image's ENV and its default CMD, the sidecar reads /config/configmap.yaml like the old image."""
    final = parse(DOCKERFILE).final
    env = [{"name": k, "value": v} for k, v in final.env().items() if k != "PATH"]
    cmd = final.last("CMD").exec_form()
    namespace, settings = _parse_as_container({"env": env, "args": cmd}, monkeypatch)
    assert settings.config == Path("/config/configmap.yaml")
    assert settings.metrics_port == 8080
    assert settings.log_format == "json"
    assert not namespace.rules
