"""JSON encoding for the emulator: orjson when installed (the `fast` extra), the stdlib otherwise."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    _orjson = None  # type: ignore[assignment]


def dumps(obj: Any) -> bytes:
    """Serialise `obj` to compact UTF-8 JSON bytes."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises `ValueError` (stdlib `json.JSONDecodeError` or orjson's) on bad input."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


def decode_error_reason(data: bytes) -> str:
    """The stdlib's wording of why `data` is not JSON (vLLM reports pydantic's, which matches it)."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return exc.msg
    except (UnicodeDecodeError, ValueError) as exc:
        return str(exc)
    return "Invalid JSON"
