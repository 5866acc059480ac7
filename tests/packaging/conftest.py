"""Session fixtures for the packaging tests: the wheel built the way the Dockerfile builds it,
installed into a fresh virtual environment (once per session), and the chart loaded by Helm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerfile_model import parse
from packaging_support import CHART_DIR, DOCKERFILE, REPO

PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(python: Path | str, *args: str) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=PIP_ENV,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a build context holding only what the builder stage COPYs."""
    dockerfile = parse(DOCKERFILE)
    builder = dockerfile.stage("builder")
    context = tmp_path_factory.mktemp("context")
    for copy in builder.all("COPY"):
        *sources, dest = copy.value.split()
        assert not any(s.startswith("--") for s in sources), "the builder copies from the build context only"
        for source in sources:
            src = REPO / source
            assert src.exists(), f"the Dockerfile copies {source}, which the repository lacks"
            target = context / source if dest.endswith("/") else context / dest
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    wheels = tmp_path_factory.mktemp("wheels")
    # The Dockerfile's builder command (the pip cache only saves downloads of the build backend).
    _pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    version = dockerfile.global_args["VERSION"]
    wheel = wheels / f"lora_syncer-{version}-py3-none-any.whl"
    assert wheel.exists(), f"expected {wheel.name}, built {[p.name for p in wheels.iterdir()]}"
    return wheel


@pytest.fixture(scope="session")
def installed_venv(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel and its `fast` extra installed, like /opt/lora-syncer."""
    root = tmp_path_factory.mktemp("venv") / "lora-syncer"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = root / "bin" / "python"
    _pip(python, "install", f"{built_wheel}[fast]")
    return root


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    """The chart's directory."""
    return CHART_DIR
