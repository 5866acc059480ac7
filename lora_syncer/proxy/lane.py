"""The fast lane: a proxied request served from I/O callbacks, with no task and no future.

Why: on the task path every request wakes its connection's serving task twice (the request is
in; the answer is in) and resumes a stack of coroutines each time. For the common request that
is most of what is left above the work itself (bench/bench_proxy.py). The lane runs the same
steps from the callbacks that bring the bytes: the intake's end-of-message callback, then the
upstream connection's reads.

What goes this way: a POST whose body arrived whole, on a client connection with nothing else in
progress (see `lora_syncer.proxy.intake`), routed to a plain-http pool that has an idle
keep-alive connection, whose answer is read whole with a known length (small JSON answers: the
common non-streamed completion). The steps are the handler's own (`ProxyCore.admit`, `route`,
`Forwarder.answered`, `plan_relay`, `send_whole`, `ProxyCore.end`), so both paths answer,
count and observe alike.

Anything else is handed to the connection's serving task where the lane stopped, with what it
already has: the route, and the answer or the failure (`ProxyCore.forward(sent=...)`). Nothing
runs twice and nothing is sent twice, except what the task path also resends: a keep-alive
connection the server had closed before answering (the request goes again on another).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import structlog

from lora_syncer.proxy.exchange import Exchange
from lora_syncer.proxy.forward import RelayPlan, Sent
from lora_syncer.proxy.intake import IntakeRequest
from lora_syncer.proxy.refusal import Refused
from lora_syncer.proxy.upstream import Disconnected, UpstreamClient, UpstreamResponse, _Connection

if TYPE_CHECKING:  # server imports this module: the one cycle, broken here (see setup.py)
    from lora_syncer.proxy.server import ProxyCore, Routed

__all__ = ["serve_now"]

log: Final = structlog.get_logger("lora_syncer.proxy")


def serve_now(core: ProxyCore, request: IntakeRequest) -> bool:
    """Take `request` into the lane: True when taken (answered, in flight, or handed on)."""
    transport = core.transport
    client = transport.client
    if client is None or not transport.is_open or request.expect is not None:
        return False
    body = request.body_if_complete()
    if body is None:
        return False
    ex = core.begin(request)
    try:
        route = core.route(ex, core.admit(ex), body)
        pool = route.pool
        if client.supports(pool.base):
            run = _Run(core, client, ex, route)
            conn = client.send_now(
                request.method,
                pool.base,
                request.raw_path,
                core.forwarder.upstream_headers(request),
                route.body,
                run.notify,
            )
            if conn is not None:
                run.conn = conn
                run.count()
                request.on_lost = run.lost
                return True
    except Refused as refused:
        core.refuse(ex, refused)
        ex.status = request.status or 500
        core.end(ex)
        request.lane_done()
        return True
    except Exception:  # a bug: answered 500 (by lane_done), never a silent hang
        log.exception("proxy fast lane failed", path=request.path)
        core.end(ex)
        request.lane_done()
        return True
    _hand_on(core, ex, route, None)  # no idle connection (or https): the task sends it
    return True


def _hand_on(core: ProxyCore, ex: Exchange, route: Routed, sent: Sent) -> None:
    """The serving task goes on from here: forward (or take `sent`), relay, settle."""
    request = ex.request

    async def resume() -> None:
        request.on_lost = None  # from here the task's cancellation covers it
        await core.settle(ex, core.forward(ex, route, sent))

    def dropped() -> None:  # the client left before the task took it
        if isinstance(sent, UpstreamResponse):
            sent.release()  # not read to its end: closed, so the model server stops
        core.client_left(ex)
        core.end(ex)

    request.on_lost = dropped
    request.continue_in_task(resume)


class _Run:
    """One request in the lane, from the upstream connection's callbacks to the answer."""

    __slots__ = ("answer", "client", "conn", "core", "counted", "ex", "plan", "route")

    def __init__(self, core: ProxyCore, client: UpstreamClient, ex: Exchange, route: Routed) -> None:
        self.core = core
        self.client = client
        self.ex = ex
        self.route = route
        self.conn: _Connection | None = None
        self.answer: UpstreamResponse | None = None
        self.plan: RelayPlan | None = None
        self.counted = False  # in the active-requests gauge (`metrics.forwarding`)

    def count(self) -> None:
        self.counted = True
        self.core.metrics.forwarding += 1

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.core.metrics.forwarding -= 1

    def notify(self) -> None:
        """The upstream connection read something, broke, or stayed silent too long."""
        try:
            self._step()
        except Exception:  # a bug: the client gets a 500 and the upstream connection is closed
            log.exception("proxy fast lane failed", path=self.ex.request.path)
            self._stop()
            self._uncount()
            self.ex.status = 500
            self.core.end(self.ex)
            self.ex.request.lane_done()

    def _step(self) -> None:
        conn = self.conn
        assert conn is not None
        failure = conn.failure
        answer = self.answer
        if answer is None:
            if conn.head is None:
                if failure is None:
                    return  # nothing yet (or an interim 1xx answer)
                stale = isinstance(failure, Disconnected) and not conn.got_bytes
                self._stop()
                # A keep-alive connection closed before any answer: sent again, as the task path does.
                self._hand_on(None if stale else failure)
                return
            answer = self.answer = self.client.answer(conn)
            plan = self.plan = self.core.forwarder.plan_relay(
                self.ex, self.route.pool, answer, self.route.augment
            )
            if not self.core.forwarder.fits_lane(plan, answer):
                conn.notify = None
                self._hand_on(answer)  # streamed or large: relayed by the task
                return
        if failure is not None:
            conn.notify = None
            self._hand_on(answer)  # broke off mid-body: the task's read raises it and maps it
            return
        if not conn.done:
            return
        self._finish(answer)

    def _finish(self, answer: UpstreamResponse) -> None:
        core, ex, pool = self.core, self.ex, self.route.pool
        plan = self.plan
        assert plan is not None
        request = ex.request
        request.on_lost = None
        self._uncount()
        forwarder = core.forwarder
        forwarder.answered(ex, pool, answer.status)
        forwarder.send_whole(ex, pool, answer, plan, answer.take_body())
        ex.status = request.status or 500
        core.end(ex)
        request.lane_done()

    def _hand_on(self, sent: Sent) -> None:
        self._uncount()  # counted again by the task's forward
        _hand_on(self.core, self.ex, self.route, sent)

    def _stop(self) -> None:
        """Close the upstream side: the connection goes back (closed unless its answer ended)."""
        self.ex.request.on_lost = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            if self.answer is not None:
                self.answer.release()
            else:
                self.client.abandon(conn)

    def lost(self) -> None:
        """The client went away while the answer was awaited: the model server's call is closed."""
        self._stop()
        self._uncount()
        self.core.client_left(self.ex)
        self.core.end(self.ex)
