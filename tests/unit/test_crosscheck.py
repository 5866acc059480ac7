"""Cross-checks between the adapters file and the rules file (pure)."""

from __future__ import annotations

import pytest

from lora_syncer.config.adapters import parse_adapters_text
from lora_syncer.config.crosscheck import cross_check, percents
from lora_syncer.config.rules import parse_rules_text

ADAPTERS = """\
vLLMLoRAConfig:
  defaultBaseModel: Qwen/Qwen3-32B
  ensureExist:
    models:
    - {id: v1, source: s1}
    - {id: v2, source: s2}
  ensureNotExist:
    models:
    - {id: old}
"""


def rewrite(*targets: str, alias: str = "alias", pool: str | None = None) -> str:
    pool_ref = f"  poolRef: {{name: {pool}}}\n" if pool else ""
    lines = "".join(f"    - {t}\n" for t in targets)
    return (
        f"kind: InferenceModelRewrite\nmetadata: {{name: r}}\nspec:\n{pool_ref}  rules:\n"
        f"  - matches: [{{model: {{value: {alias}}}}}]\n    targets:\n{lines}"
    )


def findings(
    rules: str, base_models: list[str] | None = None, pools: list[str] | None = None
) -> list[tuple[str, str, str]]:
    result = cross_check(parse_adapters_text(ADAPTERS), parse_rules_text(rules), base_models, pools)
    return [(f.kind, f.subject, f.message) for f in result.findings]


class TestPercents:
    @pytest.mark.parametrize(
        ("weights", "expected"),
        [
            ([90, 10], [90, 10]),
            ([90, 20], [82, 18]),
            ([1, 1, 1], [34, 33, 33]),
            ([0, 0], [0, 0]),
            ([5], [100]),
        ],
    )
    def test_whole_percents_add_up_to_100(self, weights: list[int], expected: list[int]) -> None:
        """Effective shares in whole percents, adding up to exactly 100 (all zero when drained)."""
        assert percents(weights) == expected


class TestFindings:
    def test_consistent_files_have_none(self) -> None:
        """A 90/10 split between two declared adapters is consistent; its shares are reported."""
        result = cross_check(
            parse_adapters_text(ADAPTERS),
            parse_rules_text(rewrite("{modelRewrite: v1, weight: 90}", "{modelRewrite: v2, weight: 10}")),
        )
        assert result.findings == ()
        [shares] = result.shares
        assert shares.describe() == "alias -> v1 90%, v2 10%"

    def test_target_not_declared_or_unloaded(self) -> None:
        """A target missing from ensureExist, or listed in ensureNotExist, is reported; a base model is not."""
        found = findings(
            rewrite(
                "{modelRewrite: v3, weight: 40}",
                "{modelRewrite: old, weight: 40}",
                "{modelRewrite: Qwen/Qwen3-32B, weight: 20}",
            )
        )
        assert [(k, s) for k, s, _ in found] == [("undeclared_target", "v3"), ("unloaded_target", "old")]
        assert "not declared in ensureExist" in found[0][2]
        assert "is in ensureNotExist" in found[1][2]

    def test_drained_target_may_be_unloaded(self) -> None:
        """A target at weight 0 may be unloaded: the cleanup step of a rollout."""
        assert findings(rewrite("{modelRewrite: old, weight: 0}", "{modelRewrite: v2, weight: 100}")) == []

    def test_alias_is_adapter_or_base_model(self) -> None:
        """An alias that is an adapter id or a served base model hides it; given base models count too."""
        assert [(k, s) for k, s, _ in findings(rewrite("{modelRewrite: v2}", alias="v1"))] == [
            ("alias_is_adapter", "v1")
        ]
        assert [(k, s) for k, s, _ in findings(rewrite("{modelRewrite: v2}", alias="Qwen/Qwen3-32B"))] == [
            ("alias_is_base_model", "Qwen/Qwen3-32B")
        ]
        served = findings(rewrite("{modelRewrite: v2}", alias="other-base"), base_models=["other-base"])
        assert [(k, s) for k, s, _ in served] == [("alias_is_base_model", "other-base")]

    def test_alias_among_its_own_targets_is_fine(self) -> None:
        """An alias that keeps part of its traffic (it is one of its targets) stays reachable."""
        assert (
            findings(rewrite("{modelRewrite: v1, weight: 50}", "{modelRewrite: v2, weight: 50}", alias="v1"))
            == []
        )

    def test_weights_not_100_state_effective_shares(self) -> None:
        """90/20 is reported with its effective 82/18."""
        [(kind, _, message)] = findings(
            rewrite("{modelRewrite: v1, weight: 90}", "{modelRewrite: v2, weight: 20}")
        )
        assert kind == "weights_not_100"
        assert message == "weights 90/20 add up to 110, not 100: 90/20 is an effective 82/18"

    def test_unknown_pool(self) -> None:
        """A poolRef naming no pool of the HTTPRoute (or given) is reported; with no pools it is informational."""
        route = (
            "\n---\nkind: HTTPRoute\nmetadata: {name: route}\nspec:\n  rules:\n"
            "  - backendRefs: [{kind: InferencePool, group: inference.networking.k8s.io, name: llm}]\n"
        )
        rules = rewrite("{modelRewrite: v1}", pool="lm")
        assert findings(rules) == []
        [(kind, subject, message)] = findings(rules + route)
        assert (kind, subject) == ("unknown_pool", "lm")
        assert "(llm)" in message
        assert findings(rules, pools=["lm"]) == []
