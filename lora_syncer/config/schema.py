"""A small strict schema for plain YAML data (pure): keys, types and bounds of a mapping.

The adapters file is validated with it instead of pydantic, so `lora-syncer run` with only an
adapters file never imports pydantic (about 9 MiB of a sidecar whose limit is 45). It reports
problems the way the rules file's pydantic models do — the same error kinds (`string_type`,
`missing`, `extra_forbidden`...), locations and order — so `config.parsing` words both alike.

An `Obj` is the one list of the keys a mapping accepts (a key it does not declare is an error,
with a "did you mean" from `config.keys`); `validate` returns plain dicts keyed by field name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Error:
    """One problem, shaped like a pydantic error: location, kind and message."""

    loc: Loc
    type: str
    msg: str

    def get(self, key: str, default: Any = None) -> Any:  # read like pydantic's error dicts
        return getattr(self, key, default)


class Invalid(Exception):
    def __init__(self, errors: list[Error]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Str:
    """A string (never a number or a boolean), stripped; `check` may rewrite it or raise ValueError."""

    min_length: int = 0
    check: Callable[[str], str] | None = None


@dataclass(frozen=True, slots=True)
class Int:
    """A whole number (never a boolean); `before` may turn other input into one first."""

    ge: int | None = None
    le: int | None = None
    before: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Any  # a schema


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a mapping: its schema, whether it is required, its default, and null allowed."""

    schema: Any
    required: bool = False
    default: Any = None
    nullable: bool = True
    alias: str | None = None  # the key as written in the file, when it differs from the field name


@dataclass(frozen=True)
class Obj:
    """A mapping with known keys only (an unknown key is an error)."""

    name: str
    keys: Mapping[str, Key]

    def written_keys(self) -> dict[str, Any]:
        """The keys as written in a file (aliases first) and the `Obj` each one holds, if any."""
        return {key.alias or name: _obj_in(key.schema) for name, key in self.keys.items()}


def _obj_in(schema: Any) -> Obj | None:
    if isinstance(schema, Obj):
        return schema
    if isinstance(schema, ListOf):
        return _obj_in(schema.item)
    return None


def validate(schema: Obj, value: Any) -> dict[str, Any]:
    """`value` checked against `schema`; raises `Invalid` with every problem found."""
    errors: list[Error] = []
    result = _check(schema, value, (), errors)
    if errors:
        raise Invalid(errors)
    assert isinstance(result, dict)
    return result


def _check(schema: Any, value: Any, loc: Loc, errors: list[Error]) -> Any:
    if isinstance(schema, Str):
        return _check_str(schema, value, loc, errors)
    if isinstance(schema, Int):
        return _check_int(schema, value, loc, errors)
    if isinstance(schema, ListOf):
        if not isinstance(value, list | tuple | set | frozenset):
            errors.append(Error(loc, "list_type", "Input should be a valid list"))
            return None
        return [_check(schema.item, item, (*loc, i), errors) for i, item in enumerate(value)]
    assert isinstance(schema, Obj)
    return _check_obj(schema, value, loc, errors)


def _check_str(schema: Str, value: Any, loc: Loc, errors: list[Error]) -> str | None:
    if not isinstance(value, str):
        errors.append(Error(loc, "string_type", "Input should be a valid string"))
        return None
    text: str = value.strip()
    if len(text) < schema.min_length:
        chars = "character" if schema.min_length == 1 else "characters"
        errors.append(
            Error(loc, "string_too_short", f"String should have at least {schema.min_length} {chars}")
        )
        return None
    if schema.check is not None:
        try:
            return schema.check(text)
        except ValueError as exc:
            errors.append(Error(loc, "value_error", f"Value error, {exc}"))
            return None
    return text


def _check_int(schema: Int, value: Any, loc: Loc, errors: list[Error]) -> int | None:
    if schema.before is not None:
        value = schema.before(value)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(Error(loc, "int_type", "Input should be a valid integer"))
        return None
    if schema.ge is not None and value < schema.ge:
        errors.append(
            Error(loc, "greater_than_equal", f"Input should be greater than or equal to {schema.ge}")
        )
        return None
    if schema.le is not None and value > schema.le:
        errors.append(Error(loc, "less_than_equal", f"Input should be less than or equal to {schema.le}"))
        return None
    return value


def _check_obj(schema: Obj, value: Any, loc: Loc, errors: list[Error]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.append(
            Error(loc, "model_type", f"Input should be a valid dictionary or instance of {schema.name}")
        )
        return None
    out: dict[str, Any] = {}
    used: set[Any] = set()
    for name, key in schema.keys.items():
        written = key.alias or name
        if written in value:
            used.add(written)
        elif name in value:
            written = name
            used.add(name)
        else:
            if key.required:
                errors.append(Error((*loc, written), "missing", "Field required"))
            out[name] = key.default
            continue
        item = value[written]
        out[name] = (
            None if item is None and key.nullable else _check(key.schema, item, (*loc, written), errors)
        )
    for written in value:
        if not isinstance(written, str):
            errors.append(Error((*loc, written), "invalid_key", "Keys should be strings"))
        elif written not in used:  # `base_model` beside `base-model` too: one of them is extra
            errors.append(Error((*loc, written), "extra_forbidden", "Extra inputs are not permitted"))
    return out
