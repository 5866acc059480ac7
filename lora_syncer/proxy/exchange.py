"""One proxied request from arrival to last byte: what was asked, where it went, how it ended.

The handler fills an `Exchange` as the request moves on (body, route, pool, target, timings,
outcome) and, at the end, hands it to every observer (`ExchangeObserver`): the Prometheus
metrics today, per-alias and per-target telemetry (canary rollouts) next. Observers get
everything from this one object, so the forward path needs no extra parameters for them.

Error classes (`ErrorClass`) are the upstream's failures only: a 5xx answer, a failed
connection or a timeout before the answer, an answer broken off mid-stream, and an SSE `error`
event inside a 200 stream. 4xx answers, refusals by the proxy and clients that went away are
not upstream errors (they have their own fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

from lora_syncer.proxy.intake import IntakeRequest

# The `target` label of an exchange that a rule matched (or the proxy refused) before any target was chosen.
NO_TARGET: Final = "(none)"

ErrorClass = Literal["upstream_5xx", "connect", "timeout", "broken_stream", "sse_error"]


class Exchange:
    """The state of one request; times are `time.perf_counter()` seconds.

    A plain class, not a dataclass: one is made per request, and mypyc compiles a plain class's
    `__init__` (a dataclass's is generated at import time, so it stays interpreted).
    """

    __slots__ = (
        "alias",
        "body",
        "client_closed",
        "completion_tokens",
        "ended",
        "error",
        "finish_reason",
        "first_chunk",
        "head_sent",
        "model",
        "model_required",
        "obj",
        "pool",
        "refused",
        "request",
        "rule",
        "started",
        "status",
        "sticky_key",
        "target",
        "tried",
    )

    def __init__(self, request: IntakeRequest, started: float) -> None:
        self.request = request
        self.started = started
        self.body = b""
        # The JSON object of the body when it may be rewritten, its `model`, and whether one is required.
        self.obj: dict[str, Any] | None = None
        self.model: str | None = None
        self.model_required = False
        self.sticky_key: str | None = None
        self.alias = ""  # the rule's client-facing name ("*" for the catch-all), "" when no rule matched
        self.rule = ""  # the matching rule's id
        self.target: str | None = None  # the model the request was rewritten to (None: not rewritten)
        self.pool = ""  # the pool that carried the request last
        self.tried: tuple[str, ...] = ()  # pools that could not be reached, in order
        # Outcome.
        self.status = 0  # the status the client got (499: it went away first)
        self.refused: str | None = None  # the proxy answered itself, for this reason (admin_route, ...)
        self.error: ErrorClass | None = None
        self.client_closed = False
        # Timings.
        self.head_sent: float | None = None  # answer headers sent to the client
        self.first_chunk: float | None = None  # first body bytes from the upstream (time to first token)
        self.ended: float | None = None
        # From the answer, when it says.
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None

    @property
    def target_label(self) -> str:
        """`target` for metrics: the target, `(none)` when a rule matched but none was chosen, else ""."""
        if self.target is not None:
            return self.target
        return NO_TARGET if self.alias or self.refused is not None else ""

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


ExchangeObserver = Callable[[Exchange], None]
