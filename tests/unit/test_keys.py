"""The "did you mean" of unknown keys: edit distance and the schema's own keys."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from lora_syncer.config.keys import closest, distance, unknown_key_message


class _Leaf(BaseModel):
    id: str
    base_model: str | None = Field(default=None, alias="base-model")


class _Branch(BaseModel):
    models: list[_Leaf] | None = None


class _Root(BaseModel):
    ensureExist: _Branch | None = None
    ensureNotExist: _Branch | None = None


class TestDistance:
    @pytest.mark.parametrize(
        ("a", "b", "d"),
        [("source", "source", 0), ("soruce", "source", 1), ("sorce", "source", 1), ("kitten", "sitting", 3)],
    )
    def test_edits(self, a: str, b: str, d: int) -> None:
        """Insertions, deletions, substitutions and swaps of neighbours each count one."""
        assert distance(a, b) == d


class TestClosest:
    @pytest.mark.parametrize(
        ("key", "meant"),
        [
            ("ensureExists", "ensureExist"),
            ("baseModel", "base-model"),
            ("base_model", "base-model"),
            ("soruce", "source"),
            ("match", "matches"),
            ("colour", None),
            ("source", None),
        ],
    )
    def test_closest(self, key: str, meant: str | None) -> None:
        """A close key is suggested; a far one, or the key itself, is not."""
        assert closest(key, ["ensureExist", "base-model", "source", "matches", "id"]) == meant


class TestMessage:
    def test_walks_lists_and_aliases(self) -> None:
        """The location is followed through optional fields and list items to the right model."""
        assert (
            unknown_key_message(_Root, ("ensureExist", "models", 3, "baseModel"))
            == "unknown key; did you mean 'base-model'?"
        )

    def test_wrong_indent(self) -> None:
        """A key that belongs one level down says where it belongs."""
        assert unknown_key_message(_Root, ("models",)) == (
            "unknown key here; 'models' belongs under ensureExist or ensureNotExist (check the indentation)"
        )

    def test_no_hint(self) -> None:
        """With nothing close, the keys that exist there are listed."""
        assert unknown_key_message(_Branch, ("zzz",)) == "unknown key (expected one of: models)"
