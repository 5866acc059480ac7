"""The proxy's own HTTP/1.1 intake (`lora_syncer.proxy.intake`), on the wire with raw sockets:
pipelining, chunked request bodies, limits on heads and bodies, malformed requests, HTTP/1.0,
the idle timeout, streamed answers, and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.proxy.intake import MAX_HEAD_SIZE
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.recorder import ONE_ALIAS_RULES
from tests.support.wait import eventually

TIMEOUT = 10.0
LIMIT = 64 * 1024


@dataclass
class Upstream:
    url: str = ""
    bodies: list[tuple[str, bytes]] = field(default_factory=list)  # (raw path, body)
    content_lengths: list[str | None] = field(default_factory=list)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class World:
    proxy: ProxyService
    upstream: Upstream


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    up = Upstream()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        up.bodies.append((request.raw_path, body))
        up.content_lengths.append(request.headers.get("Content-Length"))
        model = json.loads(body).get("model") if body else None
        return web.json_response({"model": model, "path": request.raw_path})

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f'data: {{"n": {i}}}\n\n'.encode())
            await asyncio.sleep(0.01)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b'data: {"token": "x"}\n\n')
                await asyncio.sleep(0.02)
        except (asyncio.CancelledError, ConnectionError):
            up.stream_cancelled.set()
            raise

    app = web.Application()
    app.router.add_post("/sse", sse)
    app.router.add_post("/endless", endless)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_ALIAS_RULES)
    proxy = ProxyService(
        ProxyOptions(
            upstream=up.url,
            rules_path=rules,
            host="127.0.0.1",
            port=0,
            max_body_size=LIMIT,
            client_idle_timeout=0.5,
        ),
        registry=CollectorRegistry(),
    )
    await proxy.start()
    try:
        yield World(proxy, up)
    finally:
        await proxy.stop(grace=1.0)
        await runner.cleanup()


async def connect(world: World) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", world.proxy.port, limit=4 * 1024 * 1024)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert status_line, "the connection closed before an answer"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        size = int((await asyncio.wait_for(reader.readline(), TIMEOUT)).strip(), 16)
        data = await asyncio.wait_for(reader.readexactly(size + 2), TIMEOUT)
        if size == 0:
            return out
        out += data[:-2]


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status, headers = await read_head(reader)
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, await read_chunked(reader)
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), TIMEOUT) == b""


def post(path: str, body: bytes, *, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


CHAT = json.dumps({"model": "alias", "messages": []}).encode()


async def test_pipelined_requests_are_answered_in_order(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(b"".join(post(f"/v1/chat/completions?n={i}", CHAT) for i in range(5)))
        for i in range(5):
            status, _, body = await read_answer(reader)
            assert status == 200
            assert json.loads(body) == {"model": "target-v1", "path": f"/v1/chat/completions?n={i}"}
    finally:
        writer.close()
    assert [path for path, _ in world.upstream.bodies] == [f"/v1/chat/completions?n={i}" for i in range(5)]


async def test_a_malformed_request_after_good_ones_is_answered_in_turn(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(post("/v1/chat/completions", CHAT) + b"NOT HTTP AT ALL\r\n\r\n")
        status, _, _ = await read_answer(reader)
        assert status == 200
        status, headers, body = await read_answer(reader)
        assert status == 400
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["message"].startswith("malformed HTTP request")
        assert await closed(reader)
    finally:
        writer.close()


async def test_malformed_request_line_is_a_json_400(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(b"GET /v1/models HTTP/9.Z\r\n\r\n")
        status, _, body = await read_answer(reader)
        assert status == 400
        error = json.loads(body)["error"]
        assert error["type"] == "BadRequestError" and "malformed HTTP request" in error["message"]
        assert await closed(reader)
    finally:
        writer.close()
    assert world.upstream.bodies == []


async def test_oversized_head_is_431(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_SIZE + 10) + b"\r\n\r\n"
        )
        status, _, body = await read_answer(reader)
        assert status == 431
        assert f"over the limit of {MAX_HEAD_SIZE} bytes" in json.loads(body)["error"]["message"]
        assert await closed(reader)
    finally:
        writer.close()
    assert world.upstream.bodies == []


async def test_chunked_request_body_is_read_and_sent_with_a_length(world: World) -> None:
    reader, writer = await connect(world)
    try:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        pieces = [CHAT[:7], CHAT[7:20], CHAT[20:]]
        writer.write(head)
        for piece in pieces:  # in separate writes: the body arrives over time
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        status, _, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["model"] == "target-v1"
    finally:
        writer.close()
    _, sent = world.upstream.bodies[0]
    assert json.loads(sent) == {"model": "target-v1", "messages": []}
    assert world.upstream.content_lengths == [str(len(sent))]


async def test_broken_chunked_body_is_400(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"mod\r\nzz\r\n'
        )
        status, _, body = await read_answer(reader)
        assert status == 400
        assert "chunked" in json.loads(body)["error"]["message"]
        assert await closed(reader)
    finally:
        writer.close()
    assert world.upstream.bodies == []


async def test_chunked_body_over_the_limit_is_413(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 16 * 1024
        for _ in range(5):  # 80 KiB: over the 64 KiB limit
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert status == 413
        assert headers["connection"] == "close"
        assert "over the limit" in json.loads(body)["error"]["message"]
    finally:
        writer.close()
    assert world.upstream.bodies == []


async def test_declared_length_over_the_limit_is_refused_before_the_body(world: World) -> None:
    """The 413 comes without the body being sent, and is readable before the connection closes."""
    reader, writer = await connect(world)
    try:
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        status, headers, body = await read_answer(reader)
        assert status == 413
        assert headers["connection"] == "close"
        assert f"{LIMIT + 1} bytes" in json.loads(body)["error"]["message"]
    finally:
        writer.close()


async def test_expect_continue_is_not_sent_when_the_body_came_with_the_head(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(post("/v1/chat/completions", CHAT, extra="Expect: 100-continue\r\n"))
        status, _, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["model"] == "target-v1"
    finally:
        writer.close()


async def test_http_1_0_answer_closes_the_connection(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(post("/v1/chat/completions", CHAT, version="1.0"))
        status, headers, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["model"] == "target-v1"
        assert headers["connection"] == "close"
        assert await closed(reader)
    finally:
        writer.close()


async def test_http_1_0_stream_is_not_chunked_and_ends_with_the_connection(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(post("/sse", CHAT, version="1.0"))
        status, headers = await read_head(reader)
        assert status == 200
        assert "transfer-encoding" not in headers and "content-length" not in headers
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the proxy closes
        assert rest.endswith(b"data: [DONE]\n\n") and rest.count(b"data:") == 4
    finally:
        writer.close()


async def test_streamed_answer_is_chunked_and_keeps_the_connection(world: World) -> None:
    reader, writer = await connect(world)
    try:
        for _ in range(2):
            writer.write(post("/sse", CHAT))
            status, headers, body = await read_answer(reader)
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            assert body == b'data: {"n": 0}\n\ndata: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'
    finally:
        writer.close()


async def test_head_request_gets_no_body(world: World) -> None:
    reader, writer = await connect(world)
    try:
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = await read_head(reader)
        assert status == 200
        status, _, body = await read_answer(reader)  # right after the HEAD answer's head
        assert status == 200 and json.loads(body)["path"] == "/v1/models"
    finally:
        writer.close()


async def test_idle_keep_alive_connection_is_closed(world: World) -> None:
    """--client-idle-timeout (0.5 s here) closes a connection no request arrives on."""
    reader, writer = await connect(world)
    try:
        writer.write(post("/v1/chat/completions", CHAT))
        status, headers, _ = await read_answer(reader)
        assert status == 200 and headers.get("connection") != "close"
        assert await closed(reader)  # within TIMEOUT, long before any test timeout
    finally:
        writer.close()


async def test_client_leaving_mid_stream_aborts_the_upstream(world: World) -> None:
    reader, writer = await connect(world)
    writer.write(post("/endless", CHAT))
    status, headers = await read_head(reader)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert b"data:" in await asyncio.wait_for(reader.readuntil(b"\n\n"), TIMEOUT)
    writer.transport.abort()  # the client goes away without a word
    await asyncio.wait_for(world.upstream.stream_cancelled.wait(), TIMEOUT)
    await eventually(lambda: world.proxy.core.in_flight == 0, message="the proxy's request ended")
