"""The ready-to-use example ConfigMaps: each guide step is there, parses with `lora-syncer check`,
and says what the guides say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_support import ADAPTERS_KEY, EXAMPLES_DIR, RULES_KEY, assert_check_passes

QWEN = EXAMPLES_DIR / "qwen3-32b-rewrite"
LLAMA = EXAMPLES_DIR / "llama3-8b-instruct-inferencemodel"


def configmap(path: Path) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert doc["kind"] == "ConfigMap"
    return doc


def adapters(path: Path) -> tuple[list[str], list[str]]:
    cfg = yaml.safe_load(configmap(path)["data"][ADAPTERS_KEY])["vLLMLoRAConfig"]
    keep = [m["id"] for m in (cfg.get("ensureExist") or {}).get("models", [])]
    drop = [m["id"] for m in (cfg.get("ensureNotExist") or {}).get("models", [])]
    return keep, drop


def rewrite_weights(path: Path) -> dict[str, int | None]:
    (doc,) = list(yaml.safe_load_all(configmap(path)["data"][RULES_KEY]))
    assert doc["kind"] == "InferenceModelRewrite"
    (rule,) = doc["spec"]["rules"]
    assert rule["matches"] == [{"model": {"type": "Exact", "value": "small-segment-lora"}}]
    return {t["modelRewrite"]: t.get("weight") for t in rule["targets"]}


def model_weights(path: Path) -> dict[str, int]:
    (doc,) = list(yaml.safe_load_all(configmap(path)["data"][RULES_KEY]))
    assert doc["kind"] == "InferenceModel"
    assert doc["spec"]["modelName"] == "food-review"
    return {t["name"]: t["weight"] for t in doc["spec"]["targetModels"]}


# The two LoRA adapter rollout guides' ConfigMaps; the pool rollout examples are tested in test_helm_pools.py.
GUIDE_FILES = sorted([*QWEN.glob("*.yaml"), *LLAMA.glob("*.yaml")])


def test_every_example_passes_check() -> None:
    """`lora-syncer check` accepts every example file of the LoRA adapter rollout guides."""
    assert len(GUIDE_FILES) == 12
    assert_check_passes(GUIDE_FILES)


def test_qwen_rewrite_guide_steps() -> None:
    """The InferenceModelRewrite guide: both adapters, v1 alias, 90/10, 50/50, 0/100, then cleanup."""
    assert adapters(QWEN / "00-adapters.yaml") == (["small-segment-lora-v1", "small-segment-lora-v2"], [])
    assert rewrite_weights(QWEN / "01-rules-v1.yaml") == {"small-segment-lora-v1": None}
    assert rewrite_weights(QWEN / "02-rules-90-10.yaml") == {
        "small-segment-lora-v1": 90,
        "small-segment-lora-v2": 10,
    }
    assert rewrite_weights(QWEN / "03-rules-50-50.yaml") == {
        "small-segment-lora-v1": 50,
        "small-segment-lora-v2": 50,
    }
    assert rewrite_weights(QWEN / "04-rules-0-100.yaml") == {"small-segment-lora-v2": 100}
    assert adapters(QWEN / "05-adapters-cleanup.yaml") == (
        ["small-segment-lora-v2"],
        ["small-segment-lora-v1"],
    )


def test_llama_inferencemodel_guide_steps() -> None:
    """The InferenceModel guide: food-review-1, add -2, 90/10, 100 to -2, then unload -1."""
    assert adapters(LLAMA / "00-adapters.yaml") == (["food-review-1"], [])
    assert model_weights(LLAMA / "00-rules-baseline.yaml") == {"food-review-1": 100}
    assert adapters(LLAMA / "01-adapters-add-v2.yaml") == (["food-review-1", "food-review-2"], [])
    assert model_weights(LLAMA / "02-rules-90-10.yaml") == {"food-review-1": 90, "food-review-2": 10}
    assert model_weights(LLAMA / "03-rules-100.yaml") == {"food-review-2": 100}
    assert adapters(LLAMA / "04-adapters-cleanup.yaml") == (["food-review-2"], ["food-review-1"])


@pytest.mark.parametrize("path", GUIDE_FILES, ids=lambda p: p.name)
def test_configmap_names_stay_fixed_across_steps(path: Path) -> None:
    """Each step replaces the same ConfigMap (`<server>-adapters` or `<server>-rules`), so `kubectl apply` updates it."""
    server = "vllm-qwen3-32b" if path.parent == QWEN else "vllm-llama3-8b-instruct"
    data = configmap(path)["data"]
    expected = f"{server}-adapters" if ADAPTERS_KEY in data else f"{server}-rules"
    assert configmap(path)["metadata"]["name"] == expected
    assert set(data) in ({ADAPTERS_KEY}, {RULES_KEY})
