"""`lora-syncer check`: exit codes and located messages for files and ConfigMap manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lora_syncer.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "qwen3-32b-rewrite"

ADAPTERS = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n      source: s\n"

# The guide's ConfigMap manifest, its last adapter's `source` line cut off.
SOURCE_LINE = "          source: ttt421/nec119-small-segment-lora\n"
MANIFEST = (EXAMPLES / "00-adapters.yaml").read_text().removesuffix(SOURCE_LINE)


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
        assert f"{f}[vllm-qwen3-32b-adapters/configmap.yaml]:17: error" in err

    def test_valid_manifest(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid ConfigMap manifest passes."""
        f = tmp_path / "cm.yaml"
        f.write_text(MANIFEST + SOURCE_LINE)
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


RULES_90_20 = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: split}
spec:
  rules:
  - matches: [{model: {type: Exact, value: small-segment-lora}}]
    targets:
    - {modelRewrite: small-segment-lora-v1, weight: 90}
    - {modelRewrite: small-segment-lora-v3, weight: 20}
"""


class TestCrossCheck:
    def test_example_files_agree(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The guide's adapters and 90/10 rules ConfigMaps agree: no finding, and the split is printed."""
        adapters, rules = EXAMPLES / "00-adapters.yaml", EXAMPLES / "02-rules-90-10.yaml"
        assert main(["check", str(adapters), str(rules)]) == 0
        out = capsys.readouterr().out
        assert (
            "split: small-segment-lora (pool vllm-qwen3-32b) -> small-segment-lora-v1 90%, small-segment-lora-v2 10%"
            in out
        )
        assert "0 finding(s)" in out
        assert "warning" not in out

    def test_findings_are_warnings_located_in_the_manifest(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Cleanup adapters with the 90/10 rules: v1 is being unloaded; the line is the manifest's."""
        adapters, rules = EXAMPLES / "05-adapters-cleanup.yaml", EXAMPLES / "02-rules-90-10.yaml"
        assert main(["check", str(adapters), str(rules)]) == 0
        out = capsys.readouterr().out
        rule_line = next(
            i for i, line in enumerate(rules.read_text().splitlines(), 1) if "- matches:" in line
        )
        assert (
            f"{rules}[vllm-qwen3-32b-rules/rules.yaml]:{rule_line}: warning: "
            "InferenceModelRewrite/small-segment-lora-rewrite#0: target 'small-segment-lora-v1' is in ensureNotExist"
        ) in out
        assert "1 finding(s)" in out

    def test_weights_and_undeclared_target_in_plain_files(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Plain files: a target never declared, and 90/20 stated as its effective 82/18."""
        (tmp_path / "cm.yaml").write_text(ADAPTERS.replace("id: a", "id: small-segment-lora-v1"))
        (tmp_path / "rules.yaml").write_text(RULES_90_20)
        assert main(["check", str(tmp_path / "cm.yaml"), str(tmp_path / "rules.yaml")]) == 0
        out = capsys.readouterr().out
        assert (
            f"{tmp_path / 'rules.yaml'}:6: warning: InferenceModelRewrite/split#0: target 'small-segment-lora-v3' is not declared in ensureExist"
            in out
        )
        assert "weights 90/20 add up to 110, not 100: 90/20 is an effective 82/18" in out
        assert "split: small-segment-lora -> small-segment-lora-v1 82%, small-segment-lora-v3 18%" in out

    def test_several_files_of_a_kind_skip_cross_checks(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Given a whole example directory, it says why it does not pair the files."""
        files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
        assert main(["check", *files]) == 0
        assert "cross-checks skipped: found 2 adapters file(s) and 4 rules file(s)" in capsys.readouterr().out

    def test_json_and_stdin(self, tmp_path: Path) -> None:
        """`--json` prints one document; `-` reads the rules from standard input (a real process)."""
        (tmp_path / "cm.yaml").write_text(ADAPTERS.replace("id: a", "id: small-segment-lora-v1"))
        done = subprocess.run(
            [sys.executable, "-m", "lora_syncer", "check", "--json", str(tmp_path / "cm.yaml"), "-"],
            input=RULES_90_20,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["ok"] is True
        assert [f["file"] for f in body["files"]] == [str(tmp_path / "cm.yaml"), "<stdin>"]
        findings = body["crossCheck"]["findings"]
        assert [(f["kind"], f["file"], f["line"]) for f in findings] == [
            ("undeclared_target", "<stdin>", 6),
            ("weights_not_100", "<stdin>", 6),
        ]
        [shares] = body["crossCheck"]["shares"]
        assert [s["percent"] for s in shares["shares"]] == [82, 18]

    def test_json_reports_invalid_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid file gives exit 1 and its located errors in the JSON, nothing on stderr."""
        f = tmp_path / "cm.yaml"
        f.write_text(ADAPTERS.replace("source:", "soruce:"))
        assert main(["check", "--json", str(f)]) == 1
        captured = capsys.readouterr()
        assert captured.err == ""
        [entry] = json.loads(captured.out)["files"]
        assert entry["ok"] is False
        assert {(i["line"], i["message"]) for i in entry["issues"]} >= {
            (5, "unknown key; did you mean 'source'?")
        }
