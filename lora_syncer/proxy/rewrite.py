"""Body transformations of the proxy (pure: bytes in, bytes out).

- Requests: set the `model` value of a JSON body and nothing else (keys, order and other
  values are kept; whitespace is not).
- Responses, with `--response-model=requested`: put the client-facing name back into the
  `model` field of a JSON answer and of every server-sent event, however the upstream's
  chunks split the stream (events are re-assembled line by line, never byte by byte).
- `GET /v1/models`: add one entry per alias.

orjson is used when installed; it turns integers wider than 64 bits into floats, so bodies
holding such numbers go through the standard library instead.
"""

from __future__ import annotations

import json
from typing import Any, Final


def _fast_json() -> Any:
    """orjson (the `fast` extra), or None."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - exercised only without the extra
        return None
    return orjson


_orjson: Final[Any] = _fast_json()  # Final: the compiled build reads it without a dict lookup

# A run of 19 digits or more (a possibly wider-than-64-bit integer), found as "0" * 19 once every
# digit is mapped to 0: two C passes, several times faster than a regular expression on every body.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_WIDE_RUN: Final = b"0" * 19
_MODEL_KEY: Final = b'"model"'


def _may_hold_wide_int(raw: bytes) -> bool:
    # `find`, not `in`, on bytes here and below: CPython 3.11's bytes `in` first tries the needle
    # as an integer and makes (and drops) a TypeError, which costs more than the search.
    return raw.translate(_DIGITS_TO_ZERO).find(_WIDE_RUN) >= 0


def loads(raw: bytes) -> Any:
    """Parse JSON; raises ValueError when `raw` is not JSON."""
    if _orjson is not None and not _may_hold_wide_int(raw):
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # let the stdlib decide (and word the error): it also accepts NaN/Infinity like vLLM
    try:
        return json.loads(raw)
    except RecursionError:
        # Nesting deeper than the interpreter's stack: not a request any model server takes.
        raise ValueError("JSON nested too deeply") from None


def dumps(obj: Any) -> bytes:
    """Serialize compactly as UTF-8."""
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(obj)
            return out
        except TypeError:  # e.g. an integer wider than 64 bits
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def with_model(body: dict[str, Any], model: str) -> bytes:
    """`body` serialized with its `model` value replaced (the key keeps its position)."""
    body["model"] = model
    return dumps(body)


def json_with_model(raw: bytes, served: str, requested: str) -> bytes:
    """A JSON answer with `"model": served` rewritten to `requested`; anything else unchanged."""
    if raw.find(_MODEL_KEY) < 0:
        return raw
    try:
        obj = loads(raw)
    except ValueError:
        return raw
    if isinstance(obj, dict) and obj.get("model") == served:
        obj["model"] = requested
        return dumps(obj)
    return raw


class SSEModelRewriter:
    """Rewrites `model` in every `data:` line of a server-sent event stream.

    `feed` returns the complete lines seen so far (rewritten) and keeps a partial line until
    its end arrives, so a field split across chunks is still found. Lines without `"model"`
    are passed through byte for byte.
    """

    __slots__ = ("_pending", "_requested", "_served")

    def __init__(self, served: str, requested: str) -> None:
        self._served = served
        self._requested = requested
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return b""
        self._pending = data[cut + 1 :]
        complete = data[: cut + 1]
        if complete.find(_MODEL_KEY) < 0:
            return complete
        return b"".join(self._line(line) for line in complete.splitlines(keepends=True))

    def flush(self) -> bytes:
        """Whatever is left at the end of the stream (a last line without a newline)."""
        rest, self._pending = self._pending, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:") or line.find(_MODEL_KEY) < 0:
            return line
        body = line.rstrip(b"\r\n")
        eol = line[len(body) :]
        payload = body[5:]
        if payload.startswith(b" "):
            payload = payload[1:]
        rewritten = json_with_model(payload, self._served, self._requested)
        if rewritten is payload:
            return line
        return b"data: " + rewritten + eol


def models_with_aliases(raw: bytes, aliases: dict[str, str], created: int) -> bytes:
    """`GET /v1/models` answer plus one entry per alias (alias -> first target) not already listed."""
    try:
        obj = loads(raw)
    except ValueError:
        return raw
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return raw
    data: list[Any] = obj["data"]
    listed = {m.get("id") for m in data if isinstance(m, dict)}
    owner = next((m.get("owned_by") for m in data if isinstance(m, dict) and m.get("owned_by")), "vllm")
    for alias, target in aliases.items():
        if alias in listed:
            continue
        data.append(
            {
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": owner,
                "root": target,
                "parent": None,
                "permission": [],
            }
        )
    return dumps(obj)
