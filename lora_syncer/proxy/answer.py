"""What an answer says about how generation ended: finish_reason, completion tokens, an SSE error (pure).

Read from a whole JSON answer, or from a server-sent event stream chunk by chunk however the
upstream splits it (lines are re-assembled). Found with regular expressions, not by decoding
JSON, so relaying stays cheap. Text inside JSON strings cannot match: its quotes are escaped.
"""

from __future__ import annotations

import re

_FINISH = re.compile(rb'"finish_reason":\s*"([^"\\]*)"')
_TOKENS = re.compile(rb'"completion_tokens":\s*(\d{1,18})')
# An error event: `event: error`, or a data line whose object is an error (both shapes vLLM has used).
_ERROR = re.compile(rb'^event:\s*error\s*$|^data:\s*\{\s*"error"\s*:|^data:\s*\{.*"object":\s*"error"', re.M)


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
        if not self.error and b"error" in complete and _ERROR.search(complete):
            self.error = True

    def _take(self, text: bytes) -> None:
        # The last value is wanted: try the last occurrence of the key first (one short match),
        # and scan the whole text only when that one has no value of the kind (e.g. `null`).
        at = text.rfind(b'"finish_reason"')
        if at >= 0:
            found = _FINISH.match(text, at)
            if found is not None:
                self.finish_reason = found.group(1).decode("utf-8", "replace")
            else:
                reasons = _FINISH.findall(text)
                if reasons:
                    self.finish_reason = reasons[-1].decode("utf-8", "replace")
        at = text.rfind(b'"completion_tokens"')
        if at >= 0:
            found = _TOKENS.match(text, at)
            if found is not None:
                self.completion_tokens = int(found.group(1))
            else:
                tokens = _TOKENS.findall(text)
                if tokens:
                    self.completion_tokens = int(tokens[-1])
