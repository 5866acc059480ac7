"""The rules file: parsing, validation errors with paths and lines, precedence."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import Rule, RuleSet, is_rules_document, parse_rules, resolve_precedence
from lora_syncer.config.yamldoc import load_documents
from tests.support.seeds import seed_file

# The guides' rules documents, read from examples/ as shipped.
SEED_002_90_10 = seed_file("qwen3-32b-rewrite", "02-rules-90-10")
SEED_002_V1 = seed_file("qwen3-32b-rewrite", "01-rules-v1")
SEED_000 = seed_file("llama3-8b-instruct-inferencemodel", "02-rules-90-10")


def parse(text: str, **kw: str) -> RuleSet:
    return parse_rules(text.encode(), "rules.yaml", **kw)


def errors_of(text: str, **kw: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text, **kw)
    assert info.value.file == "rules.yaml"
    return [(i.line, i.path, i.message) for i in info.value.errors]


def rewrite(name: str, rules: str, created: str | None = None) -> str:
    meta = f"  name: {name}\n" + (f'  creationTimestamp: "{created}"\n' if created else "")
    return f"kind: InferenceModelRewrite\nmetadata:\n{meta}spec:\n  rules:\n{rules}"


def exact(value: str, *targets: str) -> str:
    lines = [f"  - matches: [{{model: {{type: Exact, value: {value}}}}}]", "    targets:"]
    lines += [f"    - {t}" for t in targets]
    return "\n".join(lines) + "\n"


def catch_all(*targets: str) -> str:
    return "\n".join(["  - targets:", *[f"    - {t}" for t in targets]]) + "\n"


class TestSeedDocuments:
    def test_seed_002_split(self) -> None:
        """The 002 guide's 90/10 InferenceModelRewrite parses into one Exact rule with two weighted targets."""
        rs = parse(SEED_002_90_10)
        (rule,) = rs.rules
        assert rule.matches == ("small-segment-lora",)
        assert [(t.name, t.weight) for t in rule.targets] == [
            ("small-segment-lora-v1", 90),
            ("small-segment-lora-v2", 10),
        ]
        assert rule.weighted
        assert rule.id == "InferenceModelRewrite/small-segment-lora-rewrite#0"
        assert rule.pool == "vllm-qwen3-32b"
        assert rs.rule_for("small-segment-lora") is rule
        assert rs.rule_for("other") is None

    def test_seed_002_unweighted(self) -> None:
        """A single target without a weight gets all the traffic (weight 1, unweighted)."""
        (rule,) = parse(SEED_002_V1).rules
        assert [(t.name, t.weight) for t in rule.targets] == [("small-segment-lora-v1", 1)]
        assert not rule.weighted

    def test_seed_000_inference_model(self) -> None:
        """The 000 guide's InferenceModel maps modelName to its weighted targetModels."""
        rs = parse(SEED_000)
        (rule,) = rs.rules
        assert rule.kind == "InferenceModel"
        assert rule.matches == ("food-review",)
        assert [(t.name, t.weight) for t in rule.targets] == [("food-review-1", 90), ("food-review-2", 10)]
        assert rs.documents[0].name == "food-review"
        assert rs.documents[0].pool == "vllm-llama3-8b-instruct"

    def test_inference_model_without_targets_serves_its_name(self) -> None:
        """An InferenceModel with no targetModels serves modelName as it is (the API default)."""
        (rule,) = parse("kind: InferenceModel\nmetadata: {name: m}\nspec:\n  modelName: food-review\n").rules
        assert [t.name for t in rule.targets] == ["food-review"]

    def test_both_kinds_in_one_file(self) -> None:
        """A file with several documents of both kinds yields every rule in document order."""
        rs = parse(SEED_002_90_10 + "---\n" + SEED_000)
        assert [r.kind for r in rs.rules] == ["InferenceModelRewrite", "InferenceModel"]
        assert [d.index for d in rs.documents] == [0, 1]

    def test_kubectl_list(self) -> None:
        """A `kind: List` as kubectl prints it is read item by item, timestamps included."""
        text = """\
apiVersion: v1
kind: List
items:
- apiVersion: inference.networking.x-k8s.io/v1alpha2
  kind: InferenceModelRewrite
  metadata:
    name: b
    creationTimestamp: "2025-12-03T18:22:38Z"
    resourceVersion: "123"
    uid: 0b6a
  spec:
    poolRef: {name: pool}
    rules:
    - matches: [{model: {value: alias}}]
      targets: [{modelRewrite: t1}]
  status:
    conditions: []
metadata:
  resourceVersion: ""
"""
        rs = parse(text)
        (rule,) = rs.rules
        assert rule.created == datetime(2025, 12, 3, 18, 22, 38, tzinfo=UTC)
        assert rule.matches == ("alias",)  # type defaults to Exact

    def test_empty_file_is_valid_with_a_warning(self) -> None:
        """An empty rules file means no rules (pass-through), with a warning."""
        rs = parse("")
        assert rs.rules == ()
        assert any("no rules" in w.message for w in rs.warnings)

    def test_status_dict(self) -> None:
        """`to_dict` lists rules with shares, which rule is in force, and source documents."""
        d = parse(SEED_002_90_10).to_dict()
        (rule,) = d["rules"]
        assert rule["inForce"] is True
        assert [t["share"] for t in rule["targets"]] == [0.9, 0.1]
        assert d["documents"][0]["name"] == "small-segment-lora-rewrite"


class TestErrors:
    def test_mixed_weights(self) -> None:
        """If one target has a weight every target must have one; the error points at the one without."""
        text = rewrite("r", exact("a", "{modelRewrite: v1, weight: 5}", "{modelRewrite: v2}"))
        [(line, path, message)] = errors_of(text)
        assert path == "spec.rules[0].targets[1]"
        assert line == 9
        assert "every target must have one" in message

    def test_empty_targets(self) -> None:
        """A rule with an empty target list is an error at that rule's targets."""
        text = "kind: InferenceModelRewrite\nmetadata: {name: r}\nspec:\n  rules:\n  - matches: []\n    targets: []\n"
        [(line, path, message)] = errors_of(text)
        assert (line, path) == (6, "spec.rules[0].targets")
        assert "at least one target" in message

    def test_empty_target_models(self) -> None:
        """An explicitly empty targetModels list is an error (omit it to serve modelName)."""
        [(_, path, _)] = errors_of("kind: InferenceModel\nspec:\n  modelName: m\n  targetModels: []\n")
        assert path == "spec.targetModels"

    def test_misspelt_key(self) -> None:
        """An unknown key under spec is an error naming its path and line."""
        text = rewrite("r", exact("a", "{modelRewrite: v1, wieght: 5}"))
        [(line, path, message)] = errors_of(text)
        assert (line, path) == (8, "spec.rules[0].targets[0].wieght")
        assert message == "unknown key; did you mean 'weight'?"

    def test_unknown_key_hints(self) -> None:
        """Unknown keys under spec name the key meant, or list the keys that exist there."""
        text = "kind: InferenceModel\nspec:\n  modelName: m\n  targetModel: []\n  colour: red\n"
        assert [(p, m) for _, p, m in errors_of(text)] == [
            ("spec.targetModel", "unknown key; did you mean 'targetModels'?"),
            ("spec.colour", "unknown key (expected one of: modelName, criticality, poolRef, targetModels)"),
        ]

    def test_bad_weight_values(self) -> None:
        """Weights are whole numbers from 0 to 1,000,000; strings and negatives are rejected."""
        text = rewrite("r", exact("a", "{modelRewrite: v1, weight: -1}", "{modelRewrite: v2, weight: '5'}"))
        found = errors_of(text)
        assert [p for _, p, _ in found] == [
            "spec.rules[0].targets[0].weight",
            "spec.rules[0].targets[1].weight",
        ]

    def test_match_type_other_than_exact(self) -> None:
        """Only the Exact match type exists."""
        text = "kind: InferenceModelRewrite\nspec:\n  rules:\n  - matches: [{model: {type: Prefix, value: a}}]\n    targets: [{modelRewrite: b}]\n"
        [(_, path, message)] = errors_of(text)
        assert path == "spec.rules[0].matches[0].model.type"
        assert "Exact" in message

    def test_duplicate_target(self) -> None:
        """A target listed twice in one rule is an error."""
        text = rewrite("r", exact("a", "{modelRewrite: v1}", "{modelRewrite: v1}"))
        [(_, path, message)] = errors_of(text)
        assert path == "spec.rules[0].targets[1].modelRewrite"
        assert "listed twice" in message

    def test_loop_between_aliases(self) -> None:
        """Two aliases that are each other's targets are a rewrite loop."""
        text = rewrite("r", exact("a", "{modelRewrite: b}") + exact("b", "{modelRewrite: a}"))
        [(line, path, message)] = errors_of(text)
        assert path == "spec.rules[0]"
        assert line == 6
        assert "rewrite loop: a -> b -> a" in message

    def test_self_only_target(self) -> None:
        """A rule that sends a name only to itself is an error."""
        [(_, _, message)] = errors_of(rewrite("r", exact("a", "{modelRewrite: a}")))
        assert "only to itself" in message

    def test_self_among_others_is_allowed(self) -> None:
        """Keeping part of the traffic on the alias's own name next to another target is allowed."""
        rs = parse(
            rewrite("r", exact("a", "{modelRewrite: a, weight: 9}", "{modelRewrite: a-v2, weight: 1}"))
        )
        assert len(rs.rules) == 1

    def test_pool_name_checked(self) -> None:
        """With --pool-name set, a poolRef naming another pool is an error; without it any pool is accepted."""
        [(_, path, message)] = errors_of(SEED_002_90_10, pool_name="other-pool")
        assert path == "spec.poolRef.name"
        assert "other-pool" in message
        assert parse(SEED_002_90_10, pool_name="vllm-qwen3-32b").rules

    def test_wrong_kind_and_adapters_file(self) -> None:
        """Unknown kinds are errors, and an adapters file given as rules says what it is."""
        found = errors_of("kind: ConfigMap\n---\nvLLMLoRAConfig: {}\n---\n- a\n")
        assert "not a rules document" in found[0][2]
        assert "adapters file" in found[1][2]
        assert "must be a mapping" in found[2][2]
        assert [line for line, _, _ in found] == [1, 3, 5]

    def test_yaml_syntax_error(self) -> None:
        """Text that is not YAML gives one error with its line."""
        [(line, _, message)] = errors_of("kind: InferenceModel\nspec: [unclosed\n")
        assert line is not None
        assert "YAML" in message

    def test_every_document_reported(self) -> None:
        """Errors in several documents are all reported, each with its own line."""
        bad = rewrite("r", exact("a", "{modelRewrite: v1, weight: 1}", "{modelRewrite: v2}"))
        found = errors_of(bad + "---\n" + bad.replace("name: r", "name: s"))
        assert [line for line, _, _ in found] == [9, 19]

    def test_duplicate_document_names(self) -> None:
        """Two documents of one kind with the same name are an error."""
        doc = rewrite("r", exact("a", "{modelRewrite: v1}"))
        [(_, path, message)] = errors_of(doc + "---\n" + doc.replace("value: a", "value: b"))
        assert path == "metadata.name"
        assert "unique" in message

    def test_not_utf8(self) -> None:
        """Binary content is refused with a clear message."""
        with pytest.raises(ConfigError, match="UTF-8"):
            parse_rules(b"\xff\xfe\x00k", "rules.yaml")


class TestPrecedence:
    def test_exact_beats_catch_all(self) -> None:
        """An Exact rule wins over a catch-all for its name even when the catch-all is older."""
        text = rewrite("old", catch_all("{modelRewrite: base}"), "2020-01-01T00:00:00Z") + "---\n"
        text += rewrite("new", exact("a", "{modelRewrite: a-v1}"), "2025-01-01T00:00:00Z")
        rs = parse(text)
        rule_a = rs.rule_for("a")
        assert rule_a is not None and rule_a.document == "new"
        other = rs.rule_for("anything-else")
        assert other is not None and other.document == "old"

    def test_oldest_timestamp_wins(self) -> None:
        """Between two Exact rules for one name, the oldest creationTimestamp wins and the other is warned about."""
        text = rewrite("newer", exact("a", "{modelRewrite: x}"), "2025-06-01T00:00:00Z") + "---\n"
        text += rewrite("older", exact("a", "{modelRewrite: y}"), "2024-06-01T00:00:00Z")
        rs = parse(text)
        winner = rs.rule_for("a")
        assert winner is not None and winner.document == "older"
        assert any("takes precedence" in w.message and w.severity == "warning" for w in rs.warnings)

    def test_document_order_then_rule_order(self) -> None:
        """Without timestamps the earlier document wins, and within one document the earlier rule."""
        text = rewrite("first", exact("a", "{modelRewrite: x}") + exact("a", "{modelRewrite: z}")) + "---\n"
        text += rewrite("second", exact("a", "{modelRewrite: y}"))
        winner = parse(text).rule_for("a")
        assert winner is not None and (winner.document, winner.rule_index) == ("first", 0)

    def test_missing_timestamp_counts_as_newest(self) -> None:
        """A document with a timestamp beats an earlier one without."""
        text = rewrite("hand-written", exact("a", "{modelRewrite: x}")) + "---\n"
        text += rewrite("applied", exact("a", "{modelRewrite: y}"), "2025-01-01T00:00:00Z")
        winner = parse(text).rule_for("a")
        assert winner is not None and winner.document == "applied"

    def test_first_catch_all_wins(self) -> None:
        """With two catch-all rules, the first in precedence order applies."""
        text = rewrite("r", catch_all("{modelRewrite: x}") + catch_all("{modelRewrite: y}"))
        _, winner, shadowed = resolve_precedence(parse(text).rules)
        assert winner is not None and winner.targets[0].name == "x"
        assert len(shadowed) == 1

    def test_yaml_timestamps_unquoted(self) -> None:
        """An unquoted timestamp (a YAML datetime) is read the same as a quoted one."""
        text = "kind: InferenceModel\nmetadata: {name: m, creationTimestamp: 2025-01-02T03:04:05Z}\nspec: {modelName: x}\n"
        (rule,) = parse(text).rules
        assert rule.created == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def test_precedence_key_orders(self) -> None:
        """The precedence key sorts by timestamp presence, timestamp, document, then rule index."""

        def mk(created: datetime | None, doc: int, idx: int) -> Rule:
            return Rule("id", "k", "d", doc, idx, ("a",), (), False, created=created)

        early = datetime(2020, 1, 1, tzinfo=UTC)
        rules = [mk(None, 0, 0), mk(early, 5, 1), mk(early, 5, 0), mk(datetime(2021, 1, 1, tzinfo=UTC), 0, 0)]
        ordered = sorted(rules, key=lambda r: r.precedence_key)
        assert ordered == [rules[2], rules[1], rules[3], rules[0]]


class TestWarnings:
    def test_all_drained_warns(self) -> None:
        """A rule whose targets all have weight 0 is valid but warned about (503 at request time)."""
        rs = parse(rewrite("r", exact("a", "{modelRewrite: v1, weight: 0}", "{modelRewrite: v2, weight: 0}")))
        assert any("503" in w.message for w in rs.warnings)

    def test_chained_alias_warns(self) -> None:
        """A target that is itself an alias is a warning: rewrites are not chained."""
        rs = parse(rewrite("r", exact("a", "{modelRewrite: b}") + exact("b", "{modelRewrite: c}")))
        assert any("not rewritten again" in w.message for w in rs.warnings)

    def test_unexpected_api_group_warns(self) -> None:
        """An unknown API group is read anyway, with a warning."""
        rs = parse("apiVersion: example.com/v1\nkind: InferenceModel\nspec: {modelName: x}\n")
        assert rs.rules and any("API group" in w.message for w in rs.warnings)


class TestIsRulesDocument:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (SEED_002_90_10, True),
            (SEED_000, True),
            ("kind: InferenceModelRewriteList\nitems: []\n", True),
            ("kind: List\nitems: [{kind: InferenceModel}]\n", True),
            ("kind: List\nitems: [{kind: ConfigMap}]\n", False),
            ("kind: ConfigMap\ndata: {}\n", False),
            ("vLLMLoRAConfig: {}\n", False),
            ("- 1\n", False),
        ],
    )
    def test_routing(self, text: str, expected: bool) -> None:
        """Rules documents (and Lists of them) are recognised; adapters files and ConfigMaps are not."""
        (doc,) = load_documents(text)
        assert is_rules_document(doc.data) is expected
