"""Per-model faults: exact deterministic rates, validation of the control API's `models` and of --model-fault."""

from __future__ import annotations

import pytest

from lora_syncer.emulator.faults import Faults
from lora_syncer.emulator.model_faults import ExactRate, ModelFault, check_models, parse_model_fault_flags


@pytest.mark.parametrize(
    ("rate", "n", "fired"), [(0.5, 20, 10), (0.1, 100, 10), (0.29, 100, 29), (1.0, 7, 7), (0.0, 9, 0)]
)
def test_exact_rate_fires_exactly_that_fraction(rate: float, n: int, fired: int) -> None:
    """The counter fires rate * n times over n calls: no dice, no float drift."""
    counter = ExactRate(rate)
    assert sum(counter.fire() for _ in range(n)) == fired


def test_exact_rate_spreads_evenly() -> None:
    """0.5 fires on every second call, starting with the second."""
    counter = ExactRate(0.5)
    assert [counter.fire() for _ in range(6)] == [False, True, False, True, False, True]


def test_empty_rate_applies_only_with_an_empty_reason() -> None:
    """`empty_rate` alone does nothing; with `empty` it picks which answers are empty."""
    assert ModelFault(empty_rate=1.0).empty_reason() is None
    fault = ModelFault(empty="stop", empty_rate=0.5)
    assert [fault.empty_reason() for _ in range(4)] == [None, "stop", None, "stop"]


def test_faults_update_sets_and_clears_one_model_keeping_the_others_counters() -> None:
    """`models` names the models changed; null clears one; untouched models keep counting where they were."""
    faults = Faults()
    faults.update({"models": {"a": {"error_rate": 0.5}, "b": {"error_rate": 0.5}}})
    a = faults.models["a"]
    assert a.should_fail() is False  # a's first request
    faults.update({"models": {"b": None}})
    assert "b" not in faults.models and faults.models["a"] is a
    assert a.should_fail() is True  # a's second request: the counter went on
    assert faults.to_dict()["models"] == {
        "a": {
            "error_rate": 0.5,
            "latency": 0.0,
            "empty": None,
            "empty_rate": 1.0,
            "break_after": None,
            "sse_error_after": None,
        }
    }


def test_copy_restarts_the_counters() -> None:
    """A reset to the start-up faults starts every model's counting afresh."""
    faults = Faults(models={"a": ModelFault(error_rate=0.5)})
    faults.models["a"].should_fail()
    again = faults.copy()
    assert [again.models["a"].should_fail() for _ in range(2)] == [False, True]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"v2": {"error_rate": 2}}, r"models\['v2'\].error_rate must be between 0 and 1"),
        ({"v2": {"latency": -1}}, r"models\['v2'\].latency must be >= 0"),
        ({"v2": {"empty": "maybe"}}, r"models\['v2'\].empty must be null, 'length' or 'stop'"),
        ({"v2": {"break_after": 1.5}}, r"models\['v2'\].break_after must be a whole number"),
        ({"v2": {"eror_rate": 1}}, r"unknown model fault 'eror_rate' in models\['v2'\]"),
        ({"v2": 3}, r"models\['v2'\] must be an object"),
        ([], "models must be an object"),
    ],
)
def test_bad_models_are_refused_with_the_field(models: object, message: str) -> None:
    """Each bad value names the model and field; nothing changes."""
    faults = Faults(models={"keep": ModelFault(latency=1.0)})
    with pytest.raises(ValueError, match=message):
        faults.update({"models": models})
    assert list(faults.models) == ["keep"]
    with pytest.raises(ValueError, match=message):
        check_models(models)


def test_flags_build_one_fault_per_model() -> None:
    """Several --model-fault flags for one model combine; a model name may contain ':' and '/'."""
    faults = parse_model_fault_flags(
        ["org/v2:error_rate=0.25", "org/v2:empty=length", "a:b:sse_error_after=3", "org/v2:latency=0.5"]
    )
    assert faults["org/v2"].to_dict() == {
        "error_rate": 0.25,
        "latency": 0.5,
        "empty": "length",
        "empty_rate": 1.0,
        "break_after": None,
        "sse_error_after": None,
    }
    assert faults["a:b"].sse_error_after == 3


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("v2", "must look like MODEL:FIELD=VALUE"),
        ("error_rate=1", "must look like MODEL:FIELD=VALUE"),
        ("v2:error_rate=x", "error_rate must be a number"),
        ("v2:nope=1", "unknown model fault 'nope'"),
    ],
)
def test_bad_flags(item: str, message: str) -> None:
    """A malformed flag is one clear line naming --model-fault."""
    with pytest.raises(ValueError, match=f"--model-fault.*{message}"):
        parse_model_fault_flags([item])
