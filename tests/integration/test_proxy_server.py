"""The proxy port's server (`build_proxy_server`, the proxy's own intake): what an HTTP application
layer would do for it — malformed requests, HEAD, the body-size limit, keep-alive, `Expect: 100-continue` —
checked on the wire with raw sockets where a client library would hide it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from prometheus_client import CollectorRegistry

from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.recorder import ONE_ALIAS_RULES, Recorder, recording_upstream

TIMEOUT = 10.0


@pytest_asyncio.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[ProxyService, Recorder]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_ALIAS_RULES)
    async with recording_upstream() as rec:
        proxy = ProxyService(
            ProxyOptions(
                upstream=rec.url, rules_path=rules, host="127.0.0.1", port=0, max_body_size=4 * 1024 * 1024
            ),
            registry=CollectorRegistry(),
        )
        await proxy.start()
        try:
            yield proxy, rec
        finally:
            await proxy.stop(grace=1.0)


async def read_answer(
    reader: asyncio.StreamReader, *, head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from the wire: status, headers (lower-case names), body by Content-Length."""
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
    return status, headers, body


def post(body: bytes, *, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


CHAT = json.dumps({"model": "alias", "messages": []}).encode()


async def test_malformed_request_is_400_and_closes(proxied: tuple[ProxyService, Recorder]) -> None:
    proxy, rec = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        status, _, _ = await read_answer(reader)
        assert status == 400
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # connection closed after it
    finally:
        writer.close()
    assert rec.seen == []


async def test_keep_alive_serves_requests_in_turn(proxied: tuple[ProxyService, Recorder]) -> None:
    """Several requests on one connection, the second sent only after the first answer."""
    proxy, rec = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for _ in range(3):
            writer.write(post(CHAT))
            status, headers, body = await read_answer(reader)
            assert status == 200
            assert headers.get("connection", "").lower() != "close"
            assert json.loads(body) == {"object": "list", "data": []}
    finally:
        writer.close()
    assert rec.seen == [("POST", "/v1/chat/completions")] * 3


async def test_head_has_no_body(proxied: tuple[ProxyService, Recorder]) -> None:
    proxy, rec = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await read_answer(reader, head=True)
        assert status == 200
        # The next answer on the connection starts right away: no body bytes were sent for HEAD.
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_answer(reader)
        assert status == 200 and body.startswith(b"{")
    finally:
        writer.close()
    assert rec.seen == [("HEAD", "/v1/models"), ("GET", "/v1/models")]


async def test_large_body_up_to_the_limit(proxied: tuple[ProxyService, Recorder]) -> None:
    """--max-body-size (4 MiB here), not aiohttp's 1 MiB default, bounds what the proxy reads."""
    proxy, rec = proxied
    big = json.dumps({"model": "alias", "messages": [], "pad": "x" * (3 * 1024 * 1024)}).encode()
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
        async with http.post(url, data=io.BytesIO(big), headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
        over = big + b" " * (1024 * 1024 + 1)
        async with http.post(
            url, data=io.BytesIO(over), headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 413
    assert rec.seen == [("POST", "/v1/chat/completions")]


async def test_expect_100_continue_on_the_wire(proxied: tuple[ProxyService, Recorder]) -> None:
    """The proxy says `100 Continue` before the client sends the body; an unknown expectation is a 417."""
    proxy, rec = proxied
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        head = post(CHAT, extra="Expect: 100-continue\r\n")[: -len(CHAT)]
        writer.write(head)
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(CHAT)
        status, _, body = await read_answer(reader)
        assert status == 200, body
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(post(CHAT, extra="Expect: something-else\r\n"))
        status, _, body = await read_answer(reader)
        assert status == 417
        assert "Expect" in json.loads(body)["error"]["message"]
    finally:
        writer.close()
    assert rec.seen == [("POST", "/v1/chat/completions")]
