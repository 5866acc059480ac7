"""A lean HTTP/1.1 client for the proxy's forward path: keep-alive connections on asyncio protocols.

Why not aiohttp's `ClientSession` here: per request it builds a `ClientRequest`, a payload, a
writer, a `ClientResponse` and a timer context, which measured as about half of the proxy's
CPU per request. This client does only what a reverse proxy needs: write the request head and
body in one send, parse the answer's head, and hand the body on as it arrives (content-length,
chunked, or until close), with the same timeouts as before (connect; silence before the head
and between body reads). It speaks plain `http://` only; other upstreams keep aiohttp.

Connections are pooled per origin (at most `limit` open in all, others wait) and reused while
the server keeps them alive. A reused connection that turns out to be closed before any byte
of the answer is replaced by a new one once (the server dropped an idle keep-alive connection).
A response not read to its end closes its connection, so a cancelled request (a client that
went away) aborts the upstream generation.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import cast

import aiohttp
from multidict import CIMultiDict

# Limits on the answer head, like aiohttp's parser (8190 per line) with room for many headers.
_MAX_LINE = 8190
_MAX_HEAD = 64 * 1024
# Stop reading from the upstream while this much body waits for a slow client.
_HIGH_WATER = 256 * 1024
_BODYLESS_METHODS = frozenset({"HEAD"})
_LENGTH_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Parser states.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(9)


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
    """One upstream connection: parses answers as bytes arrive and queues their body for the reader."""

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
        self._buf = b""  # bytes of the answer not parsed yet
        self._remaining = 0
        self._head: tuple[int, str, CIMultiDict[str], int | None] | None = None
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.on_lost: Callable[[_Connection], None] | None = None  # the pool's, while idle

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE or self.state == _DONE:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.reusable = False
            self.close()
            return
        self.got_bytes = True
        if self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            self._parse(data)
        except BadResponse as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        state = self.state
        if state == _UNTIL_CLOSE:
            self.state = _DONE
            self._wake()
        elif state not in (_IDLE, _DONE):
            self._fail(Disconnected("the model server closed the connection"))
        if self.on_lost is not None:
            self.on_lost(self)

    # --- parsing ------------------------------------------------------------------------

    def _parse(self, buf: bytes) -> None:
        pos = 0
        while True:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_HEAD:
                        raise BadResponse("answer head too large")
                    break
                self._parse_head(buf[pos:end])
                pos = end + 4
            elif state == _LENGTH:
                take = min(self._remaining, len(buf) - pos)
                if take:
                    self._push(buf[pos : pos + take])
                    pos += take
                    self._remaining -= take
                if self._remaining == 0:
                    self._finish()
                else:
                    break
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_LINE:
                        raise BadResponse("chunk size line too long")
                    break
                line = buf[pos:end].split(b";", 1)[0].rstrip(b" \t")
                pos = end + 2
                # Hex digits only (int() alone would also take signs, spaces and underscores).
                if not line or line.translate(None, b"0123456789abcdefABCDEF") or len(line) > 16:
                    raise BadResponse("bad chunk size")
                size = int(line, 16)
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self._remaining = size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                take = min(self._remaining, len(buf) - pos)
                if not take:
                    break
                self._push(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self.state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadResponse("chunk not followed by CRLF")
                pos += 2
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_HEAD:
                        raise BadResponse("trailers too large")
                    break
                empty = end == pos
                pos = end + 2
                if empty:
                    self._finish()
            elif state == _UNTIL_CLOSE:
                if pos < len(buf):
                    self._push(buf[pos:])
                    pos = len(buf)
                break
            else:  # _DONE with bytes left over: not a clean keep-alive connection
                if pos < len(buf):
                    self.reusable = False
                    pos = len(buf)
                break
        if pos < len(buf):
            self._buf = buf[pos:]

    def _parse_head(self, head: bytes) -> None:
        # One decode for the whole head (aiohttp's parser also reads headers as UTF-8, surrogateescape).
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        parts = lines[0].split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if not parts[0].startswith("HTTP/1.") or len(code) != 3 or not (code.isascii() and code.isdigit()):
            raise BadResponse("bad status line")
        status = int(code)
        reason = parts[2] if len(parts) > 2 else ""
        headers: CIMultiDict[str] = CIMultiDict()
        add = headers.add
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] in " \t" or len(line) > _MAX_LINE:
                raise BadResponse("bad header line")
            add(name, value.strip(" \t"))
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (e.g. 103): the real one follows
        http10 = parts[0] == "HTTP/1.0"
        if "Connection" in headers:
            tokens = {t.strip().lower() for v in headers.getall("Connection") for t in v.split(",")}
            keep_alive = ("keep-alive" in tokens) if http10 else ("close" not in tokens)
        else:
            keep_alive = not http10
        length: int | None = None
        te = headers.get("Transfer-Encoding")
        if te is None and "Content-Length" in headers:
            values = {v.strip() for raw in headers.getall("Content-Length") for v in raw.split(",")}
            if len(values) != 1:
                raise BadResponse("conflicting Content-Length")
            text = values.pop()
            if not (text.isascii() and text.isdigit()):
                raise BadResponse("bad Content-Length")
            length = int(text)
        self._head = (status, reason, headers, length)
        self.reusable = keep_alive and status != 101
        if self.no_body or status in (204, 304) or status == 101:
            self.state = _DONE if status != 101 else _UNTIL_CLOSE
            self.reusable = self.reusable and status != 101
        elif te is not None:
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                self.state = _CHUNK_SIZE
                if len(codings) > 1:
                    self.reusable = False
            else:
                self.state = _UNTIL_CLOSE
                self.reusable = False
        elif length is not None:
            self._remaining = length
            self.state = _LENGTH if length else _DONE
        else:
            self.state = _UNTIL_CLOSE
            self.reusable = False
        self._wake()

    def _push(self, data: bytes) -> None:
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self.state = _DONE
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

    async def _wait(self, silence: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(silence, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def read_head(self, silence: float) -> tuple[int, str, CIMultiDict[str], int | None]:
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

    def start(self, no_body: bool) -> None:
        """Reset for a new exchange on this connection."""
        self.state = _HEAD
        self.got_bytes = False
        self.no_body = no_body
        self._head = None
        self._exc = None
        self._remaining = 0

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamResponse:
    """An answer being received: status, reason, headers, declared length, and its body as it arrives."""

    __slots__ = ("_client", "_conn", "_timeout", "content_length", "headers", "reason", "status")

    def __init__(
        self,
        client: UpstreamClient,
        conn: _Connection,
        head: tuple[int, str, CIMultiDict[str], int | None],
        timeout: float,
    ) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self.status, self.reason, self.headers, self.content_length = head

    async def readany(self) -> bytes:
        """The body bytes received so far (waiting for some); b"" at the end of the body."""
        conn = self._conn
        if conn is None:
            return b""
        data = await conn.readany(self._timeout)
        if not data:
            self.release()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give the connection back (reused when the body was read whole, closed otherwise). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)


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
        self, method: str, base: str, target: str, headers: CIMultiDict[str], body: bytes
    ) -> UpstreamResponse:
        """Send one request to `base` + `target` (the raw path and query) and wait for the answer's head."""
        host, port, host_header = self._origin(base)
        parts = [f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n"]
        for name, value in headers.items():
            parts.append(f"{name}: {value}\r\n")
        if body or method in _LENGTH_METHODS:
            parts.append(f"Content-Length: {len(body)}\r\n")
        parts.append("\r\n")
        data = "".join(parts).encode("utf-8", "surrogateescape")
        if body:
            data += body
        no_body = method in _BODYLESS_METHODS
        conn, reused = await self._acquire((host, port), fresh=False)
        try:
            head = await self._exchange(conn, data, no_body)
        except Disconnected:
            if not reused or conn.got_bytes:
                self._release(conn)
                raise
            # An idle keep-alive connection the server had already closed: once more on a new one.
            self._release(conn)
            conn, _ = await self._acquire((host, port), fresh=True)
            try:
                head = await self._exchange(conn, data, no_body)
            except BaseException:
                self._release(conn)
                raise
        except BaseException:
            self._release(conn)
            raise
        return UpstreamResponse(self, conn, head, self.read_timeout)

    async def _exchange(
        self, conn: _Connection, data: bytes, no_body: bool
    ) -> tuple[int, str, CIMultiDict[str], int | None]:
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            raise Disconnected("the model server closed the connection")
        conn.start(no_body)
        transport.write(data)
        return await conn.read_head(self.read_timeout)

    # --- the pool -----------------------------------------------------------------------

    async def _acquire(self, key: tuple[str, int], *, fresh: bool) -> tuple[_Connection, bool]:
        while True:
            if self._closed:
                raise Disconnected("the proxy is shutting down")
            if not fresh:
                idle = self._idle.get(key)
                now = time.monotonic()
                while idle:
                    conn = idle.pop()
                    conn.on_lost = None
                    if conn.closed or now - conn.idle_since > self.idle_timeout:
                        conn.close()
                        self._drop(conn)
                        continue
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
