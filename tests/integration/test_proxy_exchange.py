"""The exchange observer: one record per request with alias, target, pool, timings, outcome and what the answer said.

A tiny scripted upstream on 127.0.0.1 answers by the requested target, so each outcome the
next feature (canary telemetry) counts can be produced on purpose.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.proxy.exchange import NO_TARGET, Exchange
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService

ALIAS = "canary"
RULES = """\
kind: InferenceModelRewrite
metadata: {name: canary-rewrite}
spec:
  rules:
  - matches: [{model: {value: canary}}]
    targets:
    - {modelRewrite: TARGET, weight: 1}
  - matches: [{model: {value: drained}}]
    targets:
    - {modelRewrite: nowhere, weight: 0}
"""
TIMEOUT = aiohttp.ClientTimeout(total=20)


def _sse(*events: dict[str, Any] | str) -> bytes:
    out = b""
    for event in events:
        out += event.encode() if isinstance(event, str) else b"data: " + json.dumps(event).encode() + b"\n\n"
    return out


async def _upstream_app() -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        if model == "json-ok":
            return web.json_response(
                {
                    "model": model,
                    "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
                }
            )
        if model == "server-error":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if model == "slow":
            await asyncio.sleep(30)
        if model == "not-found":
            return web.json_response({"error": {"message": "no such model"}}, status=404)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if model == "sse-ok":
            # Split one event across writes: the facts must still be read.
            wire = _sse(
                {"choices": [{"delta": {"content": "a"}, "finish_reason": None}]},
                {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
                "data: [DONE]\n\n",
            )
            for i in range(0, len(wire), 17):
                await resp.write(wire[i : i + 17])
        elif model == "sse-error":
            await resp.write(_sse({"choices": [{"delta": {"content": "a"}}]}))
            await resp.write(_sse({"error": {"message": "engine died", "code": 500}}))
        elif model == "sse-broken":
            await resp.write(_sse({"choices": [{"delta": {"content": "a"}}]}))
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


class _Rig:
    def __init__(self, tmp: Path, upstream: str) -> None:
        self.tmp = tmp
        self.upstream = upstream
        self.seen: list[Exchange] = []
        self.services: list[ProxyService] = []
        self.registry = CollectorRegistry()

    async def start(self, target: str, upstream: str | None = None) -> ProxyService:
        rules = self.tmp / f"rules-{len(self.services)}.yaml"
        rules.write_text(RULES.replace("TARGET", target))
        self.registry = CollectorRegistry()
        service = ProxyService(
            ProxyOptions(upstream=upstream or self.upstream, rules_path=rules, host="127.0.0.1", port=0),
            registry=self.registry,
        )
        await service.start()
        self.services.append(service)
        service.core.observers.append(self.seen.append)
        return service

    async def ask(self, service: ProxyService, model: str = ALIAS, **extra: Any) -> int:
        url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            try:
                async with http.post(url, json={"model": model, "messages": [], **extra}) as resp:
                    await resp.read()
                    return resp.status
            except aiohttp.ClientPayloadError:
                return -1  # the proxy cut the answer short

    def last(self) -> Exchange:
        assert self.seen, "no exchange observed"
        return self.seen[-1]

    def requests_total(self, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(generate_latest(self.registry).decode()):
            for sample in family.samples:
                if sample.name == "lora_syncer_proxy_requests_total" and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[_Rig]:
    # Handler cancellation: the proxy closing its upstream connection ends the "slow" answer at once.
    runner = web.AppRunner(await _upstream_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    r = _Rig(tmp_path, f"http://127.0.0.1:{port}")
    try:
        yield r
    finally:
        for service in r.services:
            await service.stop(1)
        await runner.cleanup()


async def test_json_answer_facts_and_timings(rig: _Rig) -> None:
    """A JSON answer: alias, target, pool, status, finish_reason, completion tokens, ordered timings, no error."""
    proxy = await rig.start("json-ok")
    assert await rig.ask(proxy) == 200
    ex = rig.last()
    assert (ex.alias, ex.target, ex.pool, ex.status) == (ALIAS, "json-ok", "default", 200)
    assert (ex.finish_reason, ex.completion_tokens, ex.error, ex.client_closed) == ("length", 7, None, False)
    assert ex.first_chunk is not None and ex.head_sent is not None and ex.ended is not None
    assert ex.started <= ex.first_chunk <= ex.head_sent <= ex.ended


async def test_sse_answer_facts_across_split_events(rig: _Rig) -> None:
    """A streamed answer cut at odd places still yields finish_reason and usage; time to first chunk is set."""
    proxy = await rig.start("sse-ok")
    assert await rig.ask(proxy, stream=True) == 200
    ex = rig.last()
    assert (ex.finish_reason, ex.completion_tokens, ex.error) == ("stop", 2, None)
    assert ex.first_chunk is not None and ex.ended is not None and ex.first_chunk <= ex.ended


@pytest.mark.parametrize(
    ("target", "status", "error"),
    [
        ("server-error", 500, "upstream_5xx"),
        ("not-found", 404, None),  # a 4xx is the client's problem, not the upstream's
        ("sse-error", 200, "sse_error"),
        ("sse-broken", -1, "broken_stream"),
    ],
)
async def test_error_classes(rig: _Rig, target: str, status: int, error: str | None) -> None:
    """Each upstream failure has its class; 4xx answers are not errors."""
    proxy = await rig.start(target)
    assert await rig.ask(proxy, stream=target.startswith("sse")) == status
    ex = rig.last()
    assert (ex.alias, ex.target, ex.error) == (ALIAS, target, error)


async def test_unreachable_upstream_is_a_connect_error_under_its_target(rig: _Rig) -> None:
    """A closed port: 502, class `connect`, and the metrics count it under the alias and target (not empty labels)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proxy = await rig.start("json-ok", upstream=closed)
    assert await rig.ask(proxy) == 502
    ex = rig.last()
    assert (ex.alias, ex.target, ex.error, ex.refused) == (ALIAS, "json-ok", "connect", "upstream")
    assert rig.requests_total(alias=ALIAS, target="json-ok", status="502") == 1


async def test_failure_before_a_target_is_labelled_none(rig: _Rig) -> None:
    """A drained alias (503) is counted under its alias with target `(none)`; a refused control route too."""
    proxy = await rig.start("json-ok")
    assert await rig.ask(proxy, model="drained") == 503
    ex = rig.last()
    assert (ex.alias, ex.target, ex.target_label, ex.refused) == ("drained", None, NO_TARGET, "drained")
    assert rig.requests_total(alias="drained", target=NO_TARGET, status="503") == 1
    admin = f"http://127.0.0.1:{proxy.port}/v1/load_lora_adapter"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.post(admin, json={}) as resp:
        assert resp.status == 403
    assert rig.requests_total(alias="", target=NO_TARGET, status="403") == 1


async def test_client_that_leaves_is_not_an_upstream_error(rig: _Rig) -> None:
    """A client gone while the upstream is still working: status 499, client_closed, no error class."""
    proxy = await rig.start("slow")
    url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(TimeoutError):
            async with http.post(url, json={"model": ALIAS, "messages": []}) as resp:
                await resp.read()
    for _ in range(1500):  # the handler is cancelled once the proxy sees the connection close
        if rig.seen:
            break
        await asyncio.sleep(0.01)
    ex = rig.last()
    assert (ex.status, ex.client_closed, ex.error, ex.target) == (499, True, None, "slow")


async def test_failing_observer_does_not_fail_the_request(rig: _Rig) -> None:
    """An observer that raises is logged; the client still gets its answer and later observers still run."""
    proxy = await rig.start("json-ok")

    def broken(ex: Exchange) -> None:
        raise RuntimeError("observer bug")

    proxy.core.observers.insert(0, broken)
    assert await rig.ask(proxy) == 200
    assert rig.last().status == 200
