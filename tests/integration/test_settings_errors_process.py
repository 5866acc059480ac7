"""The command lines of issue 11, as real processes: a bad setting is one line on stderr, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import clean_env

CASES = [
    pytest.param(
        {"LORA_SYNCER_RECONCILE_TRIGGER": "abc"},
        ["run", "--config", "adapters.yaml"],
        "--reconcile-trigger / LORA_SYNCER_RECONCILE_TRIGGER: 'abc' is not a number",
        id="reconcile-trigger-env",
    ),
    pytest.param(
        {},
        ["run", "--rules", "r.yaml", "--upstream-connections", "0"],
        "--upstream-connections / LORA_SYNCER_UPSTREAM_CONNECTIONS: '0' must be at least 1",
        id="upstream-connections-flag",
    ),
    pytest.param(
        {"LORA_SYNCER_PROXY_PORT": "x"},
        ["proxy", "--rules", "r.yaml"],
        "--proxy-port / LORA_SYNCER_PROXY_PORT: 'x' is not a whole number",
        id="proxy-port-env",
    ),
    pytest.param(
        {},
        ["run", "--server", "not-a-url"],
        "--server / LORA_SYNCER_SERVER: 'not-a-url' is not an http(s) URL",
        id="server-flag",
    ),
    pytest.param(
        {},
        ["proxy", "--rules", "r.yaml", "--pool", "a=http://127.0.0.1:9@abc"],
        "--pool / LORA_SYNCER_POOLS: 'a=http://127.0.0.1:9@abc': 'abc' is not a whole number",
        id="pool-weight-flag",
    ),
    pytest.param(
        {"DYNAMIC_LORA_ROLLOUT_CONFIG": "/x.yaml", "LORA_SYNCER_METRICS_PORT": "70000"},
        ["--reconcile-trigger", "5"],
        "--metrics-port / LORA_SYNCER_METRICS_PORT: '70000' must be 0..65535",
        id="upstream-style-no-subcommand",
    ),
]


@pytest.mark.parametrize(("extra", "argv", "message"), CASES)
def test_bad_setting_process(extra: dict[str, str], argv: list[str], message: str, tmp_path: Path) -> None:
    """Exit 2 before anything starts, one stderr line naming the flag and the variable, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "lora_syncer", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env(**extra),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"lora-syncer: error: {message}"), proc.stderr


def test_check_stays_light(tmp_path: Path) -> None:
    """`check` parses its settings without loading the proxy's or the metrics' libraries."""
    adapters = tmp_path / "adapters.yaml"
    adapters.write_text("vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n      source: org/a\n")
    code = (
        "import sys\n"
        "from lora_syncer.cli import main\n"
        f"assert main(['check', '-q', {str(adapters)!r}]) == 0\n"
        "print(sorted(m for m in ('aiohttp', 'prometheus_client') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
