"""`config.schema`: the adapters file's strict schema reports what pydantic did, kind and place."""

from __future__ import annotations

from typing import Any

import pytest

from lora_syncer.config.schema import Int, Invalid, Key, ListOf, Obj, Str, validate

ITEM = Obj(
    "_Item",
    {
        "id": Key(Str(min_length=1), required=True, nullable=False),
        "base_model": Key(Str(), alias="base-model"),
    },
)
ROOT = Obj(
    "_Root",
    {
        "port": Key(Int(ge=1, le=65535), default=8000, nullable=False),
        "items": Key(ListOf(ITEM)),
    },
)


def errors(value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(Invalid) as info:
        validate(ROOT, value)
    return [(e.loc, e.type) for e in info.value.errors]


def test_defaults_and_plain_dicts() -> None:
    """Absent keys take their default; the result is keyed by field name, aliases read."""
    assert validate(ROOT, {"items": [{"id": " a ", "base-model": "b"}]}) == {
        "port": 8000,
        "items": [{"id": "a", "base_model": "b"}],
    }


def test_field_name_accepted_in_place_of_alias() -> None:
    assert validate(ITEM, {"id": "a", "base_model": "b"}) == {"id": "a", "base_model": "b"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"port": True}, [(("port",), "int_type")]),
        ({"port": 8000.0}, [(("port",), "int_type")]),
        ({"port": 0}, [(("port",), "greater_than_equal")]),
        ({"port": 70000}, [(("port",), "less_than_equal")]),
        ({"port": None}, [(("port",), "int_type")]),
        ({"items": {"id": "a"}}, [(("items",), "list_type")]),
        ({"items": ["a"]}, [(("items", 0), "model_type")]),
        ({"items": [{}]}, [(("items", 0, "id"), "missing")]),
        ({"items": [{"id": "  "}]}, [(("items", 0, "id"), "string_too_short")]),
        ({"items": [{"id": 5}]}, [(("items", 0, "id"), "string_type")]),
        ({"items": [{"id": "a", 3: "x"}]}, [(("items", 0, 3), "invalid_key")]),
        (
            {"items": [{"id": "a", "base-model": "b", "base_model": "c"}]},
            [(("items", 0, "base_model"), "extra_forbidden")],
        ),
        ({"prot": 1, "port": "x"}, [(("port",), "int_type"), (("prot",), "extra_forbidden")]),
    ],
)
def test_error_kinds_and_places(value: Any, expected: list[tuple[tuple[str | int, ...], str]]) -> None:
    """Every problem is found at once, declared keys first, then unknown keys in file order."""
    assert errors(value) == expected


def test_not_a_mapping() -> None:
    assert errors(["x"]) == [((), "model_type")]
