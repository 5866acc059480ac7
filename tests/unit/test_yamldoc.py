"""YAML loading that remembers lines, and the located error type."""

from __future__ import annotations

import pytest

from lora_syncer.config.errors import ConfigError, Issue, join_path
from lora_syncer.config.yamldoc import YamlSyntaxError, decode_text, load_documents


class TestLoadDocuments:
    def test_lines_of_keys_and_items(self) -> None:
        """Every key and list item records its 1-based line."""
        [doc] = load_documents("a:\n  b:\n  - id: x\n    source: y\n  - id: z\n")
        assert doc.data == {"a": {"b": [{"id": "x", "source": "y"}, {"id": "z"}]}}
        assert doc.line_of(("a", "b", 1, "id")) == 5
        assert doc.line_of(("a", "b", 0, "source")) == 4

    def test_line_of_missing_path_falls_back_to_parent(self) -> None:
        """A path that is not in the document gets its nearest ancestor's line."""
        [doc] = load_documents("a:\n  b:\n  - id: x\n")
        assert doc.line_of(("a", "b", 0, "source")) == 3

    def test_multiple_documents(self) -> None:
        """Several documents each know where they start."""
        docs = load_documents("k: 1\n---\nk: 2\n---\nk: 3\n")
        assert [(d.data["k"], d.start_line, d.index) for d in docs] == [(1, 1, 0), (2, 3, 1), (3, 5, 2)]

    def test_duplicate_key_warns(self) -> None:
        """A repeated key is a warning naming the later line."""
        [doc] = load_documents("a: 1\nb: 2\na: 3\n")
        assert doc.data == {"a": 3, "b": 2}
        [w] = doc.warnings
        assert (w.path, w.line, w.severity) == ("a", 3, "warning")

    def test_merge_keys(self) -> None:
        """YAML merge keys resolve as PyYAML resolves them."""
        [doc] = load_documents("base: &b {x: 1}\nitem:\n  <<: *b\n  y: 2\n")
        assert doc.data["item"] == {"x": 1, "y": 2}

    def test_syntax_error_has_line_and_column(self) -> None:
        """Bad YAML raises YamlSyntaxError with the line."""
        with pytest.raises(YamlSyntaxError) as info:
            load_documents("a: 1\n b: 2\n")
        assert info.value.line == 2
        assert "YAML syntax error" in info.value.message


class TestErrors:
    def test_join_path(self) -> None:
        """Paths render as dotted keys with [index] for list items."""
        assert join_path(("vLLMLoRAConfig", "ensureExist", "models", 2, "source")) == (
            "vLLMLoRAConfig.ensureExist.models[2].source"
        )

    def test_issue_format(self) -> None:
        """An issue formats as file:line: severity: path: message."""
        issue = Issue(path="a.b", message="is required", line=3, file="cm.yaml")
        assert issue.format() == "cm.yaml:3: error: a.b: is required"

    def test_config_error_is_value_error_with_summary(self) -> None:
        """ConfigError is a ValueError whose summary names the first error and counts the rest."""
        err = ConfigError("f", [Issue("a", "bad", 1, file="f"), Issue("b", "worse", 2, file="f")])
        assert isinstance(err, ValueError)
        assert err.summary() == "f:1: error: a: bad (and 1 more)"

    def test_decode_text_refuses_binary(self) -> None:
        """NUL bytes mean binary content, refused as not text."""
        with pytest.raises(UnicodeDecodeError):
            decode_text(b"abc\x00def")
        assert decode_text("\ufeffkey: v".encode()) == "key: v"
