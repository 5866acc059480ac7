"""Send one exchange to one pool and relay the answer to the client, chunk by chunk.

Failures before any answer become `Unreachable` (another pool may serve the request) or
`Refused` (a read timeout: the upstream may be working on it); each is reported to the pool's
breaker. Once the answer's head is in, it is relayed: small answers and answers that must be
rewritten whole in one write, the rest streamed as it arrives. An answer broken off mid-stream
closes the client connection so it is seen as cut short.

The fast lane (`lora_syncer.proxy.lane`) uses the same pieces without awaiting: `answered`,
`plan_relay` and `send_whole`; what it cannot finish in callbacks it hands to `forward` with the
answer (or the failure) it already has as `sent`.
"""

from __future__ import annotations

import time
from typing import Final

import structlog

from lora_syncer.proxy.answer import AnswerFacts
from lora_syncer.proxy.exchange import Exchange
from lora_syncer.proxy.headers import HOP_BY_HOP, RawHeaders, end_to_end, header_lines
from lora_syncer.proxy.intake import IntakeRequest
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import POOL_HEADER, SERVED_MODEL_HEADER
from lora_syncer.proxy.pool_manager import PoolManager
from lora_syncer.proxy.poolset import UpstreamPool
from lora_syncer.proxy.refusal import Refused, Unreachable
from lora_syncer.proxy.rewrite import SSEModelRewriter, json_with_model, models_with_aliases
from lora_syncer.proxy.transport import (
    TRANSPORT_ERRORS,
    Transport,
    UpstreamAnswer,
    UpstreamFailure,
    classify,
)

log: Final = structlog.get_logger("lora_syncer.proxy")

# Answers up to this size with a known length are sent in one write instead of streamed.
_BUFFER_LIMIT: Final = 256 * 1024
# Upper bound for answers that must be read whole to be rewritten (JSON with response-model=requested).
_REWRITE_LIMIT: Final = 64 * 1024 * 1024
_TIMED_OUT: Final = "the model server did not answer in time"
# What is not passed on from a request: hop-by-hop fields and those the proxy sets itself.
_REQUEST_DROP: Final = HOP_BY_HOP | {b"expect", b"x-forwarded-for"}
# What is not passed on from an answer, by (served-model header set, pool header set): those are the proxy's.
_ANSWER_DROP: Final = {
    (served, pool): HOP_BY_HOP
    | ({SERVED_MODEL_HEADER.lower().encode()} if served else set())
    | ({POOL_HEADER.lower().encode()} if pool else set())
    for served in (False, True)
    for pool in (False, True)
}
_SERVED_LINE: Final = SERVED_MODEL_HEADER.encode() + b": "
_POOL_LINE: Final = POOL_HEADER.encode() + b": "


# What `forward` may be handed instead of sending: an answer whose head is in, or why the send failed.
Sent = UpstreamAnswer | BaseException | None


class RelayPlan:
    """How an answer is relayed: its headers for the client, and whether it is read whole first.

    A plain class (one per request): mypyc compiles it to a native one (see Exchange).
    """

    __slots__ = ("augment", "headers", "is_json", "is_sse", "rewrite_back", "whole")

    def __init__(
        self,
        headers: bytes,  # the answer's own header lines, as written to the client
        whole: bool,  # read whole, then sent in one write (small, or rewritten whole)
        is_sse: bool,
        is_json: bool,
        rewrite_back: bool,  # the answer's `model` is set back to the name the client asked for
        augment: bool,  # GET /v1/models: the aliases are added
    ) -> None:
        self.headers = headers
        self.whole = whole
        self.is_sse = is_sse
        self.is_json = is_json
        self.rewrite_back = rewrite_back
        self.augment = augment


class Forwarder:
    """The forward path: headers out, answer back."""

    def __init__(
        self, transport: Transport, pools: PoolManager, metrics: ProxyMetrics, *, rewrite_back: bool
    ) -> None:
        self.transport = transport
        self.pools = pools
        self.metrics = metrics
        self._rewrite_back = rewrite_back
        self._request_drop = _REQUEST_DROP | ({b"accept-encoding"} if rewrite_back else set())

    def upstream_headers(self, request: IntakeRequest) -> RawHeaders:
        """The request's headers as sent to the model server (also for shadow copies)."""
        # Expect: the body has been read whole already, no 100-continue handshake with the model server.
        # X-Forwarded-For is set anew below; Accept-Encoding too when the answer must be readable.
        headers = end_to_end(request.raw_headers, self._request_drop)
        prior = request.forwarded_for
        peer = request.remote
        if peer:
            mine = peer.encode("utf-8", "surrogateescape")
            headers.append((b"X-Forwarded-For", prior + b", " + mine if prior else mine))
        elif prior is not None:
            headers.append((b"X-Forwarded-For", prior))
        if self._rewrite_back:
            # The answer's `model` must be readable to be rewritten: ask for it uncompressed.
            headers.append((b"Accept-Encoding", b"identity"))
        return headers

    async def forward(
        self, ex: Exchange, pool: UpstreamPool, body: bytes, augment_models: bool, sent: Sent = None
    ) -> None:
        """Send `body` to `pool` for `ex` and relay the answer to the client. Raises Unreachable or Refused.

        `sent`: the fast lane sent it already; its answer (head in), or the exception its send raised.
        """
        transport = self.transport
        if sent is None and not transport.is_open:
            raise Refused(503, "the proxy is shutting down", "stopping")
        request = ex.request
        metrics = self.metrics
        metrics.forwarding += 1
        try:
            try:
                if sent is None:
                    answer = await transport.send(
                        request.method, pool.base, request.raw_path, self.upstream_headers(request), body
                    )
                elif isinstance(sent, BaseException):
                    raise sent
                else:
                    answer = sent
            except TRANSPORT_ERRORS as exc:
                raise self._failed_before_answer(ex, pool, classify(exc)) from None
            self.answered(ex, pool, answer.status)
            try:
                await self._relay(ex, pool, answer, augment_models)
            finally:
                answer.release()
        except TRANSPORT_ERRORS as exc:  # reading an answer that is relayed whole
            failure = classify(exc)
            ex.error = "broken_stream"
            if failure.kind == "timeout":
                metrics.upstream_errors.labels("timeout").inc()
                log.warning("model server timed out", upstream=pool.base, path=request.path)
                raise Refused(504, _TIMED_OUT, "upstream") from None
            metrics.upstream_errors.labels("disconnect").inc()
            log.warning("model server connection failed", upstream=pool.base, error=failure.detail)
            raise Refused(
                502, f"the model server closed the connection ({failure.detail})", "upstream"
            ) from None
        finally:
            metrics.forwarding -= 1

    def answered(self, ex: Exchange, pool: UpstreamPool, status: int) -> None:
        """Tell the pool's breaker about the answer's status (5xx: a failure, maybe the canary's)."""
        pools = self.pools
        if status >= 500:
            ex.error = "upstream_5xx"
            pools.answered(pool, status, canary=pools.is_canary(ex.alias, ex.target))
        elif pools.pools.health_tracked:
            pools.answered(pool, status)

    def _failed_before_answer(self, ex: Exchange, pool: UpstreamPool, failure: UpstreamFailure) -> Exception:
        """Count and log a failure before any answer; the exception to raise for it."""
        base = pool.base
        kind = failure.kind
        ex.error = "timeout" if kind in ("timeout", "connect_timeout") else "connect"
        if kind == "connect":
            self.metrics.upstream_errors.labels("connect").inc()
            self.pools.failed(pool, "connect", f"unreachable: {failure.detail}")
            log.warning("model server unreachable", upstream=base, pool=pool.name, error=failure.detail)
            return Unreachable(
                Refused(502, f"model server at {base} is unreachable: {failure.detail}", "upstream")
            )
        if kind == "connect_timeout" or kind == "timeout":
            self.metrics.upstream_errors.labels("timeout").inc()
            connecting = kind == "connect_timeout"
            self.pools.failed(pool, "connect" if connecting else "timeout", failure.detail)
            log.warning("model server timed out", upstream=base, pool=pool.name, path=ex.request.path)
            refused = Refused(504, _TIMED_OUT, "upstream")
            return Unreachable(refused) if connecting else refused
        self.metrics.upstream_errors.labels("disconnect").inc()
        self.pools.failed(pool, "disconnect", f"connection lost before an answer ({failure.detail})")
        log.warning("model server connection failed", upstream=base, pool=pool.name, error=failure.detail)
        return Unreachable(
            Refused(502, f"the model server closed the connection ({failure.detail})", "upstream")
        )

    def plan_relay(
        self, ex: Exchange, pool: UpstreamPool, answer: UpstreamAnswer, augment_models: bool
    ) -> RelayPlan:
        """How `answer` goes to the client (pure: nothing is read or sent)."""
        requested = ex.model
        served = ex.target if ex.target is not None else requested
        tracked = self.pools.pools.health_tracked
        headers = header_lines(end_to_end(answer.raw_headers, _ANSWER_DROP[served is not None, tracked]))
        if served is not None:
            headers += _SERVED_LINE + served.encode("utf-8", "surrogateescape") + b"\r\n"
        if tracked:
            headers += _POOL_LINE + pool.name.encode("utf-8", "surrogateescape") + b"\r\n"
        ctype = answer.content_type
        is_sse = ctype.startswith("text/event-stream")
        is_json = "json" in ctype
        rewrite_back = (
            self._rewrite_back and requested is not None and served is not None and served != requested
        )
        length = answer.content_length
        augment = augment_models and answer.status == 200
        whole = (
            augment
            or (rewrite_back and not is_sse and is_json)
            or (not is_sse and length is not None and length <= _BUFFER_LIMIT)
        )
        return RelayPlan(headers, whole, is_sse, is_json, rewrite_back, augment)

    @staticmethod
    def fits_lane(plan: RelayPlan, answer: UpstreamAnswer) -> bool:
        """Whether the fast lane can relay this answer: read whole, with a known length it may hold."""
        length = answer.content_length
        return plan.whole and length is not None and length <= _BUFFER_LIMIT

    def send_whole(
        self, ex: Exchange, pool: UpstreamPool, answer: UpstreamAnswer, plan: RelayPlan, data: bytes
    ) -> None:
        """Send an answer read whole, in one write (rewritten or augmented as `plan` says)."""
        ex.first_chunk = time.perf_counter()
        status = answer.status
        is_json = plan.is_json
        out = data
        if plan.augment:
            aliases = {r.alias: r.first_live or r.names[0] for r in pool.table.exact.values()}
            if aliases:
                out = models_with_aliases(data, aliases, int(time.time()))
        elif plan.rewrite_back and is_json:
            served, requested = ex.target, ex.model
            assert served is not None and requested is not None
            out = json_with_model(data, served, requested)
        ex.head_sent = time.perf_counter()
        ex.request.send(status, answer.reason, plan.headers, out, relayed=True)
        if status == 200 and is_json:  # after the write: the client need not wait for this
            facts = AnswerFacts()
            facts.read_json(data)
            ex.finish_reason, ex.completion_tokens = facts.finish_reason, facts.completion_tokens

    async def _relay(
        self, ex: Exchange, pool: UpstreamPool, answer: UpstreamAnswer, augment_models: bool
    ) -> None:
        plan = self.plan_relay(ex, pool, answer, augment_models)
        if plan.whole:
            self.send_whole(ex, pool, answer, plan, await self._read_whole(answer))
            return
        requested = ex.model
        served = ex.target if ex.target is not None else requested
        rewrite_back = plan.rewrite_back
        rewriter = (
            SSEModelRewriter(served, requested)
            if rewrite_back and plan.is_sse and served and requested
            else None
        )
        await self._stream(
            ex, answer, plan.headers, rewriter, rewrite_back, plan.is_sse and answer.status == 200
        )

    @staticmethod
    async def _read_whole(answer: UpstreamAnswer) -> bytes:
        """The whole answer body, refusing (502) one too large to hold for rewriting."""
        length = answer.content_length
        if length is not None and length <= _REWRITE_LIMIT:
            return await answer.read()
        parts: list[bytes] = []
        size = 0
        while chunk := await answer.readany():
            size += len(chunk)
            if size > _REWRITE_LIMIT:
                raise Refused(502, "the model server's answer is too large to rewrite", "upstream")
            parts.append(chunk)
        return b"".join(parts)

    async def _stream(
        self,
        ex: Exchange,
        answer: UpstreamAnswer,
        headers: bytes,
        rewriter: SSEModelRewriter | None,
        rewrite_back: bool,
        scan_events: bool,
    ) -> None:
        request = response = ex.request
        length = answer.content_length if not rewrite_back else None
        response.start(answer.status, answer.reason, headers, length, relayed=True)
        ex.head_sent = time.perf_counter()
        facts = AnswerFacts() if scan_events else None
        metrics = self.metrics
        metrics.streaming += 1
        try:
            while True:
                try:
                    chunk = await answer.readany()
                except TRANSPORT_ERRORS as exc:
                    failure = classify(exc)
                    ex.error = "broken_stream"
                    if failure.kind == "timeout":
                        metrics.upstream_errors.labels("timeout").inc()
                        log.warning("model server went silent mid-answer; closing", path=request.path)
                    else:
                        metrics.upstream_errors.labels("disconnect").inc()
                        log.warning(
                            "model server broke off an answer", path=request.path, error=failure.detail
                        )
                    request.abort()  # so a cut-short answer is seen as cut short, not complete
                    return
                if not chunk:
                    break
                if ex.first_chunk is None:
                    ex.first_chunk = time.perf_counter()
                if facts is not None:
                    facts.feed_sse(chunk)
                if rewriter is not None:
                    chunk = rewriter.feed(chunk)
                    if not chunk:
                        continue
                try:
                    await response.write(chunk)
                except ConnectionError:
                    ex.client_closed = True
                    metrics.client_disconnects.inc()
                    return
            if rewriter is not None:
                tail = rewriter.flush()
                if tail:
                    await response.write(tail)
            response.finish()
        except ConnectionError:
            ex.client_closed = True
            metrics.client_disconnects.inc()
        finally:
            metrics.streaming -= 1
            if facts is not None:
                ex.finish_reason, ex.completion_tokens = facts.finish_reason, facts.completion_tokens
                if facts.error and ex.error is None:
                    ex.error = "sse_error"
