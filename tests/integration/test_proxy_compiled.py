"""The compiled tier: the proxy's per-request modules as the image ships them (mypyc, setup.py).

The wheel is built once per source tree (tests/support/compiled.py, about two minutes on a 2-core
machine) and the proxy's own tests run again against it, in a child pytest whose working
directory holds the compiled package, so compiled code is what they import (the plugin
`tests.support.expect_compiled` refuses to start otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.compiled import ROOT, compiled_tree

pytestmark = pytest.mark.slow

# A test that replaces a method the compiled modules call directly: mypyc binds those calls at
# build time, so the stand-in is never called there. It runs against the sources in the main suite.
NOT_COMPILED = {
    # injects a bug by replacing Forwarder.send_whole
    "tests/integration/test_proxy_lane.py::test_a_bug_in_the_lane_is_a_500_and_the_proxy_goes_on",
}


# The proxy's tests, by file.
PROXY_TESTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*ROOT.glob("tests/integration/test_proxy*.py"), *ROOT.glob("tests/unit/test_proxy*.py")]
    if p.name != Path(__file__).name
)


@pytest.fixture(scope="module")
def tree() -> Path:
    return compiled_tree()


def _setup_compiled_modules() -> set[str]:
    """The modules setup.py compiles, as dotted names."""
    spec = importlib.util.spec_from_file_location("lora_syncer_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    return {name.removesuffix(".py").replace("/", ".") for name in setup.compiled_modules()}


def test_the_compiled_build_compiles_what_setup_declares(tree: Path, tmp_path: Path) -> None:
    """Every module setup.py lists is an extension module in the build, and the CLI says so."""
    expected = _setup_compiled_modules()
    assert "lora_syncer.proxy.lane" in expected and "lora_syncer.proxy.service" not in expected
    probe = textwrap.dedent(
        f"""
        import importlib
        for name in {sorted(expected)!r}:
            origin = importlib.import_module(name).__file__
            print(name, origin.rsplit(".", 1)[-1])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    kinds = dict(line.split() for line in proc.stdout.splitlines())
    assert kinds == {name: "so" for name in expected}
    version = subprocess.run(
        [sys.executable, "-m", "lora_syncer", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip().endswith("(proxy: compiled)")


def test_the_proxy_tests_pass_against_the_compiled_build(tree: Path, tmp_path: Path) -> None:
    """The proxy's integration and unit tests, run again with the compiled modules imported."""
    work = tmp_path / "compiled"
    work.mkdir()
    for built in tree.iterdir():  # the package and mypyc's shared library beside it
        if built.name == "lora_syncer" or built.name.startswith("lora_syncer_proxy__mypyc"):
            (work / built.name).symlink_to(built)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.support.expect_compiled",
            "--durations=0",
            "-o",
            "addopts=--strict-markers -ra",
            *[arg for test in sorted(NOT_COMPILED) for arg in ("--deselect", test)],
            *PROXY_TESTS,
        ],
        cwd=work,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
