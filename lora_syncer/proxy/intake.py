"""The proxy port's HTTP/1.1 server: requests parsed by llhttp (`httptools`), answers written by the handler.

Why not aiohttp's server here: per request it builds a `BaseRequest`, a payload stream, a
`StreamResponse` and a writer, and runs a task with its own timers; under load that was about
a third of the proxy's event-loop thread (bench/bench_proxy.py). A proxy needs much less: the
request head, the body bounded in size, and a way to send an answer whole or stream it with
backpressure. This module is that and nothing else; the health and metrics port stays on aiohttp.

One `_Connection` per client: llhttp calls back as bytes arrive; each complete request head
becomes an `IntakeRequest` queued in order (pipelining: answers go out in the order the
requests came), and one task per connection hands them to the handler one after another. The
handler reads the body (`IntakeRequest.read`) and writes the answer through the request
(`send`, or `start`/`write`/`finish`).

What the connection owns: the head-size limit (431), malformed requests (400, then close), the
body-size limit (bodies beyond it are discarded, the handler answers 413), keep-alive and the idle
timeout, `Connection: close`, HTTP/1.0, HEAD (no body written), chunked answers when the length is
not known, backpressure (`write` waits while the client's socket buffer is full), and a client
that goes away: the task serving it is cancelled, so the handler's upstream call is closed and the
model server aborts the generation. After an answer sent before the request body was read, the
rest of the body is read and discarded for a short while before closing, so the client sees the
answer rather than a reset.

The fast lane (`IntakeServer.lane`, `lora_syncer.proxy.lane`): a POST whose body is complete in
the bytes just read, on a connection with nothing else in progress, is offered to the lane from
llhttp's end-of-message callback, with no task woken. The lane answers through the request as the
handler does and calls `lane_done`; what it cannot finish there it hands back (`continue_in_task`)
to this connection's serving task, ahead of any request pipelined behind it. While the lane holds
a request, the serving task is not woken, so answers still go out in order.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar, Final, cast

import httptools
import structlog
from multidict import CIMultiDict
from yarl import URL

from lora_syncer.proxy.headers import RawHeaders, decoded, read_fields

__all__ = ["BadBody", "BodyTooLarge", "IntakeRequest", "IntakeServer"]

log: Final = structlog.get_logger("lora_syncer.proxy")

# Request line and headers together; beyond it the request is answered 431.
MAX_HEAD_SIZE: Final = 64 * 1024
# Requests parsed ahead of the one being served (pipelining) before the connection stops reading.
_PIPELINE_DEPTH: Final = 8
# After an answer sent before its request body was read: how long the rest is read and discarded.
_LINGER_SECONDS: Final = 5.0
_HEADLESS_STATUSES: Final = frozenset({204, 304})
_VERSIONS: Final = {"1.1": (1, 1), "1.0": (1, 0)}

# An answer's own headers: (name, value) pairs, or `Name: value` lines already written (a relayed answer's).
AnswerHeaders = Iterable[tuple[str, str]] | bytes
Handler = Callable[["IntakeRequest"], Awaitable[None]]
# The fast lane: True when it took the request (it then calls `IntakeRequest.lane_done`).
Lane = Callable[["IntakeRequest"], bool]


class BodyTooLarge(Exception):
    """The request body is over the server's limit."""


class BadBody(Exception):
    """The request body is not valid HTTP/1.1 framing (e.g. a broken chunk)."""


class _HeadTooLarge(Exception):
    """Raised inside a parser callback: the request head is over MAX_HEAD_SIZE."""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Date:
    """The `Date` header value, formatted once a second."""

    second: ClassVar[int] = -1
    value: ClassVar[str] = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True)
        return cls.value


class IntakeRequest:
    """One request: method, target, headers, body as it arrives, and the answer written through it."""

    __slots__ = (
        "_body_done",
        "_chunked_out",
        "_conn",
        "_headers",
        "_parts",
        "_size",
        "_waiter",
        "broken",
        "chunked",
        "content_length",
        "ctype",
        "expect",
        "forwarded_for",
        "head_sent",
        "keep",
        "keep_alive",
        "method",
        "on_lost",
        "path",
        "raw_headers",
        "remote",
        "resume",
        "status",
        "target",
        "too_large",
        "version",
    )

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: str,
        version: tuple[int, int],
        raw_headers: RawHeaders,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target  # as sent: path and query, percent-encoded
        self.path = _decoded_path(target)
        self.version = version
        self.raw_headers = raw_headers  # in order, as sent (passed on as bytes, see headers.py)
        self._headers: CIMultiDict[str] | None = None
        self.remote = conn.remote
        self.keep_alive = keep_alive
        length, ctype, chunked, expect, forwarded = read_fields(raw_headers)
        self.content_length = int(length) if length is not None else None  # llhttp checked the digits
        self.chunked = chunked
        self.expect = expect  # the Expect field (None: none)
        self.ctype = ctype  # the Content-Type field as sent ("" when none)
        self.forwarded_for = forwarded  # the first X-Forwarded-For field
        self.too_large = False
        self.broken = False  # the body was malformed (e.g. bad chunk framing)
        self._chunked_out = False
        self._parts: list[bytes] = []
        self._size = 0
        self._body_done = False
        self._waiter: asyncio.Future[None] | None = None
        # The answer.
        self.status = 0  # the status sent (0: nothing sent yet)
        self.head_sent = False
        self.keep = False  # whether the connection stays open after this answer
        # The fast lane's: the rest of the work, for the serving task; and what to do if the client leaves first.
        self.resume: Callable[[], Awaitable[None]] | None = None
        self.on_lost: Callable[[], None] | None = None

    # --- the request ----------------------------------------------------------------

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers as text, by case-insensitive name (made on first use: the fast lane needs none)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(decoded(self.raw_headers))
        return headers

    @property
    def raw_path(self) -> str:
        """The request target as sent (path and query), passed to the model server unchanged."""
        return self.target

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def body_complete(self) -> bool:
        return self._body_done

    def body_if_complete(self) -> bytes | None:
        """The whole body when all of it is in and within the limit (no await: the common case), else None."""
        if not self._body_done or self.too_large:
            return None
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-case, without parameters ("" when none)."""
        return self.ctype.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body. Raises BodyTooLarge over the limit, ConnectionResetError when the client left."""
        while not self._body_done:
            if self.too_large:
                raise BodyTooLarge()
            if self.broken:
                raise BadBody()
            if self._conn.lost:
                raise ConnectionResetError("the client closed the connection")
            waiter = self._waiter = self._conn.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.too_large:
            raise BodyTooLarge()
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def send_continue(self) -> None:
        """Tell an HTTP/1.1 client that waits for it (`Expect: 100-continue`) to send its body."""
        if not self._body_done and not self.head_sent:
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # --- fed by the connection ------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self.too_large:
            return  # discarded: the handler answers 413
        self._size += len(data)
        if self._size > self._conn.server.max_body_size:
            self.too_large = True
            self._parts = []
            self._wake()
            return
        self._parts.append(data)

    def _done(self) -> None:
        self._body_done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the answer ---------------------------------------------------------------------

    def _head(
        self,
        status: int,
        reason: str | None,
        headers: AnswerHeaders,
        length: int | None,
        chunked: bool,
        relayed: bool,
    ) -> bytes:
        conn = self._conn
        self.keep = keep = (
            self.keep_alive
            and self._body_done
            and not self.too_large
            and not conn.server.stopping
            and not conn.lost
        ) and (length is not None or chunked or status in _HEADLESS_STATUSES)
        self.status = status
        self.head_sent = True
        # Bytes throughout: a relayed answer's header lines arrive written (see forward.plan_relay).
        if isinstance(headers, bytes):
            block = headers
        else:
            block = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode(
                "utf-8", "surrogateescape"
            )
        tail = b""
        if not relayed:  # a relayed answer carries the model server's own Date
            tail = b"Date: %s\r\n" % _Date.now().encode("ascii")
        if status not in _HEADLESS_STATUSES and not 100 <= status < 200:
            if length is not None:
                tail += b"Content-Length: %d\r\n" % length
            elif chunked:
                tail += b"Transfer-Encoding: chunked\r\n"
        if not keep:
            tail += b"Connection: close\r\n"
        elif self.version < (1, 1):
            tail += b"Connection: keep-alive\r\n"
        phrase = (reason or _reason(status)).encode("utf-8", "surrogateescape")
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, phrase, block, tail)

    def send(
        self,
        status: int,
        reason: str | None,
        headers: AnswerHeaders,
        body: bytes,
        *,
        relayed: bool = False,
    ) -> None:
        """The whole answer in one write (no body for HEAD). `relayed`: the model server's answer (its headers)."""
        head = self._head(status, reason, headers, len(body), False, relayed)
        if body and self.method != "HEAD" and status not in _HEADLESS_STATUSES:
            head += body
        self._conn.write(head)

    def start(
        self,
        status: int,
        reason: str | None,
        headers: AnswerHeaders,
        length: int | None,
        *,
        relayed: bool = False,
    ) -> None:
        """Send the head of an answer whose body follows (`write`, then `finish`); chunked when `length` is None."""
        chunked = length is None and self.version >= (1, 1) and self.method != "HEAD"
        self._conn.write(self._head(status, reason, headers, length, chunked, relayed))
        self._chunked_out = chunked

    async def write(self, chunk: bytes) -> None:
        """Send body bytes now; waits while the client's socket buffer is full. ConnectionError when it left."""
        conn = self._conn
        if conn.lost:
            raise ConnectionResetError("the client closed the connection")
        if self.method == "HEAD":
            return
        if self._chunked_out:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        conn.write(chunk)
        if conn.write_paused:
            await conn.drain()

    def finish(self) -> None:
        """End a streamed answer."""
        if self._chunked_out and not self._conn.lost:
            self._conn.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the client connection at once (an answer cut short must be seen as cut short)."""
        self.keep = False
        self._conn.abort()

    # --- the fast lane ------------------------------------------------------------------

    def lane_done(self) -> None:
        """The fast lane has answered this request (or refused it)."""
        self._conn.lane_done(self)

    def continue_in_task(self, resume: Callable[[], Awaitable[None]]) -> None:
        """The fast lane cannot finish here: the connection's serving task runs `resume` next."""
        self.resume = resume
        self._conn.continue_in_task(self)


# path -> percent-decoded path: clients reuse a handful of targets; bounded for those that do not.
_PATHS: Final[dict[str, str]] = {}
_PATHS_MAX: Final = 1024


def _decoded_path(target: str) -> str:
    path = _PATHS.get(target)
    if path is not None:
        return path
    raw = target.partition("?")[0].partition("#")[0]
    if "%" not in raw and raw.startswith("/"):
        path = raw
    else:
        try:
            # As aiohttp did: yarl's decoding (an encoded `/` stays encoded); absolute-form targets give their path.
            path = URL(raw, encoded=True).path if raw.startswith("/") else URL(target).path
        except ValueError:
            path = raw
    if len(_PATHS) >= _PATHS_MAX:
        _PATHS.clear()
    _PATHS[target] = path
    return path


class _Bad:
    """A request the parser refused: answered in turn, then the connection closes."""

    __slots__ = ("message", "status")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, serve in order."""

    def __init__(self, server: IntakeServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.lost = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._current: IntakeRequest | None = None  # being parsed
        self._queue: collections.deque[IntakeRequest | _Bad] = collections.deque()
        self._next: asyncio.Future[None] | None = None  # the serving task waits here for a request
        self._task: asyncio.Task[None] | None = None
        self._active: IntakeRequest | None = None
        self._deferred: IntakeRequest | None = None  # may go to the lane if its body ends in these bytes
        self._lane: IntakeRequest | None = None  # held by the fast lane
        self._reading_paused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle = False
        self._idle_since = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple | list) and peer:
            self.remote = str(peer[0])
        elif isinstance(peer, str) and peer:
            self.remote = peer
        self.server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return  # after a malformed request or an upgrade: the rest is not read
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request asked to switch protocols; a proxy of HTTP requests does not: no more requests here.
            self._parser = None
        except httptools.HttpParserError as exc:
            self._parser = None
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, f"request header fields are over the limit of {MAX_HEAD_SIZE} bytes")
            else:
                self._refuse(400, f"malformed HTTP request ({_parser_words(exc)})")
        if self._deferred is not None:  # its body did not end in these bytes: served the usual way
            self._deferred = None
            self._wake_server()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self._cancel_idle()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)  # `drain` sees `lost` and raises
        current = self._current
        if current is not None:
            current._wake()
        for item in self._queue:
            if isinstance(item, IntakeRequest):
                item._wake()
        if self._active is not None:
            self._active._wake()
        lane, self._lane = self._lane, None
        for held in (lane, *self._queue):
            # The lane's exchanges, in flight or handed on but not started: their upstream call is closed.
            if isinstance(held, IntakeRequest) and held.on_lost is not None:
                on_lost, held.on_lost = held.on_lost, None
                on_lost()
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the handler's upstream call is closed: the model server aborts the generation

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- llhttp callbacks ---------------------------------------------------------------

    # No on_message_begin (httptools calls only the callbacks a protocol has): the head's pieces
    # are taken and reset in on_headers_complete, one Python call less per request.

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_SIZE:
            raise _HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_SIZE:
            raise _HeadTooLarge()

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        version = parser.get_http_version()
        raw = self._headers
        url = self._url
        self._url, self._headers, self._head_size = [], [], 0
        target = (url[0] if len(url) == 1 else b"".join(url)).decode("utf-8", "surrogateescape")
        request = IntakeRequest(
            self,
            parser.get_method().decode("ascii", "replace"),
            target,
            _VERSIONS.get(version) or _version(version),
            raw,
            parser.should_keep_alive(),
        )
        self._current = request
        queue = self._queue
        queue.append(request)
        self._disarm_idle()
        if len(queue) > _PIPELINE_DEPTH and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        if (
            request.method == "POST"
            and request.content_length is not None
            and len(queue) == 1
            and self._lane is None
            and self._active is None
            and (self._task is None or self._next is not None)  # the serving task waits for work
            and self.server.lane is not None
        ):
            self._deferred = request  # decided in on_message_complete, or after these bytes
        else:
            self._wake_server()

    def on_body(self, body: bytes) -> None:
        current = self._current
        if current is not None:
            current._feed(body)

    def on_message_complete(self) -> None:
        current = self._current
        if current is not None:
            self._current = None
            current._done()
            if current is self._deferred:
                self._deferred = None
                self._offer_lane(current)

    # --- the fast lane ------------------------------------------------------------------

    def _offer_lane(self, request: IntakeRequest) -> None:
        lane = self.server.lane
        assert lane is not None and self._queue[0] is request
        self._queue.popleft()
        self._lane = request
        try:
            taken = lane(request)
        except Exception:  # a bug in the lane: answered 500, never a silent hang
            log.exception("proxy fast lane failed", path=request.path)
            self._lane = None
            _answer_500(request)
            self._close()
            return
        if not taken:
            self._lane = None
            self._queue.appendleft(request)
            self._wake_server()

    def lane_done(self, request: IntakeRequest) -> None:
        if self._lane is not request:
            return
        self._lane = None
        if self.lost:
            return
        if not request.head_sent:  # the lane answered nothing: never leave the client waiting
            _answer_500(request)
        if not request.keep:
            self._close()
        elif self._queue:
            self._wake_server()  # requests pipelined behind this one
        else:
            self._arm_idle()

    def continue_in_task(self, request: IntakeRequest) -> None:
        if self._lane is not request:
            return
        self._lane = None
        self._queue.appendleft(request)
        self._wake_server()

    # --- serving ------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        self._deferred = None
        self._queue.append(_Bad(status, message))
        current = self._current
        if current is not None:
            self._current = None
            current.broken = True  # a body that will never end
            current._wake()
        self._wake_server()

    def _wake_server(self) -> None:
        if self._lane is not None:
            return  # the lane's answer goes first; `lane_done` or `continue_in_task` wakes it
        if self._task is None:
            self._task = self.loop.create_task(self._serve())
            return
        waiter = self._next
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _serve(self) -> None:
        server = self.server
        queue = self._queue
        try:
            while not self.lost:
                if not queue:
                    if server.stopping:
                        break
                    self._arm_idle()
                    waiter = self._next = self.loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._next = None
                    continue
                item = queue.popleft()
                if self._reading_paused and len(queue) <= _PIPELINE_DEPTH // 2 and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                if isinstance(item, _Bad):
                    _send_error(item, self)
                    break
                self._active = item
                try:
                    handled = await self._handle(item)
                finally:
                    self._active = None
                if not handled:
                    break
                if not item.head_sent:  # the handler answered nothing: never leave the client waiting
                    _answer_500(item)
                if not item.keep:
                    if not item.body_complete and not self.lost:
                        await self._linger(item)
                    break
        except asyncio.CancelledError:
            pass  # the client went away, or the server is shutting down
        finally:
            self._close()

    async def _handle(self, item: IntakeRequest) -> bool:
        """Run the handler (or the fast lane's hand-on) for one request; False after a bug, answered 500."""
        try:
            resume = item.resume
            if resume is not None:  # handed on by the fast lane
                item.resume = None
                await resume()
            else:
                await self.server.handler(item)
        except Exception:  # a bug in the handler: answered 500, never a silent hang
            log.exception("proxy handler failed", path=item.path)
            _answer_500(item)
            return False
        return True

    async def _linger(self, request: IntakeRequest) -> None:
        """Read and discard the rest of a body the answer did not need, for a while, so the client reads the answer."""
        transport = self.transport
        if transport is None:
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        request.too_large = True  # discard what still comes
        try:
            async with asyncio.timeout(_LINGER_SECONDS):
                while not request.body_complete and not self.lost and self._parser is not None:
                    waiter = request._waiter = self.loop.create_future()
                    await waiter
        except TimeoutError:
            pass

    def write(self, data: bytes) -> None:
        """Send now; nothing when the client has gone (the serving task is being cancelled)."""
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        transport.write(data)

    async def drain(self) -> None:
        if not self.write_paused:
            return
        if self.lost:
            raise ConnectionResetError("the client closed the connection")
        drain = self._drain
        if drain is None or drain.done():
            drain = self._drain = self.loop.create_future()
        await drain
        if self.lost:
            raise ConnectionResetError("the client closed the connection")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self._cancel_idle()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def close_if_idle(self) -> None:
        """Shutting down: close now when no request is being served or waits; else after the current answer."""
        if self._active is None and self._lane is None and not self._queue:
            self._close()

    # --- idle timeout ----------------------------------------------------------------------
    # One timer per connection that re-arms itself, not one per request: on uvloop every
    # `call_later` is a libuv timer handle made and freed, a measurable share of a request.

    def _arm_idle(self) -> None:
        self._idle = True
        self._idle_since = self.loop.time()
        if self._idle_timer is None and not self.lost:
            self._idle_timer = self.loop.call_at(
                self._idle_since + self.server.idle_timeout, self._idle_check
            )

    def _disarm_idle(self) -> None:
        self._idle = False

    def _cancel_idle(self) -> None:
        timer = self._idle_timer
        if timer is not None:
            timer.cancel()
            self._idle_timer = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        if not self._idle or self.lost:
            return  # busy: the next wait for a request arms it again
        expires = self._idle_since + self.server.idle_timeout
        if self.loop.time() >= expires:
            if self._active is None and self._lane is None and not self._queue:
                self._close()
            return
        self._idle_timer = self.loop.call_at(expires, self._idle_check)


_JSON: Final = (("Content-Type", "application/json"),)


def _error_body(status: int, message: str) -> bytes:
    from lora_syncer.proxy.refusal import error_body

    return error_body(status, message)


def _answer_500(request: IntakeRequest) -> None:
    if not request.head_sent:
        request.keep_alive = False
        request.send(500, None, _JSON, _error_body(500, "internal error in the proxy"))


def _send_error(bad: _Bad, conn: _Connection) -> None:
    if conn.lost:
        return
    # Not an IntakeRequest: there is no request to speak of. Written directly, then the connection closes.
    body = _error_body(bad.status, bad.message)
    head = (
        f"HTTP/1.1 {bad.status} {_reason(bad.status)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nDate: {_Date.now()}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    conn.write(head + body)


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (1, 0)


def _parser_words(exc: BaseException) -> str:
    """llhttp's reason, e.g. `Invalid method encountered`; never the bytes the client sent."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("ascii", "replace")
    return text.strip().rstrip(".") or "unparsable"


class IntakeServer:
    """The listening side: accepts connections, hands their requests to `handler`, drains on shutdown."""

    def __init__(
        self, handler: Handler, *, max_body_size: int, idle_timeout: float, lane: Lane | None = None
    ) -> None:
        self.handler = handler
        self.lane = lane
        self.max_body_size = max_body_size
        self.idle_timeout = idle_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: Any) -> None:
        """Serve on an already bound socket."""
        self._server = await self.loop.create_server(lambda: _Connection(self), sock=sock)

    async def stop_accepting(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def pre_shutdown(self) -> None:
        """Idle keep-alive connections close now, the others after their current answer."""
        self.stopping = True
        for conn in list(self.connections):
            conn.close_if_idle()

    async def shutdown(self) -> None:
        """Close every connection now; requests still in flight are cancelled."""
        self.stopping = True
        tasks = []
        for conn in list(self.connections):
            if conn._task is not None and not conn._task.done():
                tasks.append(conn._task)
            conn.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
