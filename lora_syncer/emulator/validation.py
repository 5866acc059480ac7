"""Request-body checks worded like vLLM's FastAPI/pydantic validation errors (400 "Bad Request").

Only the fields the emulator reads are checked; like vLLM, unknown fields are ignored. Fields are
listed in the order vLLM's request models declare them, so several problems are reported in
vLLM's order. A field that is optional is not necessarily nullable: vLLM declares
`load_inplace: bool = False`, so `"load_inplace": null` is a 400 there, while
`max_tokens: int | None` takes null.

`before` checks mirror vLLM's model validators that run ahead of the field checks and answer
400 "BadRequestError" (not "Bad Request").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from lora_syncer.emulator import _json
from lora_syncer.emulator.errors import ApiError, bad_request, validation_error

Kind = Literal["str", "bool", "int", "list", "prompt", "any"]
FieldSpec = tuple[str, Kind, bool, bool]  # (name, kind, required, nullable)
BeforeCheck = Callable[[dict[str, Any]], ApiError | None]

LOAD_FIELDS: tuple[FieldSpec, ...] = (
    ("lora_name", "str", True, False),
    ("lora_path", "str", True, False),
    ("load_inplace", "bool", False, False),
    ("is_3d_lora_weight", "bool", False, False),
)
UNLOAD_FIELDS: tuple[FieldSpec, ...] = (
    ("lora_name", "str", True, False),
    ("lora_int_id", "int", False, True),
)
CHAT_FIELDS: tuple[FieldSpec, ...] = (
    ("messages", "list", True, False),
    ("model", "str", False, True),
    ("max_tokens", "int", False, True),
    ("max_completion_tokens", "int", False, True),
    ("n", "int", False, True),
    ("stream", "bool", False, True),
)
COMPLETION_FIELDS: tuple[FieldSpec, ...] = (
    ("model", "str", False, True),
    ("prompt", "prompt", False, True),
    ("max_tokens", "int", False, True),
    ("n", "int", False, False),
    ("stream", "bool", False, True),
)
EMBEDDING_FIELDS: tuple[FieldSpec, ...] = (("model", "str", False, True), ("input", "any", True, False))

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


_INT_TEXT = re.compile(r"\s*[+-]?\d+(?:\.0*)?\s*")
_STRING_TYPE = "Input should be a valid string"
_LIST_TYPE = "Input should be a valid list"


def _coerce(kind: Kind, value: Any) -> tuple[bool, Any, str, str]:
    """(ok, coerced value, pydantic error type, pydantic message) for one field value (lax mode)."""
    if kind == "any":
        return True, value, "", ""
    if kind == "str":
        return isinstance(value, str), value, "string_type", _STRING_TYPE
    if kind == "list":
        return isinstance(value, list), value, "list_type", _LIST_TYPE
    if kind == "bool":
        if isinstance(value, bool):
            return True, value, "", ""
        if isinstance(value, int | float) and value in (0, 1):
            return True, bool(value), "", ""
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in _TRUE or lowered in _FALSE:
                return True, lowered in _TRUE, "", ""
        if isinstance(value, str | int):
            return False, value, "bool_parsing", "Input should be a valid boolean, unable to interpret input"
        return False, value, "bool_type", "Input should be a valid boolean"
    # int: pydantic's lax mode also takes true/false, 3.0 and "3" / " 3 " / "3.0"
    if isinstance(value, int):
        return True, int(value), "", ""
    if isinstance(value, float):
        if value.is_integer():
            return True, int(value), "", ""
        msg = "Input should be a valid integer, got a number with a fractional part"
        return False, value, "int_from_float", msg
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            return True, int(float(value)), "", ""
        msg = "Input should be a valid integer, unable to parse string as an integer"
        return False, value, "int_parsing", msg
    return False, value, "int_type", "Input should be a valid integer"


def _prompt_problems(loc: str, value: Any) -> list[str]:
    """vLLM's `prompt` is a union (token ids, lists of them, str, list of str): one error per member.

    Only a value that is neither a string nor a list is checked; list items are not.
    """
    if value is None or isinstance(value, str | list):
        return []
    return [
        _problem("list_type", loc, _LIST_TYPE, value),
        _problem("list_type", loc, _LIST_TYPE, value),
        _problem("string_type", loc, _STRING_TYPE, value),
        _problem("list_type", loc, _LIST_TYPE, value),
    ]


def chat_before(body: dict[str, Any]) -> ApiError | None:
    """vLLM's chat request validators iterate `messages` before any field check: null fails there."""
    if "messages" in body and body["messages"] is None:
        return bad_request("'NoneType' object is not iterable")
    return None


def completion_before(body: dict[str, Any]) -> ApiError | None:
    """vLLM refuses a completion without a prompt (or prompt embeddings) before any field check."""
    prompt = body.get("prompt")
    embeds = body.get("prompt_embeds")
    if (prompt is None or prompt == "") and (embeds is None or embeds == []):
        return bad_request("Either prompt or prompt_embeds must be provided and non-empty.", param="prompt")
    return None


def parse_body(
    content_type: str,
    raw: bytes,
    fields: tuple[FieldSpec, ...],
    before: BeforeCheck | None = None,
) -> dict[str, Any] | ApiError:
    """Decode a JSON request body and check `fields`; an `ApiError` worded like vLLM's on failure.

    `before` runs on the decoded object ahead of the field checks, as vLLM's "before" validators do.
    """
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
    if before is not None:
        early = before(body)
        if early is not None:
            return early
    problems: list[str] = []
    first_loc: str | None = None
    for name, kind, required, nullable in fields:
        if name not in body:
            if required:
                loc = f"body.{name}"
                problems.append(_problem("missing", loc, "Field required", body))
                first_loc = first_loc or loc
            continue
        value = body[name]
        if value is None and nullable:
            continue
        if kind == "prompt":
            found = _prompt_problems(f"body.{name}", value)
            if found:
                problems.extend(found)
                first_loc = first_loc or f"body.{name}"
            continue
        ok, coerced, err_type, msg = _coerce(kind, value)
        if not ok:
            loc = f"body.{name}"
            problems.append(_problem(err_type, loc, msg, value))
            first_loc = first_loc or loc
        else:
            body[name] = coerced
    if problems:
        return validation_error(problems, first_loc)
    return body
