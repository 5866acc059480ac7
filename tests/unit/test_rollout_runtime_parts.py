"""The rules file's AdapterRollout kind, per-document reading, and the state store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import parse_rules_text
from lora_syncer.rollout.controller import parse_rollout_documents
from lora_syncer.rollout.spec import identity
from lora_syncer.rollout.state import new_state, set_control
from lora_syncer.rollout.store import StateStore
from lora_syncer.rollout.weights import RolloutRoute
from tests.support.rollouts import controller_at

GOOD = """\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {name: NAME}
spec:
  model: MODEL
  stable: MODEL-v1
  canary: MODEL-v2
  steps: [{setWeight: 10}, {pause: {duration: 2s}}, {setWeight: 100}]
  abort: true
"""
BROKEN = """\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {name: broken}
spec:
  model: x
  stable: x-v1
  canary: x-v2
  steps: [{setWeight: 10}]
  maxErrorRat: 0.1
"""
REWRITE = """\
kind: InferenceModelRewrite
metadata: {name: rw}
spec:
  rules:
  - matches: [{model: {type: Exact, value: a}}]
    targets: [{modelRewrite: a-v1}]
"""


def good(name: str = "r", model: str = "a") -> str:
    return GOOD.replace("NAME", name).replace("MODEL", model)


def test_a_rules_file_holds_rollouts_beside_rules_and_warns_about_shared_models() -> None:
    rs = parse_rules_text(REWRITE + "---\n" + good(), "rules.yaml")
    assert [r.name for r in rs.rollouts] == ["r"] and rs.rollouts[0].abort
    warnings = [w.format() for w in rs.warnings]
    assert any("InferenceModelRewrite/rw#0" in w and "AdapterRollout/r" in w for w in warnings), warnings
    assert rs.to_dict()["adapterRollouts"][0]["steps"][1] == {"pause": {"duration": "2s"}}


def test_check_warns_that_removing_a_rollout_hands_its_model_back_to_the_rule() -> None:
    """The rule still sends a-v1 everything: deleting the completed rollout would move traffic off a-v2."""
    rs = parse_rules_text(REWRITE + "---\n" + good(), "rules.yaml")
    moved = [w.format() for w in rs.warnings if "removing AdapterRollout/r" in w.message]
    assert len(moved) == 1, [w.format() for w in rs.warnings]
    assert "0% of 'a' to the canary 'a-v2'" in moved[0] and "set that rule to 100% a-v2" in moved[0]
    # A rule already at 100% canary: removing the rollout changes nothing, so no warning.
    at_canary = REWRITE.replace("targets: [{modelRewrite: a-v1}]", "targets: [{modelRewrite: a-v2}]")
    rs = parse_rules_text(at_canary + "---\n" + good(), "rules.yaml")
    assert not [w for w in rs.warnings if "removing AdapterRollout" in w.message]


def test_a_broken_rollout_fails_the_rules_file_but_not_its_neighbour() -> None:
    text = good() + "---\n" + BROKEN
    with pytest.raises(ConfigError) as err:
        parse_rules_text(text, "rules.yaml")
    assert "spec.maxErrorRat" in str(err.value)
    results = parse_rollout_documents(text.encode(), "rules.yaml")
    assert [(r.name, r.spec is not None) for r in results] == [("r", True), ("broken", False)]
    assert results[0].spec is not None and results[0].spec.abort


def test_two_rollouts_with_one_name_are_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules_text(good() + "---\n" + good(model="b"), "rules.yaml")
    assert "names must be unique" in str(err.value)


def test_the_store_writes_atomically_and_ignores_another_rollouts_state(tmp_path: Path) -> None:
    rs = parse_rules_text(good(), "rules.yaml")
    spec = rs.rollouts[0]
    store = StateStore(tmp_path / "state")
    state = set_control(new_state(spec, 1000.0), paused=True)
    store.save(state)
    path = store.path_of("r")
    assert path is not None and json.loads(path.read_text())["controlPaused"] is True
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    loaded, note = store.load("r", identity(spec))
    assert loaded == state and note is None
    other, note = store.load("r", "0000")
    assert other is None and note is not None and "another rollout" in note
    path.write_text("{not json")
    corrupt, note = store.load("r", identity(spec))
    assert corrupt is None and note is not None and "corrupt" in note


def test_without_a_directory_the_state_lives_in_memory() -> None:
    spec = parse_rules_text(good(), "rules.yaml").rollouts[0]
    store = StateStore(None)
    assert store.load("r", identity(spec)) == (None, None)
    state = new_state(spec, 5.0)
    store.save(state)
    assert store.load("r", identity(spec)) == (state, None)


def test_check_and_plan_read_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    from lora_syncer.cli import main
    from lora_syncer.commands.plan import rollouts_in_manifest

    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "qwen3-32b-automated-rollout" / "rules-automated-rollout.yaml"
    assert main(["check", str(example)]) == 0
    out = capsys.readouterr().out
    assert "rollout small-segment-lora-v2:" in out and "steps[3] t+10m: pause: manual gate" in out
    adapters = (root / "examples" / "qwen3-32b-rewrite" / "00-adapters.yaml").read_text()
    manifest = (adapters + "\n---\n" + example.read_text()).encode()
    assert [r.name for r in rollouts_in_manifest(manifest, "m.yaml")] == ["small-segment-lora-v2"]


def test_check_warns_when_the_adapters_file_removes_or_omits_a_rollouts_adapter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lora_syncer.cli import main
    from lora_syncer.rollout.crosscheck import adapter_warnings

    spec = parse_rules_text(good(), "rules.yaml").rollouts[0]
    warnings = adapter_warnings([spec], ["a-v2"], ["a-v1"])
    assert [(w.path, "ensureNotExist" in w.message) for w in warnings] == [("spec.stable", True)]
    assert [w.path for w in adapter_warnings([spec], [], [])] == ["spec.stable", "spec.canary"]
    assert adapter_warnings([spec], ["a-v1", "a-v2"], []) == []

    root = Path(__file__).resolve().parents[2]
    cleanup = root / "examples" / "qwen3-32b-rewrite" / "05-adapters-cleanup.yaml"
    example = root / "examples" / "qwen3-32b-automated-rollout" / "rules-automated-rollout.yaml"
    assert main(["check", str(cleanup), str(example)]) == 0
    out = capsys.readouterr().out
    assert (
        "removes 'small-segment-lora-v1' (ensureNotExist) while AdapterRollout/small-segment-lora-v2" in out
    )


COMPLETED_LONG_AGO = """\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {name: late}
spec:
  model: m
  stable: m-v1
  canary: m-v2
  startTime: '2026-01-01T00:00:00Z'
  steps: [{setWeight: 50}, {pause: {duration: 10s}}, {setWeight: 100}]
  analysis: {interval: 30s, maxErrorRate: 0.1}
"""


async def test_a_pod_started_after_completion_is_completed_at_its_first_pass(tmp_path: Path) -> None:
    """Windows that began before the pod did count as judged (no verdict) at once: a new pod
    must not hold a finished rollout at 50% until it has judged a window of its own."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(COMPLETED_LONG_AGO)
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    now = start + 3600.0 + 7.0  # an hour after the start, mid-window
    routes: list[dict[str, RolloutRoute]] = []
    controller = await controller_at(rules, now, routes=routes)
    await controller.tick()
    r = controller.status()["rollouts"][0]
    assert (r["phase"], r["canaryWeight"], r["step"]) == ("completed", 100, 3), r
    assert r["windowsJudged"] == 120  # windows 0..119 began before the pod: judged, no verdict
    assert r["lastWindows"][-1]["outcome"] == "no-verdict"
    assert {(w.name, w.weight) for w in routes[-1]["m"].targets} == {("m-v1", 0), ("m-v2", 100)}
