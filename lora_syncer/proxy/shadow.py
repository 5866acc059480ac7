"""Shadow traffic: copies of a share of an alias's requests sent to a rollout's canary, answers discarded.

When the route of an alias carries a `Mirror(target, percent)` (a rollout's `mirror` step), the
proxy hands each request to `ShadowSender.offer` once its body is known. Exactly `percent` % of
the requests are selected (`MirrorCounter`: an even, deterministic spread, no dice). A selected
request is copied with `model` set to the mirror target, the client's `stream` kept, and sent in
a task of its own to the same pool, so the client's answer never waits for it. The copy's answer
is read to the end (so the server does the whole inference, as it would for real traffic) and
thrown away.

Copies have their own budget (`--shadow-concurrency`): a selected request arriving while the
budget is full is dropped and counted. A copy is cancelled when its client goes away before its
own answer is complete, and every copy is cancelled when the proxy drains. Copies never touch the
pool breakers, the alias's metrics or the exchange observers of real traffic: they are counted
only in `lora_syncer_proxy_shadow_requests_total{alias,target,outcome}` and
`lora_syncer_proxy_shadow_active`, and reported to `ShadowSender.observers` (a rollout's
analysis may read them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from lora_syncer.proxy.answer import AnswerFacts
from lora_syncer.proxy.headers import RawHeaders
from lora_syncer.proxy.transport import TRANSPORT_ERRORS, Transport, classify

log: Final = structlog.get_logger("lora_syncer.proxy.shadow")

Outcome = Literal["ok", "error", "dropped", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "error", "dropped", "cancelled")
# Marks a copy to the model server (and in its logs); vLLM ignores unknown headers.
SHADOW_HEADER: Final = "x-lora-syncer-shadow"
_SCALE: Final = 1_000_000  # percent kept in millionths of the whole, so the counting is exact
_JSON_FACTS_LIMIT: Final = 1024 * 1024  # a copy's JSON answer is kept only this far for its facts


class MirrorCounter:
    """Selects exactly `percent` % of calls, evenly spread (pure): 50 takes every 2nd, 10 every 10th."""

    __slots__ = ("_acc", "_step")

    def __init__(self, percent: float) -> None:
        self._step = max(0, min(_SCALE, round(percent * _SCALE / 100)))
        self._acc = 0

    def take(self) -> bool:
        self._acc += self._step
        if self._acc >= _SCALE:
            self._acc -= _SCALE
            return True
        return False


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """How one copy ended. `ttft`: seconds to the first body bytes (None if none came)."""

    alias: str
    target: str
    outcome: Outcome
    status: int = 0  # 0: no answer
    ttft: float | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    error: str | None = None  # why it counts as an error (http_5xx, sse_error, connect, ...)


ShadowObserver = Callable[[ShadowResult], None]


class ShadowMetrics:
    """The shadow counters, apart from the real traffic's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lora_syncer_proxy_shadow_requests",
            "Shadow copies (a rollout's mirror step) by alias, mirror target and outcome "
            "(ok, error, dropped over --shadow-concurrency, cancelled).",
            ["alias", "target", "outcome"],
            registry=registry,
        )
        self.active_count = 0
        self.active = Gauge(
            "lora_syncer_proxy_shadow_active", "Shadow copies in flight right now.", registry=registry
        )
        self.active.set_function(lambda: self.active_count)

    def count(self, alias: str, target: str, outcome: Outcome) -> None:
        self.requests.labels(alias, target, outcome).inc()


@dataclass(frozen=True, slots=True)
class ShadowCopy:
    """What to send: the request as the model server should get it."""

    alias: str
    target: str
    base: str
    method: str
    path: str
    headers: RawHeaders
    body: bytes


class ShadowSender:
    """Selects, budgets, sends and accounts for shadow copies."""

    def __init__(self, transport: Transport, metrics: ShadowMetrics, budget: int) -> None:
        self.transport = transport
        self.metrics = metrics
        self.budget = budget
        self.observers: list[ShadowObserver] = []
        self._counters: dict[tuple[str, str, float], MirrorCounter] = {}
        self._by_owner: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    @property
    def in_flight(self) -> int:
        return self.metrics.active_count

    def selects(self, alias: str, target: str, percent: float) -> bool:
        """Whether this request of `alias` is one of the `percent` % copied (advances the counter)."""
        key = (alias, target, percent)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = MirrorCounter(percent)
        return counter.take()

    def send(self, copy: ShadowCopy, owner: object) -> bool:
        """Start `copy` in the background, tied to `owner` (the client's exchange); False when dropped."""
        metrics = self.metrics
        refused: Outcome | None = None
        if self._draining or not self.transport.is_open:
            refused = "cancelled"  # the proxy is going away: no new copies
        elif metrics.active_count >= self.budget:
            refused = "dropped"
        if refused is not None:
            metrics.count(copy.alias, copy.target, refused)
            self._notify(ShadowResult(copy.alias, copy.target, refused))
            return False
        metrics.active_count += 1
        task = asyncio.get_running_loop().create_task(self._run(copy), name="shadow-copy")
        self._tasks.add(task)
        key = id(owner)
        self._by_owner[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._by_owner.get(key) is t:
                del self._by_owner[key]

        task.add_done_callback(done)
        return True

    def settle(self, owner: object, client_left: bool) -> None:
        """The owner's exchange ended: a client that left takes its copy with it; else the copy runs on."""
        if not self._by_owner:
            return
        task = self._by_owner.pop(id(owner), None)
        if task is not None and client_left:
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every copy in flight (the proxy drains) and wait until they have ended; start no more."""
        self._draining = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, copy: ShadowCopy) -> None:
        outcome: Outcome = "error"
        status = 0
        error: str | None = None
        facts = AnswerFacts()
        started = time.perf_counter()
        first: float | None = None
        try:
            try:
                answer = await self.transport.send(copy.method, copy.base, copy.path, copy.headers, copy.body)
            except TRANSPORT_ERRORS as exc:
                error = classify(exc).kind
                return
            try:
                status = answer.status
                ctype = answer.content_type
                sse = ctype.startswith("text/event-stream")
                kept: list[bytes] = []
                size = 0
                # Read to the end: the server does the whole inference, as for the real request.
                while chunk := await answer.readany():
                    if first is None:
                        first = time.perf_counter()
                    if sse:
                        facts.feed_sse(chunk)
                    elif size < _JSON_FACTS_LIMIT:
                        kept.append(chunk)
                        size += len(chunk)
                if not sse and "json" in ctype and size < _JSON_FACTS_LIMIT:
                    facts.read_json(b"".join(kept))
            except TRANSPORT_ERRORS as exc:
                error = "broken_stream" if classify(exc).kind != "timeout" else "timeout"
                return
            finally:
                answer.release()
            if status >= 400:
                error = f"http_{status // 100}xx"
            elif facts.error:
                error = "sse_error"
            else:
                outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.active_count -= 1
            self.metrics.count(copy.alias, copy.target, outcome)
            if error is not None:
                log.debug(
                    "shadow copy failed", alias=copy.alias, target=copy.target, error=error, status=status
                )
            self._notify(
                ShadowResult(
                    copy.alias,
                    copy.target,
                    outcome,
                    status,
                    None if first is None else first - started,
                    facts.finish_reason,
                    facts.completion_tokens,
                    error,
                )
            )

    def _notify(self, result: ShadowResult) -> None:
        for observe in self.observers:
            try:
                observe(result)
            except Exception:  # an observer's bug must not break the copies
                log.exception("shadow observer failed")
