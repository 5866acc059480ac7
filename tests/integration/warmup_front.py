"""A real HTTP front on 127.0.0.1 for the emulator that watches the warm-up route.

Every request is forwarded to the emulator as is, except `POST /v1/completions`, which it also
records (model, start, end, in flight at once), can hold until released (`hold`), and can answer
like vLLM does when inference fails for one adapter (`fail`: 500 with vLLM's error JSON). Until
the emulator has per-adapter inference faults, this is how a test fails one adapter's warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support.http import serving

# vLLM's answer when the engine fails a request (EngineGenerateError surfaces as a 500).
ENGINE_FAILURE = "EngineCore encountered an issue. See stack trace (above) for the root cause."


@dataclass
class Completion:
    model: str
    start: float
    end: float | None = None
    status: int | None = None


@dataclass
class Front:
    url: str = ""
    completions: list[Completion] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)  # model -> error message answered with 500
    hold: dict[str, asyncio.Event] = field(default_factory=dict)  # model -> released when set
    metrics_text: str | None = None  # answered to GET /metrics instead of the emulator's
    in_flight: int = 0
    max_in_flight: int = 0

    def of(self, model: str) -> list[Completion]:
        return [c for c in self.completions if c.model == model]

    def overlaps(self) -> list[tuple[Completion, Completion]]:
        """Pairs of completion requests that were in flight at the same time."""
        done = sorted((c for c in self.completions if c.end is not None), key=lambda c: c.start)
        return [
            (a, b)
            for i, a in enumerate(done)
            for b in done[i + 1 :]
            if b.start < a.end  # type: ignore[operator]
        ]


def vllm_error(message: str, status: int = 500) -> web.Response:
    body = {"error": {"message": message, "type": "InternalServerError", "param": None, "code": status}}
    return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def warmup_front(upstream: str) -> AsyncIterator[Front]:
    front = Front()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def forward(request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as up:
            payload = await up.read()
            ctype = up.headers.get("Content-Type")
            return web.Response(
                status=up.status, body=payload, headers={"Content-Type": ctype} if ctype else {}
            )

    async def completions(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            model = str(json.loads(raw).get("model", ""))
        except ValueError:
            model = ""
        rec = Completion(model, time.monotonic())
        front.completions.append(rec)
        front.in_flight += 1
        front.max_in_flight = max(front.max_in_flight, front.in_flight)
        try:
            gate = front.hold.get(model)
            if gate is not None:
                await gate.wait()
            if model in front.fail:
                resp = vllm_error(front.fail[model])
            else:
                resp = await forward(request, raw)
            rec.status = resp.status
            return resp
        finally:
            front.in_flight -= 1
            rec.end = time.monotonic()

    async def anything(request: web.Request) -> web.Response:
        if request.path == "/metrics" and front.metrics_text is not None:
            return web.Response(text=front.metrics_text, content_type="text/plain")
        return await forward(request, await request.read())

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_route("*", "/{tail:.*}", anything)
    try:
        async with serving(app) as front.url:
            try:
                yield front
            finally:
                for gate in front.hold.values():
                    gate.set()  # a held request must not keep the server's cleanup waiting
    finally:
        await session.close()
