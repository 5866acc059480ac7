"""What an answer says about how generation ended: finish_reason, completion tokens, an SSE error (pure).

Read from a whole JSON answer, or from a server-sent event stream chunk by chunk however the
upstream splits it (lines are re-assembled). Only events that can carry one of these are
decoded: one regular-expression search per chunk skips the rest, so relaying stays cheap.
"""

from __future__ import annotations

import re
from typing import Any

from lora_syncer.proxy.rewrite import loads

# An event worth decoding: a finish_reason with a value, a usage object, or an error.
_INTERESTING = re.compile(
    rb'"finish_reason":\s*"|"usage":\s*\{|"error"|"object":\s*"error"|^event:\s*error', re.M
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
        if _INTERESTING.search(raw):
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
        if _INTERESTING.search(complete):
            for line in complete.splitlines():
                self._line(line)

    def _line(self, line: bytes) -> None:
        if line.startswith(b"event:"):
            if line[6:].strip() == b"error":
                self.error = True
        elif line.startswith(b"data:") and _INTERESTING.search(line):
            self._take(line[5:])

    def _take(self, payload: bytes) -> None:
        try:
            obj = loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj or obj.get("object") == "error":
            self.error = True
            return
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                reason = choice.get("finish_reason") if isinstance(choice, dict) else None
                if isinstance(reason, str):
                    self.finish_reason = reason
        usage: Any = obj.get("usage")
        if isinstance(usage, dict):
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                self.completion_tokens = tokens
