"""The shipped alert rules: `promtool check rules` and `promtool test rules` (alerts.test.yaml
covers each alert firing and not firing), for the rules file and the kustomize PrometheusRule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "lora-syncer" / "files" / "lora-syncer.rules.yaml"
KUSTOMIZE_RULE = REPO / "sidecar" / "monitoring" / "prometheusrule.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts.test.yaml")
ALERTS = {
    "LoraSyncerRolloutAborted",
    "LoraSyncerRolloutStalled",
    "LoraSyncerAdapterFailed",
    "LoraSyncerAdaptersFileInvalid",
    "LoraSyncerRulesFileInvalid",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool is needed: run scripts/tools.sh"
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def alert_names(rules: dict[str, Any]) -> set[str]:
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def test_rules_file_passes_promtool_check() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


def test_kustomize_prometheusrule_passes_promtool_check(tmp_path: Path) -> None:
    """The PrometheusRule's spec is a rules file too; promtool checks it as one."""
    spec = yaml.safe_load(KUSTOMIZE_RULE.read_text())["spec"]
    extracted = tmp_path / "kustomize.rules.yaml"
    extracted.write_text(yaml.safe_dump(spec))
    proc = promtool("check", "rules", str(extracted))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_fires_and_stays_quiet_as_the_unit_tests_say() -> None:
    proc = promtool("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    """Each alert has at least one evaluation expecting it and one expecting nothing."""
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert alert_names(yaml.safe_load(RULES.read_text())) == ALERTS
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


def test_promtool_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a wrong expected annotation makes promtool fail."""
    text = UNIT_TESTS.read_text().replace('summary: "1 adapter(s) failed', 'summary: "2 adapter(s) failed')
    text = text.replace("../../charts/", f"{REPO}/charts/")
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(text)
    proc = promtool("test", "rules", str(broken))
    assert proc.returncode != 0
    assert "LoraSyncerAdapterFailed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alerts_carry_severity_summary_and_description(alert: str) -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    rule = rules[alert]
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert rule["for"]
