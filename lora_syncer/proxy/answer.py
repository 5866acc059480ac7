"""What an answer says about how generation ended: finish_reason, completion tokens, an SSE error (pure).

Read from a whole JSON answer, or from a server-sent event stream chunk by chunk however the
upstream splits it (lines are re-assembled). Found with regular expressions, not by decoding
JSON, so relaying stays cheap. Text inside JSON strings cannot match: its quotes are escaped.
"""

from __future__ import annotations

import re
from typing import Final

_FINISH: Final = re.compile(rb'"finish_reason":\s*"([^"\\]*)"')
_TOKENS: Final = re.compile(rb'"completion_tokens":\s*(\d{1,18})')
# An error event: `event: error`, or a data line whose object is an error (both shapes vLLM has used).
_ERROR: Final = re.compile(
    rb'^event:\s*error\s*$|^data:\s*\{\s*"error"\s*:|^data:\s*\{.*"object":\s*"error"', re.M
)


class AnswerFacts:
    """finish_reason, completion tokens and whether an error event was seen, as the answer goes by."""

    __slots__ = ("_pending", "completion_tokens", "error", "finish_reason")

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None
        self.error = False
        self._pending = b""

    def read_json(self, raw: bytes) -> None:
        """A whole JSON answer."""
        self._take(raw)

    def feed_sse(self, chunk: bytes) -> None:
        """The next chunk of an event stream."""
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return
        self._pending = data[cut + 1 :]
        complete = data[: cut + 1] if self._pending else data
        self._take(complete)
        if not self.error and complete.find(b"error") >= 0 and _ERROR.search(complete):
            self.error = True

    def _take(self, text: bytes) -> None:
        # The last value is wanted: read it right after the last occurrence of the key when it is
        # written plainly (no regular expression: this runs on every answer), and scan the whole
        # text only when that one is not (e.g. `null`, escapes, unusual spacing).
        at = text.rfind(b'"finish_reason"')
        if at >= 0:
            reason = _string_after(text, at + 15)
            if reason is not None:
                self.finish_reason = reason.decode("utf-8", "replace")
            else:
                reasons = _FINISH.findall(text)
                if reasons:
                    self.finish_reason = reasons[-1].decode("utf-8", "replace")
        at = text.rfind(b'"completion_tokens"')
        if at >= 0:
            count = _int_after(text, at + 19)
            if count is not None:
                self.completion_tokens = count
            else:
                tokens = _TOKENS.findall(text)
                if tokens:
                    self.completion_tokens = int(tokens[-1])


# Index loops, not bytes methods, below: on CPython 3.11 every `bytes.find`/`lstrip` call parses its
# arguments from a tuple, which costs more than scanning the few bytes a value has (compiled build).


def _string_after(text: bytes, i: int) -> bytes | None:
    """The string value at `i` (just after a key) when written `:"v"` or `: "v"` without escapes, else None."""
    if text[i : i + 2] == b':"':
        start = i + 2
    elif text[i : i + 3] == b': "':
        start = i + 3
    else:
        return None
    end = start
    size = len(text)
    while end < size:
        byte = text[end]
        if byte == 34:  # "
            return text[start:end]
        if byte == 92:  # \ : an escape, read by the regular expression instead
            return None
        end += 1
    return None


def _int_after(text: bytes, i: int) -> int | None:
    """The integer at `i` (just after a key) when written `:N` or `: N` with 1 to 18 digits, else None."""
    if text[i : i + 1] != b":":
        return None
    start = i + 2 if text[i + 1 : i + 2] == b" " else i + 1
    end = min(len(text), start + 19)
    k = start
    value = 0
    while k < end:
        byte = text[k]
        if byte < 48 or byte > 57:
            break
        value = value * 10 + byte - 48
        k += 1
    return value if 1 <= k - start <= 18 else None
