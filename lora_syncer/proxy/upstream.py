"""A lean HTTP/1.1 client for the proxy's forward path: keep-alive connections on asyncio protocols.

Why not aiohttp's `ClientSession` here: per request it builds a `ClientRequest`, a payload, a
writer, a `ClientResponse` and a timer context; the benchmark (bench/bench_proxy.py, see
docs/proxy.md) measures that as a large share of the proxy's CPU per request. This client does
only what a reverse proxy needs: write the request head and body in one send, parse the answer
with llhttp (`httptools`, the parser uvicorn uses), and hand the body on as it arrives, with the
same timeouts (connect; silence before the head and between body reads). It speaks plain
`http://` only; other upstreams go through aiohttp (`lora_syncer.proxy.transport`).

Connections are pooled per origin (at most `limit` open in all, others wait) and reused while
the server keeps them alive. A reused connection that turns out to be closed before any byte
of the answer is replaced by a new one once (the server dropped an idle keep-alive connection).
A response not read to its end closes its connection, so a cancelled request (a client that
went away) aborts the upstream generation.

`send_now` is the proxy's fast lane (`lora_syncer.proxy.lane`): a request written on an idle
connection at once, with no task waiting on it; the connection calls `notify` as the answer comes
in (after each read, when it breaks, when it stays silent too long) instead of waking a waiter.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Final, cast

import aiohttp
import httptools
from multidict import CIMultiDict

from lora_syncer.proxy.headers import RawHeaders, decoded, header_lines, read_fields

# Stop reading from the upstream while this much body waits for a slow client.
_HIGH_WATER: Final = 256 * 1024
_BODYLESS_METHODS: Final = frozenset({"HEAD"})
_LENGTH_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})

# Connection states.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_UNTIL_CLOSE: Final = 3
_DONE: Final = 4

# status, reason, headers as received, declared length (None: chunked or until close), Content-Type ("" if none)
Head = tuple[int, str, RawHeaders, int | None, str]


class UpstreamError(aiohttp.ClientError):
    """The model server could not be reached or broke the HTTP exchange."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (`os_error` says why)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class ConnectTimedOut(UpstreamError):
    """Opening the connection took longer than the connect timeout."""


class Disconnected(UpstreamError):
    """The server closed the connection before the answer was complete."""


class BadResponse(UpstreamError):
    """The server's answer is not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One upstream connection: llhttp parses answers as bytes arrive; their body is queued for the reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.state = _IDLE
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.key: tuple[str, int] = ("", 0)
        self.counted = False  # holds one of the pool's `limit` slots
        self.got_bytes = False
        self.no_body = False
        self._parser: httptools.HttpResponseParser | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head: Head | None = None
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._silence = 0.0
        self.on_lost: Callable[[_Connection], None] | None = None  # the pool's, while idle
        # The fast lane's callback, instead of a waiter: called after each read, on failure and on silence.
        self.notify: Callable[[], None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._feed(data)
        notify = self.notify
        if notify is not None:
            self._deadline = self.loop.time() + self._silence  # silence counts from the last bytes
            notify()

    def _feed(self, data: bytes) -> None:
        state = self.state
        if state == _UNTIL_CLOSE:
            self._push(data)
            return
        parser = self._parser
        if state in (_IDLE, _DONE) or parser is None:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.reusable = False
            self.close()
            return
        self.got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # A 101 answer: what follows is no longer HTTP; relay it until the server closes.
            self.state = _UNTIL_CLOSE
            self.reusable = False
            rest = data[int(upgrade.args[0]) :] if upgrade.args else b""
            if rest:
                self._push(rest)
        except httptools.HttpParserError as exc:
            if self.state == _DONE:
                # Bytes after a complete answer: keep the answer, never reuse the connection.
                self.reusable = False
                self._parser = None
                return
            self._fail(BadResponse(f"the model server's answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._cancel_timer()
        state = self.state
        if state == _UNTIL_CLOSE:
            self.state = _DONE
            self._wake()
        elif state not in (_IDLE, _DONE):
            self._fail(Disconnected("the model server closed the connection"))
        if self.on_lost is not None:
            self.on_lost(self)
        if self.notify is not None:
            self.notify()

    # --- llhttp callbacks ---------------------------------------------------------------

    # No on_message_begin (httptools calls only the callbacks a protocol has): the head's pieces
    # are taken and reset in on_headers_complete, one Python call less per answer.

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        raw, reason = self._raw_headers, self._reason
        self._raw_headers, self._reason = [], b""
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (e.g. 103): the real one follows
        # Headers stay bytes (relayed as received); the fields the proxy reads are found in one pass.
        declared, ctype, chunked, _, _ = read_fields(raw)
        # llhttp has checked Content-Length (digits, one value); with chunked framing it does not count.
        length = int(declared) if declared is not None and not chunked else None
        self._head = (status, reason.decode("utf-8", "surrogateescape"), raw, length, ctype)
        self.reusable = parser.should_keep_alive() and status != 101
        if self.no_body:
            # llhttp cannot be told the request was HEAD: the answer ends with its head.
            self.state = _DONE
            self._parser = None
        elif status not in (204, 304, 101) and not chunked and length is None:
            # No framing: the body runs until the server closes (llhttp has no end-of-input call).
            self.state = _UNTIL_CLOSE
            self.reusable = False
        else:
            self.state = _BODY
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.state == _BODY or self.state == _UNTIL_CLOSE:
            self._push(body)

    def on_message_complete(self) -> None:
        if self._head is None:
            return  # the end of an interim (1xx) answer
        if self.state == _BODY:
            self.state = _DONE
            self._wake()

    # --- buffering ----------------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self.reusable = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- reading --------------------------------------------------------------------------

    def _arm_silence(self, silence: float) -> None:
        # One self-re-arming timer per connection, not one per wait: on uvloop every `call_later`
        # is a libuv timer handle made and freed, a measurable share of a proxied request.
        loop = self.loop
        deadline = self._deadline = loop.time() + silence
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(deadline, self._check_silence)

    async def _wait(self, silence: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        self._arm_silence(silence)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_silence(self) -> None:
        self._timer = None
        waiter = self._waiter
        notify = self.notify
        if notify is None and (waiter is None or waiter.done()):
            return  # nobody waits: the next wait arms it again
        if self.loop.time() >= self._deadline:
            if notify is not None:
                self._fail(TimeoutError())
                notify()
            else:
                assert waiter is not None
                waiter.set_exception(TimeoutError())
        else:
            self._timer = self.loop.call_at(self._deadline, self._check_silence)

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None

    async def read_head(self, silence: float) -> Head:
        while self._head is None:
            if self._exc is not None:
                raise self._exc
            await self._wait(silence)
        return self._head

    async def readany(self, silence: float) -> bytes:
        while True:
            pieces = self._pieces
            if pieces:
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces.clear()
                self._buffered = 0
                if self._paused and self.transport is not None and not self.closed:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.state == _DONE:
                return b""
            if self._exc is not None:
                raise self._exc
            await self._wait(silence)

    @property
    def complete(self) -> bool:
        return self.state == _DONE and not self._pieces

    @property
    def done(self) -> bool:
        """The whole answer is in (its body waits to be taken)."""
        return self.state == _DONE

    @property
    def failure(self) -> BaseException | None:
        """Why the exchange broke, if it did."""
        return self._exc

    @property
    def head(self) -> Head | None:
        """The answer's status, reason, headers and length, once parsed."""
        return self._head

    def watch(self, silence: float, notify: Callable[[], None]) -> None:
        """Call `notify` as the answer comes in instead of waking a waiter, and when the server stays
        silent for `silence` seconds (the failure is then a TimeoutError)."""
        self.notify = notify
        self._silence = silence
        self._arm_silence(silence)

    def start(self, no_body: bool) -> None:
        """Reset for a new exchange on this connection."""
        self.state = _HEAD
        self.got_bytes = False
        self.no_body = no_body
        self._head = None
        self._exc = None
        if self._parser is None:
            # One parser per connection: llhttp parses keep-alive answers one after another.
            self._parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


class UpstreamResponse:
    """An answer being received: status, reason, headers, declared length, and its body as it arrives."""

    __slots__ = (
        "_client",
        "_conn",
        "_headers",
        "_timeout",
        "content_length",
        "content_type",
        "raw_headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        client: UpstreamClient,
        conn: _Connection,
        head: Head,
        timeout: float,
    ) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self.status, self.reason, self.raw_headers, self.content_length, self.content_type = head
        self._headers: CIMultiDict[str] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers as text, by case-insensitive name (made on first use: the proxy relays the bytes)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(decoded(self.raw_headers))
        return headers

    async def readany(self) -> bytes:
        """The body bytes received so far (waiting for some); b"" at the end of the body."""
        conn = self._conn
        if conn is None:
            return b""
        data = await conn.readany(self._timeout)
        if not data:
            self.release()
        return data

    def take_body(self) -> bytes:
        """The whole body of an answer that is all in (`_Connection.done`), and the connection back."""
        conn = self._conn
        assert conn is not None and conn.state == _DONE
        pieces = conn._pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        conn._buffered = 0
        self.release()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn is not None and conn.state == _DONE:  # all of it is in already (a small answer)
            return self.take_body()
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give the connection back (reused when the body was read whole, closed otherwise). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)


def _request_bytes(method: str, host_header: str, target: str, headers: RawHeaders, body: bytes) -> bytes:
    line = f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("utf-8", "surrogateescape")
    end = b"Content-Length: %d\r\n\r\n" % len(body) if body or method in _LENGTH_METHODS else b"\r\n"
    return b"".join((line, header_lines(headers), end, body))


class UpstreamClient:
    """Keep-alive connections to plain-HTTP upstreams, at most `limit` open at once."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float = 30.0,
    ) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._origins: dict[str, tuple[str, int, str]] = {}
        self._closed = False

    @staticmethod
    def supports(base: str) -> bool:
        """Whether this client can reach `base` (plain http)."""
        return base.startswith("http://")

    def _origin(self, base: str) -> tuple[str, int, str]:
        origin = self._origins.get(base)
        if origin is None:
            from yarl import URL

            url = URL(base)
            host = url.raw_host or ""
            port = url.port or 80
            shown = f"[{host}]" if ":" in host else host
            origin = (host, port, shown if port == 80 else f"{shown}:{port}")
            self._origins[base] = origin
        return origin

    async def request(
        self, method: str, base: str, target: str, headers: RawHeaders, body: bytes
    ) -> UpstreamResponse:
        """Send one request to `base` + `target` (the raw path and query) and wait for the answer's head."""
        host, port, host_header = self._origin(base)
        data = _request_bytes(method, host_header, target, headers, body)
        no_body = method in _BODYLESS_METHODS
        key = (host, port)
        reused_conn = self._take_idle(key)
        if reused_conn is not None:
            conn, reused = reused_conn, True
        else:
            conn, reused = await self._acquire(key, fresh=False)
        try:
            head = await self._exchange(conn, data, no_body)
        except Disconnected:
            if not reused or conn.got_bytes:
                self._release(conn)
                raise
            # An idle keep-alive connection the server had already closed: once more on a new one.
            self._release(conn)
            conn, _ = await self._acquire(key, fresh=True)
            try:
                head = await self._exchange(conn, data, no_body)
            except BaseException:
                self._release(conn)
                raise
        except BaseException:
            self._release(conn)
            raise
        return UpstreamResponse(self, conn, head, self.read_timeout)

    def send_now(
        self,
        method: str,
        base: str,
        target: str,
        headers: RawHeaders,
        body: bytes,
        notify: Callable[[], None],
    ) -> _Connection | None:
        """Write one request on an idle keep-alive connection to `base` now, with no task waiting:
        the connection calls `notify` as the answer comes in (see `_Connection.watch`). None when
        no idle connection is at hand; the caller then sends it with `request`."""
        host, port, host_header = self._origin(base)
        conn = self._take_idle((host, port))
        if conn is None:
            return None
        transport = conn.transport
        if transport is None or transport.is_closing():
            self._release(conn)
            return None
        conn.start(method in _BODYLESS_METHODS)
        conn.watch(self.read_timeout, notify)
        transport.write(_request_bytes(method, host_header, target, headers, body))
        return conn

    def answer(self, conn: _Connection) -> UpstreamResponse:
        """The answer on `conn` (its head parsed), as `request` gives it. Its reader waits on the
        connection once `notify` is turned off (`conn.notify = None`)."""
        head = conn.head
        assert head is not None
        return UpstreamResponse(self, conn, head, self.read_timeout)

    def abandon(self, conn: _Connection) -> None:
        """Give back a connection whose answer nobody will read (closed unless the answer ended)."""
        self._release(conn)

    def _exchange(self, conn: _Connection, data: bytes, no_body: bool) -> Awaitable[Head]:
        """Send `data` on `conn`; the answer's head, awaited (not a coroutine itself: one frame less)."""
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            raise Disconnected("the model server closed the connection")
        conn.start(no_body)
        transport.write(data)
        return conn.read_head(self.read_timeout)

    # --- the pool -----------------------------------------------------------------------

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        """A live idle connection to `key`, if there is one (no await: the common case)."""
        idle = self._idle.get(key)
        if not idle or self._closed:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            conn.on_lost = None
            if conn.closed or now - conn.idle_since > self.idle_timeout:
                conn.close()
                self._drop(conn)
                continue
            return conn
        return None

    async def _acquire(self, key: tuple[str, int], *, fresh: bool) -> tuple[_Connection, bool]:
        while True:
            if self._closed:
                raise Disconnected("the proxy is shutting down")
            if not fresh:
                conn = self._take_idle(key)
                if conn is not None:
                    return conn, True
            if self._open < self.limit:
                self._open += 1
                try:
                    return await self._connect(key), False
                except BaseException:
                    self._open -= 1
                    self._notify()
                    raise
            if self._close_other_idle(key):
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._notify()  # woken and cancelled at once: pass the turn on
                raise

    def _close_other_idle(self, key: tuple[str, int]) -> bool:
        """At the limit: close an idle connection to another origin to make room."""
        for other, conns in self._idle.items():
            if other != key and conns:
                conn = conns.pop(0)
                conn.close()
                self._drop(conn)
                return True
        return False

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), key[0], key[1])
        except TimeoutError:
            raise ConnectTimedOut(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise ConnectFailed(exc) from None
        conn.key = key
        conn.counted = True
        return conn

    def _release(self, conn: _Connection) -> None:
        conn.notify = None
        if conn.reusable and conn.complete and not conn.closed and not self._closed:
            conn.state = _IDLE
            conn.idle_since = time.monotonic()
            conn.on_lost = self._idle_lost
            self._idle.setdefault(conn.key, []).append(conn)
            self._notify()
            return
        conn.on_lost = None
        conn.close()
        self._drop(conn)

    def _idle_lost(self, conn: _Connection) -> None:
        """An idle connection was closed by the server: forget it."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.on_lost = None
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their answers end."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.on_lost = None
                conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
