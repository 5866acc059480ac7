"""One version everywhere: the package, pyproject, the chart's appVersion, the Dockerfile and the
image tags the chart and the kustomize component deploy."""

from __future__ import annotations

import helm_python as helm
import yaml
from dockerfile_model import parse
from packaging_support import CHART_DIR, DOCKERFILE, SIDECAR_DIR, package_version

import lora_syncer


def test_package_and_pyproject_agree() -> None:
    """lora_syncer.__version__ equals pyproject's project.version."""
    assert lora_syncer.__version__ == package_version()


def test_chart_app_version() -> None:
    """Chart.yaml's appVersion (and, while they move together, its version) is the package version."""
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["appVersion"] == package_version()
    assert chart["version"] == package_version()


def test_chart_image_tag() -> None:
    """values.yaml leaves the sidecar tag to appVersion (or names the package version)."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["sidecar"]["image"]["tag"] in ("", package_version())
    with helm.Chart.load(str(CHART_DIR)) as chart:
        rendered = chart.render(name="v")["lora-syncer/templates/deployment.yaml"]
    assert f'image: "lora-syncer:{package_version()}"' in rendered


def test_kustomize_image_tag() -> None:
    """The kustomize component pins the lora-syncer image to the package version."""
    doc = yaml.safe_load((SIDECAR_DIR / "component" / "kustomization.yaml").read_text())
    assert {"name": "lora-syncer", "newTag": package_version()} in doc["images"]


def test_dockerfile_version() -> None:
    """The Dockerfile's VERSION build argument (wheel name and OCI label) is the package version."""
    assert parse(DOCKERFILE).global_args["VERSION"] == package_version()
