"""`lora-syncer plan --offline`: the plan of a file or a ConfigMap manifest, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_syncer.cli import main
from tests.support.seeds import EXAMPLES as SEED_EXAMPLES

EXAMPLES = SEED_EXAMPLES / "qwen3-32b-rewrite"


class TestPlanOffline:
    def test_manifest_input(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A ConfigMap manifest is planned from its embedded adapters file."""
        assert (
            main(["plan", "--config", str(EXAMPLES / "00-adapters.yaml"), "--offline", "--output", "json"])
            == 0
        )
        plan = json.loads(capsys.readouterr().out)
        assert [(a["op"], a["adapter"]) for a in plan["actions"]] == [
            ("load", "small-segment-lora-v1"),
            ("load", "small-segment-lora-v2"),
        ]

    def test_cleanup_step_offline(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Against an empty server the cleanup step loads v2 and reports v1 absent."""
        assert main(["plan", "--config", str(EXAMPLES / "05-adapters-cleanup.yaml"), "--offline"]) == 0
        out = capsys.readouterr().out
        assert "load    small-segment-lora-v2" in out
        assert "absent as declared: small-segment-lora-v1" in out

    def test_invalid_file_exit_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid file exits 1 with the located error."""
        f = tmp_path / "cm.yaml"
        f.write_text("vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n")
        assert main(["plan", "--config", str(f), "--offline"]) == 1
        assert "models[0].source: is required" in capsys.readouterr().err

    def test_unreachable_server_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unreachable server is exit 2 with a hint to use --offline."""
        f = tmp_path / "cm.yaml"
        f.write_text("vLLMLoRAConfig:\n  port: 9\n")
        assert main(["plan", "--config", str(f), "--server", "http://127.0.0.1:9"]) == 2
        assert "--offline" in capsys.readouterr().err
