"""Shared helpers for the packaging tests: repository paths, the `lora-syncer check` runner and
checks on a rendered pod spec that the Helm chart and the kustomize overlays must both pass."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.seeds import EXAMPLES

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "lora-syncer"
SIDECAR_DIR = REPO / "sidecar"
EXAMPLES_DIR = EXAMPLES  # the seeds' directory, one definition
DOCKERFILE = REPO / "Dockerfile"

ADAPTERS_KEY = "configmap.yaml"
RULES_KEY = "rules.yaml"
SIDECAR_NAME = "lora-syncer"


def package_version() -> str:
    """The version in pyproject.toml, the one the wheel is built with."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def run_check(files: Sequence[Path], python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run `python -m lora_syncer check FILE...` and return the finished process."""
    return subprocess.run(
        [python, "-m", "lora_syncer", "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_check_passes(files: Sequence[Path], python: str = sys.executable) -> None:
    """`lora-syncer check` accepts every file (exit 0), or the test fails with its output."""
    assert files, "nothing to check"
    proc = run_check(files, python)
    assert proc.returncode == 0, f"lora-syncer check failed on {files}:\n{proc.stdout}\n{proc.stderr}"


def load_objects(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document in the given manifest texts."""
    objects: list[dict[str, Any]] = []
    for text in texts:
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [obj for obj in objects if obj.get("kind") == kind]


def write_manifest(obj: dict[str, Any], path: Path) -> Path:
    """Write one object as a YAML manifest file, for `lora-syncer check`."""
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def sidecar_container(pod_spec: dict[str, Any], native: bool = True) -> dict[str, Any]:
    """The lora-syncer container: an init container when native, a plain container otherwise."""
    where = "initContainers" if native else "containers"
    other = "containers" if native else "initContainers"
    found = [c for c in pod_spec.get(where) or [] if c["name"] == SIDECAR_NAME]
    assert len(found) == 1, f"expected one {SIDECAR_NAME} in {where}"
    assert all(c["name"] != SIDECAR_NAME for c in pod_spec.get(other) or []), (
        f"{SIDECAR_NAME} also in {other}"
    )
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env as name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def port_names(container: dict[str, Any]) -> dict[str, int]:
    """A container's named ports."""
    return {p["name"]: p["containerPort"] for p in container.get("ports") or [] if "name" in p}


def check_pod_spec(pod_spec: dict[str, Any], *, native: bool, proxy: bool) -> dict[str, str]:
    """Assert the shape every lora-syncer pod must have; return volume name -> ConfigMap name
    for the sidecar's ConfigMap volumes (keyed by mount path: /config, /rules)."""
    side = sidecar_container(pod_spec, native=native)
    if native:
        assert side.get("restartPolicy") == "Always", "a native sidecar needs restartPolicy: Always"
    else:
        assert "restartPolicy" not in side
    vllm = [c for c in pod_spec["containers"] if c["name"] != SIDECAR_NAME]
    assert len(vllm) == 1, "one vLLM container next to the sidecar"
    server = vllm[0]

    # vLLM: runtime LoRA updating on, LoRA enabled.
    assert env_of(server).get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") == "true"
    args = [str(a) for a in server.get("args") or []]
    assert "--enable-lora" in args
    for flag in ("--max-loras", "--max-lora-rank"):
        assert flag in args
        assert args[args.index(flag) + 1].isdigit(), flag
    assert args[args.index("--api-server-count") + 1] == "1"
    for probe in ("livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe
    assert "http" in port_names(server)

    # Sidecar: probes on its metrics port, ports, env, security.
    ports = port_names(side)
    assert "metrics" in ports
    assert side["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert side["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = env_of(side)
    assert env["DYNAMIC_LORA_ROLLOUT_CONFIG"] == "/config/configmap.yaml"
    if proxy:
        assert "proxy" in ports
        assert env["LORA_SYNCER_RULES"] == "/rules/rules.yaml"
        assert int(env["LORA_SYNCER_PROXY_PORT"]) == ports["proxy"]
    else:
        assert "proxy" not in ports
        assert "LORA_SYNCER_RULES" not in env
    if "LORA_SYNCER_METRICS_PORT" in env:
        assert int(env["LORA_SYNCER_METRICS_PORT"]) == ports["metrics"]
    sc = side["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert side["resources"]["requests"]
    assert side["resources"]["limits"]

    # Mounts: whole directories (never subPath), ConfigMap volumes.
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for container in [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]:
        for mount in container.get("volumeMounts") or []:
            assert not {"subPath", "subPathExpr"} & mount.keys(), (container["name"], mount)
            assert mount["name"] in volumes, mount["name"]
    mounts = {m["mountPath"]: m["name"] for m in side["volumeMounts"]}
    expected = {"/config", "/rules"} if proxy else {"/config"}
    configmaps = {path: volumes[mounts[path]]["configMap"]["name"] for path in expected}
    assert ("/rules" in mounts) == proxy
    return configmaps


def check_no_checksum_annotation(deployment: dict[str, Any]) -> None:
    """No `checksum/...` pod annotation: ConfigMap changes must reach the pod without a rollout."""
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "checksum" in k.lower()], annotations


# Kinds without a schema in Kubernetes itself (CRDs), checked by the tests that render them.
CRD_KINDS = {"ServiceMonitor"}


def validate_against_kubernetes(objects: Iterable[dict[str, Any]], version: str = "1.29.0") -> int:
    """Validate built-in objects against Kubernetes' OpenAPI schemas for `version`, strictly (unknown
    fields fail). Returns how many were validated."""
    import kubernetes_validate

    count = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}"
            ) from None
        count += 1
    return count
