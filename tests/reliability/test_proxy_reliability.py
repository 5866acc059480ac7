"""The proxy under load and faults, and against slow or abusive clients: every request gets a
correct answer or an OpenAI-style error, nothing hangs, streams that clients abandon free their
upstream request, the split is exact where the rules were stable, and limits hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.service import ProxyService
from tests.support.http import is_openai_error
from tests.support.reliability.files import RULES_KEY, rules_yaml, source_of
from tests.support.reliability.proxy_scenarios import ALIAS, V1, V2, ProxyLoadResult, run_proxy_under_faults
from tests.support.reliability.world import proxy_options
from tests.support.wait import WAIT, eventually


def _enough(result: ProxyLoadResult) -> bool:
    """3 restarts, 5 rules changes, over 100 correct answers and some faults seen by clients as errors."""
    return (
        result.restarts >= 3
        and result.rules_changes >= 5
        and result.correct > 100
        and result.openai_errors > 0
    )


async def test_load_through_restarts_and_rule_changes(tmp_path: Path) -> None:
    """8 clients while vLLM restarts 3 times and the rules change 5 times: only correct answers or OpenAI errors, none hung, exact split after."""
    result = await run_proxy_under_faults(tmp_path, seconds=0.0, until=_enough)
    assert result.violations == []
    # The load ran until these held (bounded by max_seconds): they say the faults did reach clients.
    assert _enough(result), (result.restarts, result.rules_changes, result.correct, result.openai_errors)
    assert len(result.split) == 5


@dataclass
class Tracker:
    """What the upstream saw: requests running now, the most at once, and those cancelled by a gone client."""

    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    finished: int = 0


@dataclass
class Rig:
    emulator: Emulator
    tracker: Tracker
    proxy: ProxyService
    registry: CollectorRegistry

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.proxy.port}{path}"

    def gauge(self, name: str) -> float:
        return float(self.registry.get_sample_value(name) or 0.0)


def _tracking(tracker: Tracker) -> Any:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        tracker.in_flight += 1
        tracker.max_in_flight = max(tracker.max_in_flight, tracker.in_flight)
        try:
            response = await handler(request)
            tracker.finished += 1
            return response
        except asyncio.CancelledError:
            tracker.cancelled += 1
            raise
        finally:
            tracker.in_flight -= 1

    return middleware


@pytest_asyncio.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """`await rig_factory(**proxy_overrides)`: the emulator's app behind a tracking middleware, and a proxy before it."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(**overrides: Any) -> Rig:
        emulator = Emulator(EmulatorConfig(seed=1))
        emulator.preload({V1: source_of(V1), V2: source_of(V2)})
        tracker = Tracker()
        app = emulator.build_app()
        app.middlewares.append(_tracking(tracker))
        # As vLLM does, a client that disconnects cancels its request.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        cleanups.append(runner.cleanup)
        upstream = f"http://127.0.0.1:{runner.addresses[0][1]}"
        volume = ConfigMapVolume(tmp_path / f"rules{len(cleanups)}")
        volume.write({RULES_KEY: rules_yaml(ALIAS, [(V1, 50), (V2, 50)])})
        registry = CollectorRegistry()
        proxy = ProxyService(proxy_options(upstream, volume.path(RULES_KEY), **overrides), registry=registry)
        await proxy.start()
        cleanups.append(lambda: proxy.stop(1.0))
        return Rig(emulator, tracker, proxy, registry)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


def chat(stream: bool = False, tokens: int = 4) -> dict[str, Any]:
    return {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": tokens,
        "stream": stream,
    }


async def test_abandoned_streams_free_their_upstream_requests(
    rig_factory: Callable[..., Awaitable[Rig]], http: aiohttp.ClientSession
) -> None:
    """Ten streaming clients that leave after two chunks: the upstream sees ten cancels and the active-streams gauge returns to 0."""
    rig = await rig_factory()
    rig.emulator.faults.token_delay = 0.05  # a 400-token answer would take 20 s

    async def leave_early() -> None:
        async with http.post(rig.url("/v1/chat/completions"), json=chat(stream=True, tokens=400)) as resp:
            assert resp.status == 200
            for _ in range(2):
                await resp.content.readline()
            resp.close()  # the client goes away mid-answer

    await asyncio.gather(*(leave_early() for _ in range(10)))
    await eventually(lambda: rig.tracker.cancelled == 10, message=lambda: rig.tracker)
    await eventually(lambda: rig.gauge("lora_syncer_proxy_active_streams") == 0)
    assert rig.tracker.in_flight == 0 and rig.proxy.core.in_flight == 0
    assert rig.gauge("lora_syncer_proxy_client_disconnects_total") == 10


async def test_body_over_the_limit_is_413(
    rig_factory: Callable[..., Awaitable[Rig]], http: aiohttp.ClientSession
) -> None:
    """A body over --max-body-size gets a 413 OpenAI error, declared by Content-Length or sent chunked, and never reaches vLLM."""
    rig = await rig_factory(max_body_size=64 * 1024)
    big = b'{"model": "canary", "prompt": "' + b"x" * (80 * 1024) + b'"}'
    async with http.post(
        rig.url("/v1/completions"), data=big, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert is_openai_error(await resp.json())

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with http.post(
        rig.url("/v1/completions"), data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert is_openai_error(await resp.json())
    assert rig.tracker.finished == 0 and rig.tracker.cancelled == 0
    async with http.post(
        rig.url("/v1/completions"), json={"model": ALIAS, "prompt": "x", "max_tokens": 1}
    ) as resp:
        assert resp.status == 200  # the limit costs normal requests nothing


async def _slowloris(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def test_slow_clients_do_not_starve_normal_ones(
    rig_factory: Callable[..., Awaitable[Rig]], http: aiohttp.ClientSession
) -> None:
    """100 connections stuck in headers or trickling bodies: normal clients still get answers, and the proxy closes the slow ones."""
    rig = await rig_factory(client_idle_timeout=1.0, client_body_timeout=1.0)
    partial_headers = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
    partial_body = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"model": "canary", '
    )
    slow = [await _slowloris(rig.proxy.port, partial_headers) for _ in range(50)]
    slow += [await _slowloris(rig.proxy.port, partial_body) for _ in range(50)]
    try:
        answered = 0
        for _ in range(20):
            async with http.post(
                rig.url("/v1/completions"), json={"model": ALIAS, "prompt": "x", "max_tokens": 1}
            ) as resp:
                assert resp.status == 200
                answered += 1
        assert answered == 20

        async def closed(reader: asyncio.StreamReader) -> bytes:
            return await asyncio.wait_for(reader.read(), timeout=WAIT)

        answers = await asyncio.gather(*(closed(r) for r, _ in slow))
        # Stuck headers: closed without an answer. Trickling bodies: 408 in the OpenAI shape.
        assert all(a == b"" for a in answers[:50])
        assert all(a.startswith(b"HTTP/1.1 408") and b'"RequestTimeoutError"' in a for a in answers[50:])
        assert rig.tracker.finished == 20  # none of the slow requests reached vLLM
    finally:
        for _, writer in slow:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_upstream_connections_are_capped(
    rig_factory: Callable[..., Awaitable[Rig]], http: aiohttp.ClientSession
) -> None:
    """With --upstream-connections 3, twelve concurrent streams never have more than three requests at vLLM at once; all finish."""
    rig = await rig_factory(upstream_connections=3)
    rig.emulator.faults.token_delay = 0.01

    async def one() -> int:
        async with http.post(rig.url("/v1/chat/completions"), json=chat(stream=True, tokens=10)) as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(12)))
    assert statuses == [200] * 12
    assert rig.tracker.max_in_flight <= 3
    assert rig.tracker.finished == 12


async def test_silent_upstream_is_504_not_a_hang(
    rig_factory: Callable[..., Awaitable[Rig]], http: aiohttp.ClientSession
) -> None:
    """An upstream that goes silent beyond --upstream-timeout gets the client a 504 OpenAI error, not a hung connection."""
    rig = await rig_factory(upstream_timeout=0.3)
    rig.emulator.faults.latency = {"completions": 5.0}
    async with http.post(
        rig.url("/v1/completions"), json={"model": ALIAS, "prompt": "x", "max_tokens": 1}
    ) as resp:
        assert resp.status == 504
        assert is_openai_error(await resp.json())
    await eventually(lambda: rig.tracker.in_flight == 0)
