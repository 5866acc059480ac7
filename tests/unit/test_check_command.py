"""`lora-syncer check`: exit codes and located messages for files and ConfigMap manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_syncer.cli import main

ADAPTERS = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n      source: s\n"

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: vllm-qwen3-32b-adapters
data:
  configmap.yaml: |
    vLLMLoRAConfig:
      name: vllm-qwen3-32b-adapters
      port: 8000
      ensureExist:
        models:
        - id: small-segment-lora-v1
          source: ttt421/nec119-small-segment-lora
        - id: small-segment-lora-v2
"""


class TestCheck:
    def test_valid_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid adapters file exits 0 and says what it holds."""
        f = tmp_path / "cm.yaml"
        f.write_text(ADAPTERS)
        assert main(["check", str(f)]) == 0
        assert "OK (adapters file: 1 to keep loaded, 0 to keep unloaded)" in capsys.readouterr().out

    def test_invalid_manifest_reports_manifest_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An error inside a ConfigMap's embedded file points at the manifest's own line."""
        f = tmp_path / "cm.yaml"
        f.write_text(MANIFEST)
        assert main(["check", str(f)]) == 1
        err = capsys.readouterr().err
        assert "vLLMLoRAConfig.ensureExist.models[1].source: is required" in err
        assert f"{f}[vllm-qwen3-32b-adapters/configmap.yaml]:14: error" in err

    def test_valid_manifest(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid ConfigMap manifest passes."""
        f = tmp_path / "cm.yaml"
        f.write_text(MANIFEST + "          source: ttt421/nec119-small-segment-lora\n")
        assert main(["check", str(f)]) == 0
        assert (
            "vllm-qwen3-32b-adapters/configmap.yaml: adapters file: 2 to keep loaded"
            in capsys.readouterr().out
        )

    def test_unknown_and_missing_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Unrecognised content and missing files are errors with a clear message."""
        other = tmp_path / "other.yaml"
        other.write_text("hello: world\n")
        assert main(["check", str(other), str(tmp_path / "nope.yaml")]) == 1
        err = capsys.readouterr().err
        assert "not a recognised file" in err
        assert "cannot read" in err

    def test_warnings_do_not_fail(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Warnings are printed but the exit code stays 0."""
        f = tmp_path / "cm.yaml"
        f.write_text(ADAPTERS + "colour: red\n")
        assert main(["check", str(f)]) == 0
        assert "warning: colour: unknown top-level key, ignored" in capsys.readouterr().out

    def test_misspelt_key_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`ensureExists:` (which the old sidecar read as declaring nothing) fails, naming the key meant."""
        f = tmp_path / "configmap.yaml"
        f.write_text(ADAPTERS.replace("ensureExist:", "ensureExists:"))
        assert main(["check", str(f)]) == 1
        err = capsys.readouterr().err
        assert f"{f}:2: error: vLLMLoRAConfig.ensureExists: unknown key; did you mean 'ensureExist'?" in err
        assert f"{f}: INVALID (1 error(s))" in err
