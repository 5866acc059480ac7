"""tests.support.seeds: the guides' ConfigMaps, read from examples/ in the repository."""

from __future__ import annotations

import pytest

from tests.support.seeds import EXAMPLES, GUIDES, all_seeds, guide_seeds, seed_file


def test_every_guide_step_is_a_configmap_with_one_file() -> None:
    """Both LoRA guides ship 6 steps each; every step is a ConfigMap carrying configmap.yaml or rules.yaml."""
    seeds = all_seeds()
    assert [len(guide_seeds(g)) for g in GUIDES] == [6, 6]
    for seed in seeds:
        assert seed.path.is_relative_to(EXAMPLES)
        assert list(seed.data) in (["configmap.yaml"], ["rules.yaml"]), seed.path


def test_seed_file_is_the_mounted_file() -> None:
    """seed_file gives the text the sidecar would read from the mounted key."""
    text = seed_file("qwen3-32b-rewrite", "00-adapters")
    assert text.startswith("vLLMLoRAConfig:\n")
    assert "small-segment-lora-v1" in text


def test_unknown_guide_is_an_error() -> None:
    """Asking for a guide the repository does not ship fails instead of returning nothing."""
    with pytest.raises(FileNotFoundError):
        guide_seeds("no-such-guide")
