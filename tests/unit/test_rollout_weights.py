"""Route-table input: [stable, canary] ordering, weights per phase, and precedence over rules."""

from __future__ import annotations

from dataclasses import replace

from lora_syncer.rollout.schedule import Phase, RolloutPosition
from lora_syncer.rollout.spec import RolloutSpec, SetWeight
from lora_syncer.rollout.weights import WeightedTarget, overrides, route_for

SPEC = RolloutSpec(name="r", model="m", stable="m-v1", canary="m-v2", steps=(SetWeight(100),), line=12)


def pos(weight: int, mirror: int = 0, phase: Phase = Phase.PROGRESSING) -> RolloutPosition:
    return RolloutPosition(phase, 0, weight, mirror, "", 0.0)


def test_targets_are_stable_then_canary_even_at_zero() -> None:
    for weight in (0, 10, 50, 100):
        route = route_for(SPEC, pos(weight))
        assert route.targets == (WeightedTarget("m-v1", 100 - weight), WeightedTarget("m-v2", weight))
        assert route.model == "m"
        assert route.document == "AdapterRollout/r"
        assert route.mirror is None


def test_mirror_names_the_canary_and_its_percent() -> None:
    assert route_for(SPEC, pos(0, 20)).mirror == WeightedTarget("m-v2", 20)


def test_a_rollout_wins_over_a_rule_for_its_model_with_a_warning_naming_both() -> None:
    routes, issues = overrides(
        [(SPEC, pos(10))], {"m": "InferenceModelRewrite/m-rewrite#0", "other": "InferenceModel/o"}
    )
    assert set(routes) == {"m"}
    assert routes["m"].targets[1] == WeightedTarget("m-v2", 10)
    (issue,) = issues
    assert issue.severity == "warning"
    assert issue.path == "spec.model"
    assert issue.line == 12
    assert "InferenceModelRewrite/m-rewrite#0" in issue.message
    assert "AdapterRollout/r" in issue.message


def test_no_rule_no_warning() -> None:
    routes, issues = overrides([(SPEC, pos(100, phase=Phase.COMPLETED))], {})
    assert routes["m"].targets == (WeightedTarget("m-v1", 0), WeightedTarget("m-v2", 100))
    assert issues == []


def test_two_rollouts_for_one_model_the_first_wins() -> None:
    second = replace(SPEC, name="r2", canary="m-v3")
    routes, issues = overrides([(SPEC, pos(10)), (second, pos(50))], {})
    assert routes["m"].document == "AdapterRollout/r"
    (issue,) = issues
    assert "AdapterRollout/r," in issue.message
    assert "AdapterRollout/r2 is not used" in issue.message


def test_an_adapter_that_is_itself_an_alias_is_warned_about() -> None:
    _routes, issues = overrides([(SPEC, pos(10))], {"m-v2": "InferenceModel/v2"})
    (issue,) = issues
    assert issue.path == "spec.canary"
    assert "applied once" in issue.message
