"""Request-body checks worded like vLLM's FastAPI/pydantic validation errors (400 "Bad Request").

Only the fields the emulator reads are checked; like vLLM, unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from lora_syncer.emulator import _json
from lora_syncer.emulator.errors import ApiError, validation_error

Kind = Literal["str", "bool", "int", "list", "any"]
FieldSpec = tuple[str, Kind, bool]  # (name, kind, required)

LOAD_FIELDS: tuple[FieldSpec, ...] = (
    ("lora_name", "str", True),
    ("lora_path", "str", True),
    ("load_inplace", "bool", False),
    ("is_3d_lora_weight", "bool", False),
)
UNLOAD_FIELDS: tuple[FieldSpec, ...] = (("lora_name", "str", True),)
CHAT_FIELDS: tuple[FieldSpec, ...] = (
    ("messages", "list", True),
    ("model", "str", False),
    ("stream", "bool", False),
    ("max_tokens", "int", False),
    ("max_completion_tokens", "int", False),
)
COMPLETION_FIELDS: tuple[FieldSpec, ...] = (
    ("model", "str", False),
    ("prompt", "any", False),
    ("stream", "bool", False),
    ("max_tokens", "int", False),
)
EMBEDDING_FIELDS: tuple[FieldSpec, ...] = (("model", "str", False), ("input", "any", True))

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})
_MAX_INPUT_CHARS = 200


def summarize_input(value: object) -> str:
    """How vLLM shows an offending input inside a validation message (bounded in size)."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_INPUT_CHARS else value[:_MAX_INPUT_CHARS] + "...[truncated]"
    if isinstance(value, list | tuple | dict | set):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


def _problem(kind: str, loc: str, msg: str, value: object, ctx: dict[str, str] | None = None) -> str:
    err: dict[str, object] = {"type": kind, "loc": loc, "msg": msg, "input": summarize_input(value)}
    if ctx is not None:
        err["ctx"] = ctx
    return str(err)


def _coerce(kind: Kind, value: Any) -> tuple[bool, Any, str, str]:
    """(ok, coerced value, pydantic error type, pydantic message) for one field value."""
    if kind == "any":
        return True, value, "", ""
    if kind == "str":
        return isinstance(value, str), value, "string_type", "Input should be a valid string"
    if kind == "list":
        return isinstance(value, list), value, "list_type", "Input should be a valid list"
    if kind == "bool":
        if isinstance(value, bool):
            return True, value, "", ""
        if isinstance(value, int) and value in (0, 1):
            return True, bool(value), "", ""
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in _TRUE or lowered in _FALSE:
                return True, lowered in _TRUE, "", ""
            return False, value, "bool_parsing", "Input should be a valid boolean, unable to interpret input"
        return False, value, "bool_type", "Input should be a valid boolean"
    # int
    if isinstance(value, int):
        return True, int(value), "", ""
    if isinstance(value, float) and value.is_integer():
        return True, int(value), "", ""
    return False, value, "int_type", "Input should be a valid integer"


def parse_body(content_type: str, raw: bytes, fields: tuple[FieldSpec, ...]) -> dict[str, Any] | ApiError:
    """Decode a JSON request body and check `fields`; an `ApiError` worded like vLLM's on failure."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return validation_error(["Unsupported Media Type: Only 'application/json' is allowed"], None)
    try:
        body = _json.loads(raw)
    except ValueError:
        reason = _json.decode_error_reason(raw)
        err = _problem("json_invalid", "body.0", "JSON decode error", {}, {"error": reason})
        return validation_error([err], "body.0")
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return validation_error([_problem("model_attributes_type", "body", msg, body)], "body")
    problems: list[str] = []
    first_loc: str | None = None
    for name, kind, required in fields:
        loc = f"body.{name}"
        if name not in body:
            if required:
                problems.append(_problem("missing", loc, "Field required", body))
                first_loc = first_loc or loc
            continue
        value = body[name]
        if value is None and not required:
            continue
        ok, coerced, err_type, msg = _coerce(kind, value)
        if not ok:
            problems.append(_problem(err_type, loc, msg, value))
            first_loc = first_loc or loc
        else:
            body[name] = coerced
    if problems:
        return validation_error(problems, first_loc)
    return body
