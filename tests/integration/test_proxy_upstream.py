"""The proxy's lean upstream HTTP/1.1 client against a scripted server on 127.0.0.1 (raw bytes both ways)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from lora_syncer.proxy.upstream import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    UpstreamClient,
)
from tests.support.net import free_port

WAIT = 10.0

Script = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request as the scripted server received it, and the means to answer."""

    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()
            if pause:
                await asyncio.sleep(pause)


@dataclass
class Scripted:
    """A server that reads HTTP requests and answers each with `script`."""

    script: Script
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[Exchange] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                ex = Exchange(head, body, reader, writer, len(self.requests))
                self.requests.append(ex)
                await self.script(ex)
                if writer.is_closing():
                    return
        finally:
            self.open_now -= 1
            self.closed.set()
            writer.close()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Scripted:
        scripted = Scripted(script)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(server)
        scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return scripted

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(limit=8, connect_timeout=5, read_timeout=WAIT)
    yield c
    await c.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(e + b"\r\n" for e in extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def post(
    client: UpstreamClient, url: str, body: bytes = b'{"model":"m"}', **kw: str
) -> tuple[int, bytes]:
    resp = await client.request(
        "POST", url, "/v1/chat/completions", [(k.encode(), v.encode()) for k, v in kw.items()], body
    )
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


class TestFraming:
    async def test_content_length_answer_and_reuse(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A Content-Length answer arrives whole with its status, reason and headers, and the connection is reused."""

        async def script(ex: Exchange) -> None:
            await ex.send(ok(b'{"n":%d}' % ex.index, b"X-Thing: a", b"X-Thing: b"))

        srv = await serve(script)
        resp = await client.request("POST", srv.url, "/v1/chat/completions", [], b"{}")
        assert (resp.status, resp.reason, resp.content_length) == (200, "OK", 7)
        assert resp.headers.getall("x-thing") == ["a", "b"]
        assert await resp.read() == b'{"n":0}'
        resp.release()
        assert await post(client, srv.url) == (200, b'{"n":1}')
        assert srv.connections == 1

    async def test_request_head_and_body(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """The request carries the method, raw target, Host, the given headers, Content-Length and the exact body."""

        async def script(ex: Exchange) -> None:
            await ex.send(ok(b"{}"))

        srv = await serve(script)
        await post(
            client, srv.url, b'{"model":"x"}', Authorization="Bearer t", **{"X-Forwarded-For": "1.2.3.4"}
        )
        head = srv.requests[0].head.decode()
        port = srv.url.rsplit(":", 1)[1]
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head
        assert "\r\nAuthorization: Bearer t\r\n" in head
        assert "\r\nX-Forwarded-For: 1.2.3.4\r\n" in head
        assert "\r\nContent-Length: 13\r\n" in head
        assert srv.requests[0].body == b'{"model":"x"}'

    async def test_chunked_split_anywhere(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A chunked answer with extensions and trailers, sent a few bytes at a time, is decoded and the connection reused."""
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"

        async def script(ex: Exchange) -> None:
            for i in range(0, len(wire), 3):
                await ex.send(wire[i : i + 3])

        srv = await serve(script)
        resp = await client.request("GET", srv.url, "/x", [], b"")
        assert resp.content_length is None
        assert await resp.read() == b"hello 0123456789"
        resp.release()
        resp = await client.request("GET", srv.url, "/x", [], b"")
        assert await resp.read() == b"hello 0123456789"
        resp.release()
        assert srv.connections == 1

    async def test_streamed_chunks_arrive_as_sent(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """Each chunk of a streamed answer is readable before the next one is sent."""
        gate = asyncio.Event()

        async def script(ex: Exchange) -> None:
            await ex.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await ex.send(b"6\r\ndata:1\r\n")
            await gate.wait()
            await ex.send(b"6\r\ndata:2\r\n0\r\n\r\n")

        srv = await serve(script)
        resp = await client.request("POST", srv.url, "/s", [], b"{}")
        assert await asyncio.wait_for(resp.readany(), WAIT) == b"data:1"
        gate.set()
        assert await resp.readany() == b"data:2"
        assert await resp.readany() == b""

    async def test_until_close_answer_not_reused(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """An answer with neither length nor chunking ends when the server closes; the next request opens a new connection."""

        async def script(ex: Exchange) -> None:
            await ex.send(b"HTTP/1.1 200 OK\r\n\r\nall of it")
            ex.writer.close()

        srv = await serve(script)
        assert await post(client, srv.url) == (200, b"all of it")
        assert await post(client, srv.url) == (200, b"all of it")
        assert srv.connections == 2

    @pytest.mark.parametrize(
        ("status_line", "extra"),
        [(b"HTTP/1.1 200 OK", b"Connection: close\r\n"), (b"HTTP/1.0 200 OK", b"")],
    )
    async def test_close_semantics(
        self,
        serve: Callable[..., Awaitable[Scripted]],
        client: UpstreamClient,
        status_line: bytes,
        extra: bytes,
    ) -> None:
        """`Connection: close` and an HTTP/1.0 answer without keep-alive are not reused."""

        async def script(ex: Exchange) -> None:
            await ex.send(status_line + b"\r\n" + extra + b"Content-Length: 2\r\n\r\nok")

        srv = await serve(script)
        assert await post(client, srv.url) == (200, b"ok")
        assert await post(client, srv.url) == (200, b"ok")
        assert srv.connections == 2

    async def test_bodyless_answers(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """HEAD (with a Content-Length), 204 and 304 carry no body; an interim 103 is skipped; the connection stays reusable."""
        answers = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n",
            ok(b"last"),
        ]

        async def script(ex: Exchange) -> None:
            await ex.send(answers[ex.index])

        srv = await serve(script)
        seen = []
        for method in ("HEAD", "DELETE", "GET", "GET"):
            resp = await client.request(method, srv.url, "/", [], b"")
            seen.append((resp.status, await resp.read()))
            resp.release()
        assert seen == [(200, b""), (204, b""), (304, b""), (200, b"last")]
        assert srv.connections == 1


class TestFailures:
    async def test_refused(self, client: UpstreamClient) -> None:
        """A port nobody listens on raises ConnectFailed carrying the OS error."""
        port = free_port()
        with pytest.raises(ConnectFailed) as info:
            await post(client, f"http://127.0.0.1:{port}")
        assert isinstance(info.value.os_error, OSError)

    async def test_stale_keepalive_retried_once(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A kept-alive connection the server closed while idle is replaced by a new one without an error."""

        async def script(ex: Exchange) -> None:
            await ex.send(ok(b"x"))
            ex.writer.close()  # the server drops the connection right after answering, keep-alive promised

        srv = await serve(script)
        assert await post(client, srv.url) == (200, b"x")
        await asyncio.wait_for(srv.closed.wait(), WAIT)
        assert await post(client, srv.url) == (200, b"x")
        assert srv.connections == 2

    async def test_closed_before_answer(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A fresh connection closed before any answer raises Disconnected (no retry loop)."""

        async def script(ex: Exchange) -> None:
            ex.writer.close()

        srv = await serve(script)
        with pytest.raises(Disconnected):
            await post(client, srv.url)
        assert srv.connections == 1

    async def test_closed_mid_body(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A body cut short hands on what arrived, then raises Disconnected."""

        async def script(ex: Exchange) -> None:
            await ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            ex.writer.close()

        srv = await serve(script)
        resp = await client.request("GET", srv.url, "/", [], b"")
        assert await resp.readany() == b"partial"
        with pytest.raises(Disconnected):
            await resp.readany()
        resp.release()

    @pytest.mark.parametrize(
        "wire",
        [
            b"HTTZ/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\n",
            b"HTTP/1.1 2\xc2\xb20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
        ],
    )
    async def test_malformed_answers(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient, wire: bytes
    ) -> None:
        """Answers that are not valid HTTP/1.1 raise BadResponse."""

        async def script(ex: Exchange) -> None:
            await ex.send(wire)

        srv = await serve(script)
        with pytest.raises(BadResponse):
            await post(client, srv.url)

    async def test_silence_times_out(self, serve: Callable[..., Awaitable[Scripted]]) -> None:
        """Silence longer than the read timeout raises TimeoutError, before the head and between chunks."""
        release = asyncio.Event()

        async def script(ex: Exchange) -> None:
            if ex.index == 1:
                await ex.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
            await release.wait()

        srv = await serve(script)
        c = UpstreamClient(limit=4, connect_timeout=5, read_timeout=2.0)
        try:
            with pytest.raises(TimeoutError):
                await post(c, srv.url)
            resp = await c.request("GET", srv.url, "/", [], b"")
            assert await resp.readany() == b"a"
            with pytest.raises(TimeoutError):
                await resp.readany()
            resp.release()
        finally:
            release.set()
            await c.close()

    async def test_cancel_closes_connection(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """Cancelling a request that waits for its answer closes the upstream connection (the server sees EOF)."""
        saw_eof = asyncio.Event()
        arrived = asyncio.Event()

        async def script(ex: Exchange) -> None:
            arrived.set()
            await ex.reader.read()  # returns at EOF
            saw_eof.set()

        srv_url = (await serve(script)).url
        task = asyncio.create_task(post(client, srv_url))
        await asyncio.wait_for(arrived.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(saw_eof.wait(), WAIT)

    async def test_unread_answer_not_reused(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A response released before its body was read closes its connection instead of reusing it."""

        async def script(ex: Exchange) -> None:
            await ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")

        srv = await serve(script)
        resp = await client.request("GET", srv.url, "/", [], b"")
        resp.release()
        await asyncio.wait_for(srv.closed.wait(), WAIT)
        assert srv.open_now == 0


class TestPool:
    async def test_limit_is_respected(self, serve: Callable[..., Awaitable[Scripted]]) -> None:
        """With a limit of 2, 10 concurrent requests all succeed over at most 2 open connections."""

        async def script(ex: Exchange) -> None:
            await asyncio.sleep(0.01)
            await ex.send(ok(b"y"))

        srv = await serve(script)
        c = UpstreamClient(limit=2, connect_timeout=5, read_timeout=WAIT)
        try:
            results = await asyncio.gather(*(post(c, srv.url) for _ in range(10)))
        finally:
            await c.close()
        assert results == [(200, b"y")] * 10
        assert srv.most_open <= 2
        assert srv.connections <= 2

    async def test_large_body_with_slow_reader(
        self, serve: Callable[..., Awaitable[Scripted]], client: UpstreamClient
    ) -> None:
        """A 3 MB body read slowly arrives intact (reading pauses and resumes)."""
        payload = bytes(range(256)) * (3 * 4096)

        async def script(ex: Exchange) -> None:
            await ex.send(ok(payload))

        srv = await serve(script)
        resp = await client.request("GET", srv.url, "/", [], b"")
        got = bytearray()
        while chunk := await resp.readany():
            got += chunk
            await asyncio.sleep(0.001)
        resp.release()
        assert bytes(got) == payload
        assert await post(client, srv.url) == (200, payload)
        assert srv.connections == 1

    async def test_closed_client_refuses(self, serve: Callable[..., Awaitable[Scripted]]) -> None:
        """After close(), requests fail with Disconnected instead of opening connections."""

        async def script(ex: Exchange) -> None:
            await ex.send(ok(b"z"))

        srv = await serve(script)
        c = UpstreamClient(limit=2, connect_timeout=5, read_timeout=WAIT)
        assert await post(c, srv.url) == (200, b"z")
        await c.close()
        with pytest.raises(Disconnected):
            await post(c, srv.url)
        await asyncio.wait_for(srv.closed.wait(), WAIT)


class TestSessionFallback:
    async def test_session_path_relays_the_same(
        self, serve: Callable[..., Awaitable[Scripted]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Upstreams the lean client does not speak (https) go through aiohttp's session with the same answers."""
        import aiohttp
        from prometheus_client import CollectorRegistry

        from lora_syncer.proxy.options import ProxyOptions
        from lora_syncer.proxy.service import ProxyService

        async def script(ex: Exchange) -> None:
            if b"stream" in ex.body:
                await ex.send(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"6\r\ndata:1\r\n6\r\ndata:2\r\n0\r\n\r\n"
                )
            else:
                await ex.send(ok(b'{"model":"m"}'))

        srv = await serve(script)
        monkeypatch.setattr(UpstreamClient, "supports", staticmethod(lambda base: False))
        service = ProxyService(
            ProxyOptions(upstream=srv.url, host="127.0.0.1", port=0), registry=CollectorRegistry()
        )
        await service.start()
        try:
            url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
                async with http.post(url, json={"model": "m"}) as resp:
                    assert (resp.status, await resp.read()) == (200, b'{"model":"m"}')
                async with http.post(url, json={"model": "m", "stream": True}) as resp:
                    assert (resp.status, await resp.read()) == (200, b"data:1data:2")
        finally:
            await service.stop(1)
        assert len(srv.requests) == 2
