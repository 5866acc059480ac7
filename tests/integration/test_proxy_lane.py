"""The proxy's fast lane (`lora_syncer.proxy.lane`) on the wire: a scripted upstream on 127.0.0.1
answers each request as the test says, so every way out of the lane is taken: the answer relayed
from callbacks, a keep-alive connection the upstream had closed, silence, a streamed answer, an
answer broken off, a client that leaves, requests pipelined behind a lane request, and a bug."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from lora_syncer.proxy.forward import Forwarder
from lora_syncer.proxy.intake import IntakeRequest
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.recorder import ONE_ALIAS_RULES
from tests.support.wait import eventually

TIMEOUT = 10.0


@dataclass
class Seen:
    """One request as the scripted upstream received it."""

    index: int
    connection: int
    body: dict[str, Any]
    writer: asyncio.StreamWriter


Answer = Callable[[Seen], Awaitable[None]]


def json_answer(seen: Seen) -> bytes:
    body = json.dumps(
        {"model": seen.body.get("model"), "n": seen.index, "choices": [{"finish_reason": "stop"}]}
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )


async def answer_json(seen: Seen) -> None:
    seen.writer.write(json_answer(seen))


@dataclass
class Upstream:
    """Answers request i with `script[i]` (the last one for the rest)."""

    script: list[Answer] = field(default_factory=lambda: [answer_json])
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed_by_proxy: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_proxy.set()
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                seen = Seen(len(self.seen), number, json.loads(body) if body else {}, writer)
                self.seen.append(seen)
                await self.script[min(seen.index, len(self.script) - 1)](seen)
                if writer.is_closing():
                    return
        finally:
            writer.close()


@dataclass
class World:
    proxy: ProxyService
    upstream: Upstream
    lane: list[str]  # per request offered to the lane: "lane" (kept) or "handed on"


def record_lane(proxy: ProxyService) -> list[str]:
    """Per request the lane took, in order: "lane" (kept there) or "handed on" (to the task).

    Wraps the started server's lane hook (an attribute, so this works on the compiled build too,
    where a module function's callers are bound at build time).
    """
    outcomes: list[str] = []
    server = proxy._server
    assert server is not None and server.lane is not None, "start the proxy first"
    real = server.lane

    def recording(request: IntakeRequest) -> bool:
        taken = real(request)
        if taken:
            outcomes.append("handed on" if request.resume is not None else "lane")
        return taken

    server.lane = recording
    return outcomes


def without_lane(proxy: ProxyService) -> None:
    """Every request of this started proxy goes the task's way."""
    assert proxy._server is not None, "start the proxy first"
    proxy._server.lane = None


async def start_upstream(upstream: Upstream) -> asyncio.Server:
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    return server


async def stop_upstream(upstream: Upstream, server: asyncio.Server) -> None:
    server.close()
    for task in upstream.tasks:
        task.cancel()
    await asyncio.gather(*upstream.tasks, return_exceptions=True)


def proxy_to(upstream: Upstream, tmp_path: Path, **options: Any) -> ProxyService:
    """A proxy in front of `upstream` with the one-alias rules (alias -> target-v1)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_ALIAS_RULES)
    return ProxyService(
        ProxyOptions(upstream=upstream.url, rules_path=rules, host="127.0.0.1", port=0, **options),
        registry=CollectorRegistry(),
    )


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    upstream = Upstream()
    server = await start_upstream(upstream)
    proxy = proxy_to(upstream, tmp_path, upstream_timeout=0.5, client_idle_timeout=5.0)
    await proxy.start()
    lane = record_lane(proxy)
    try:
        yield World(proxy, upstream, lane)
    finally:
        await proxy.stop(grace=1.0)
        await stop_upstream(upstream, server)


def post(path: str = "/v1/chat/completions", model: str = "alias") -> bytes:
    body = json.dumps({"model": model, "messages": []}).encode()
    return (
        b"POST %b HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (path.encode(), len(body), body)
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one answer, framed by length or by chunks."""
    line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert line, "the connection closed before an answer"
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (raw := await asyncio.wait_for(reader.readline(), TIMEOUT)) not in (b"\r\n", b""):
        name, _, value = raw.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return (
            status,
            headers,
            await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT),
        )
    assert headers.get("transfer-encoding") == "chunked", headers
    body = b""
    while True:
        size = int((await asyncio.wait_for(reader.readline(), TIMEOUT)).strip(), 16)
        chunk = await asyncio.wait_for(reader.readexactly(size + 2), TIMEOUT)
        if size == 0:
            return status, headers, body
        body += chunk[:-2]


async def connect(world: World) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", world.proxy.port)


async def warm(world: World, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request the usual way: afterwards the proxy holds an idle upstream connection."""
    writer.write(post())
    status, _, _ = await read_answer(reader)
    assert status == 200
    assert world.lane == ["handed on"]  # no idle upstream connection yet: the task sent it


def requests_total(world: World, status: str) -> float:
    child = world.proxy.metrics.requests._children.get(("alias", "target-v1", status))
    return child.value if child is not None else 0.0


async def test_json_answers_on_a_reused_connection_are_relayed_by_the_lane(world: World) -> None:
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    for n in (1, 2):
        writer.write(post())
        status, headers, body = await read_answer(reader)
        assert status == 200
        assert json.loads(body) == {"model": "target-v1", "n": n, "choices": [{"finish_reason": "stop"}]}
        assert headers["x-lora-syncer-served-model"] == "target-v1"
    assert world.lane == ["handed on", "lane", "lane"]
    assert world.upstream.connections == 1  # one keep-alive connection carried all three
    assert [s.body["model"] for s in world.upstream.seen] == ["target-v1"] * 3
    assert requests_total(world, "200") == 3
    finish = world.proxy.telemetry.finish_reasons._children[("alias", "target-v1", "stop")]
    assert finish.value == 3  # the answer's facts reach the observers on the lane too
    assert world.proxy.core.in_flight == 0
    writer.close()


async def test_a_keep_alive_connection_the_upstream_closed_is_sent_again_on_a_new_one(world: World) -> None:
    async def close_silently(seen: Seen) -> None:
        seen.writer.close()  # as a server that dropped an idle connection just as the request came

    world.upstream.script = [answer_json, close_silently, answer_json]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["n"] == 2
    assert world.lane == ["handed on", "lane"]
    assert world.upstream.connections == 2
    writer.close()


async def test_silence_on_the_lane_is_a_504_and_the_connection_is_not_reused(world: World) -> None:
    async def silent(seen: Seen) -> None:
        await asyncio.sleep(3.0)

    world.upstream.script = [answer_json, silent, answer_json]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    status, _, body = await read_answer(reader)
    assert status == 504 and b"did not answer in time" in body
    writer.write(post())
    status, _, _ = await read_answer(reader)
    assert status == 200
    assert world.upstream.connections == 2  # the silent one was closed, not handed out again
    writer.close()


async def test_a_streamed_answer_is_handed_to_the_task_and_relayed_whole(world: World) -> None:
    async def stream(seen: Seen) -> None:
        seen.writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(3):
            event = b'data: {"model": "target-v1", "n": %d}\n\n' % i
            seen.writer.write(b"%x\r\n%b\r\n" % (len(event), event))
            await seen.writer.drain()
            await asyncio.sleep(0.02)
        seen.writer.write(b"0\r\n\r\n")

    world.upstream.script = [answer_json, stream, answer_json]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    status, headers, body = await read_answer(reader)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert body.count(b"data: ") == 3 and b'"n": 2' in body
    writer.write(post())  # the connection and the upstream's keep-alive both stay usable
    status, _, _ = await read_answer(reader)
    assert status == 200
    assert world.lane == ["handed on", "lane", "lane"]
    writer.close()


async def test_an_answer_broken_off_mid_body_is_a_502(world: World) -> None:
    async def broken(seen: Seen) -> None:
        seen.writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await seen.writer.drain()
        seen.writer.close()

    world.upstream.script = [answer_json, broken, answer_json]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    status, _, body = await read_answer(reader)
    assert status == 502 and b"closed the connection" in body
    assert world.proxy.telemetry.errors._children[("alias", "target-v1", "broken_stream")].value == 1
    writer.close()


async def test_a_client_that_leaves_closes_the_upstream_call(world: World) -> None:
    async def slow(seen: Seen) -> None:
        await asyncio.sleep(5.0)

    world.upstream.script = [answer_json, slow]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    await eventually(lambda: len(world.upstream.seen) == 2, timeout=TIMEOUT)
    writer.close()
    await asyncio.wait_for(world.upstream.closed_by_proxy.wait(), TIMEOUT)  # vLLM would abort the generation
    await eventually(lambda: world.proxy.core.in_flight == 0, timeout=TIMEOUT)
    assert requests_total(world, "499") == 1
    assert world.proxy.metrics.forwarding == 0
    assert world.lane == ["handed on", "lane"]


async def test_requests_pipelined_behind_a_lane_request_are_answered_in_order(world: World) -> None:
    async def late(seen: Seen) -> None:
        await asyncio.sleep(0.2)  # the lane's answer comes last; it must still go out first
        await answer_json(seen)

    world.upstream.script = [answer_json, late, answer_json]
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post() + post() + post())
    ns = []
    for _ in range(3):
        status, _, body = await read_answer(reader)
        assert status == 200
        ns.append(json.loads(body)["n"])
    assert ns == [1, 2, 3]
    assert world.lane[:2] == ["handed on", "lane"]
    writer.close()


async def test_a_bug_in_the_lane_is_a_500_and_the_proxy_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Forwarder.send_whole
    calls = 0

    def once_broken(self: Forwarder, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug")
        real(self, *args)

    monkeypatch.setattr(Forwarder, "send_whole", once_broken)
    reader, writer = await connect(world)
    await warm(world, reader, writer)
    writer.write(post())
    status, _, body = await read_answer(reader)
    assert status == 500 and b"internal error in the proxy" in body
    writer.close()
    reader, writer = await connect(world)
    writer.write(post())
    status, _, _ = await read_answer(reader)
    assert status == 200
    await eventually(lambda: world.proxy.core.in_flight == 0, timeout=TIMEOUT)
    assert world.proxy.metrics.forwarding == 0
    writer.close()


async def test_a_refusal_is_answered_from_the_lane(world: World) -> None:
    reader, writer = await connect(world)
    body = b"{not json"
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    status, _, answer = await read_answer(reader)
    assert status == 400 and b"not valid JSON" in answer
    assert world.lane == ["lane"]
    writer.write(post())  # the connection stays usable
    status, _, _ = await read_answer(reader)
    assert status == 200
    assert world.proxy.metrics.refused.labels("bad_request")._value.get() == 1
    writer.close()


# --- the lane and the task path answer alike ------------------------------------------------

STATUSES = (200, 201, 400, 404, 500, 503)
CONTENT_TYPES = ("application/json", "text/event-stream", "text/plain", "application/x-ndjson")
FRAMINGS = ("length", "chunked", "close")
SIZES = (0, 40, 3000, 300_000)  # the last is over the lane's 256 KiB: handed to the task


def answer_from_spec(spec: dict[str, Any]) -> bytes:
    """The upstream's answer, all of it decided by the request (so both proxies get the same)."""
    fill = "x" * max(0, spec["size"] - 80)
    if spec["ctype"] == "text/event-stream":
        body = b'data: {"model": "target-v1", "choices": [{"finish_reason": "stop"}]}\n\n' + fill.encode()
    else:
        body = json.dumps(
            {
                "model": "target-v1",
                "pad": fill,
                "choices": [{"finish_reason": "length"}],
                "usage": {"completion_tokens": 3},
            }
        ).encode()
    head = b"HTTP/1.1 %d X\r\nContent-Type: %b\r\nX-Upstream: 1\r\n" % (
        spec["status"],
        spec["ctype"].encode(),
    )
    if spec["framing"] == "length":
        return head + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    if spec["framing"] == "chunked":
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (body[:7], body[7:]) if part)
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    return head + b"Connection: close\r\n\r\n" + body


@pytest.mark.parametrize("response_model", ["served", "requested"])
async def test_the_lane_and_the_task_path_answer_alike(tmp_path: Path, response_model: str) -> None:
    """The same random answers through a proxy with the lane and one without: same status,
    headers (but Date) and body for the client, and the same counts in the metrics."""
    import random

    async def by_spec(seen: Seen) -> None:
        seen.writer.write(answer_from_spec(seen.body["spec"]))
        if seen.body["spec"]["framing"] == "close":
            seen.writer.close()

    upstream = Upstream(script=[by_spec])
    server = await start_upstream(upstream)
    proxies = []
    for lane in (True, False):
        proxy = proxy_to(upstream, tmp_path, response_model=response_model)
        await proxy.start()
        if lane:
            outcomes = record_lane(proxy)
        else:
            without_lane(proxy)
        proxies.append(proxy)
    rng = random.Random(11)
    try:
        conns = [await asyncio.open_connection("127.0.0.1", p.port, limit=2**20) for p in proxies]
        for case in range(120):
            spec = {
                "status": rng.choice(STATUSES),
                "ctype": rng.choice(CONTENT_TYPES),
                "framing": rng.choice(FRAMINGS),
                "size": rng.choice(SIZES),
            }
            body = json.dumps({"model": "alias", "spec": spec}).encode()
            request = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
            )
            answers = []
            for reader, writer in conns:
                writer.write(request)
                status, headers, got = await read_answer(reader)
                headers.pop("date", None)
                answers.append((status, headers, got))
            assert answers[0] == answers[1], f"case {case}: {spec}"
        # Both ways out of the lane were taken many times (answered there; handed on to the task).
        assert outcomes.count("lane") > 20 and outcomes.count("handed on") > 20, outcomes
        lane_metrics, task_metrics = (p.metrics for p in proxies)
        assert {k: c.value for k, c in lane_metrics.requests._children.items()} == {
            k: c.value for k, c in task_metrics.requests._children.items()
        }
        lane_tel, task_tel = (p.telemetry for p in proxies)
        for family in ("finish_reasons", "completion_tokens", "errors"):
            assert {k: c.value for k, c in getattr(lane_tel, family)._children.items()} == {
                k: c.value for k, c in getattr(task_tel, family)._children.items()
            }, family
        for _, writer in conns:
            writer.close()
    finally:
        for proxy in proxies:
            await proxy.stop(grace=1.0)
        await stop_upstream(upstream, server)
