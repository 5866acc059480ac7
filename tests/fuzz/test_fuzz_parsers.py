"""The adapters-file and rules-file parsers on arbitrary input: they return a value or raise
ConfigError, whose issues are structured (file, path, message); never another exception."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
from lora_syncer.config.crosscheck import cross_check
from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import RuleSet, parse_rules

FILE = "fuzz.yaml"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["id", "source", "models", "Qwen/Qwen3-32B", "org/a", "/adapters/x", "", "8000"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "vLLMLoRAConfig",
            "ensureExist",
            "ensureNotExist",
            "models",
            "id",
            "source",
            "base-model",
            "host",
            "port",
            "name",
            "defaultBaseModel",
            "apiVersion",
            "kind",
            "metadata",
            "spec",
            "rules",
            "matches",
            "model",
            "type",
            "value",
            "targets",
            "modelRewrite",
            "weight",
            "modelName",
            "targetModels",
            "poolRef",
            "criticality",
        ]
    ),
    st.text(max_size=8),
    st.integers(),
)
# Nested documents shaped like the real ones often enough to reach validation, not only the YAML layer.
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=40,
)
kinds = st.sampled_from(["InferenceModelRewrite", "InferenceModel", "ConfigMap", "Other", ""])


def yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def check_error(exc: ConfigError) -> None:
    assert exc.issues, "a ConfigError names at least one issue"
    assert exc.errors, "a ConfigError holds at least one error-severity issue"
    for issue in exc.issues:
        assert isinstance(issue.path, str)
        assert isinstance(issue.message, str) and issue.message
        assert issue.file == FILE
        assert issue.line is None or issue.line >= 1
        assert issue.format().startswith(FILE)
    assert str(exc)


def parses_or_config_error(parse: Any, raw: bytes, want: type) -> None:
    try:
        value = parse(raw, FILE)
    except ConfigError as exc:
        check_error(exc)
    else:
        assert isinstance(value, want)


PARSERS = [
    pytest.param(parse_adapters, AdaptersConfig, id="adapters"),
    pytest.param(parse_rules, RuleSet, id="rules"),
]


@pytest.mark.parametrize(("parse", "want"), PARSERS)
@given(raw=st.binary(max_size=512))
@example(raw=b"\xff\xfe\x00v")
@example(raw=b"vLLMLoRAConfig: !!python/object/apply:os.system [true]\n")
@example(raw=b"a: &x 1\nb: *y\n")
@example(raw=b"\xef\xbb\xbfvLLMLoRAConfig: {}\n")
def test_bytes(parse: Any, want: type, raw: bytes) -> None:
    """Any bytes: a value or a structured ConfigError."""
    parses_or_config_error(parse, raw, want)


@pytest.mark.parametrize(("parse", "want"), PARSERS)
@given(text=st.text(alphabet=st.sampled_from(list("{}[]:,-&*!|>'\"#%@`?\n\t abc019.~")), max_size=200))
def test_yaml_punctuation(parse: Any, want: type, text: str) -> None:
    """Text made of YAML's syntax characters: a value or a structured ConfigError."""
    parses_or_config_error(parse, text.encode(), want)


@given(body=documents)
def test_adapters_documents(body: Any) -> None:
    """Any document under `vLLMLoRAConfig`: a valid config or a structured ConfigError."""
    parses_or_config_error(parse_adapters, yaml_text({"vLLMLoRAConfig": body}).encode(), AdaptersConfig)


@given(kind=kinds, spec=documents, extra=st.lists(documents, max_size=2))
def test_rules_documents(kind: str, spec: Any, extra: list[Any]) -> None:
    """Rules documents with any `spec` (and more documents after): a rule set or a structured ConfigError."""
    docs = [
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
            "kind": kind,
            "metadata": {"name": "f"},
            "spec": spec,
        },
        *extra,
    ]
    text = "---\n".join(yaml_text(d) for d in docs)
    parses_or_config_error(parse_rules, text.encode(), RuleSet)


@pytest.mark.parametrize(("parse", "want"), PARSERS)
@given(depth=st.integers(min_value=1, max_value=60), opener=st.sampled_from(["[", "{a: ", "- "]))
def test_moderate_nesting(parse: Any, want: type, depth: int, opener: str) -> None:
    """Nesting a real file could plausibly hold (up to 60 levels): a value or a structured ConfigError."""
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    if opener == "- ":
        text = "vLLMLoRAConfig:\n" + "".join("  " * (i + 1) + "- \n" for i in range(depth))
    else:
        text = "vLLMLoRAConfig: " + opener * depth + "1" + closer * depth + "\n"
    parses_or_config_error(parse, text.encode(), want)


names = st.sampled_from(["a", "b", "c", "base", "alias"])


@given(
    exist=st.lists(names, max_size=4, unique=True),
    not_exist=st.lists(names, max_size=3, unique=True),
    alias=names,
    targets=st.lists(
        st.tuples(names, st.integers(0, 1_000_000)), min_size=1, max_size=5, unique_by=lambda t: t[0]
    ),
    weighted=st.booleans(),
)
def test_cross_check_of_any_valid_pair(
    exist: list[str], not_exist: list[str], alias: str, targets: list[tuple[str, int]], weighted: bool
) -> None:
    """Any valid adapters file and rule: findings name the rule, and effective shares add up to 100 (or 0)."""
    adapters = yaml_text(
        {
            "vLLMLoRAConfig": {
                "defaultBaseModel": "base",
                "ensureExist": {"models": [{"id": i, "source": f"org/{i}"} for i in exist]},
                "ensureNotExist": {"models": [{"id": i} for i in not_exist]},
            }
        }
    )
    rule = {
        "kind": "InferenceModelRewrite",
        "metadata": {"name": "r"},
        "spec": {
            "rules": [
                {
                    "matches": [{"model": {"value": alias}}],
                    "targets": [
                        {"modelRewrite": n, **({"weight": w} if weighted else {})} for n, w in targets
                    ],
                }
            ]
        },
    }
    try:
        ruleset = parse_rules(yaml_text(rule).encode(), FILE)
    except ConfigError as exc:  # e.g. a rule sending its alias only to itself
        check_error(exc)
        return
    result = cross_check(parse_adapters(adapters.encode(), FILE), ruleset)
    assert all(f.rule == ruleset.rules[0].id and f.message for f in result.findings)
    [shares] = result.shares
    assert sum(s.percent for s in shares.shares) in (0, 100)
