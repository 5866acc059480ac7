"""Throughput of the vLLM emulator, against a bare aiohttp server measured in the same run.

Runs each server in its own process (one core each at most) and drives it from this process
with a pool of aiohttp clients for a fixed time. Prints requests/second for:

- POST /v1/chat/completions (plain, 16 tokens) vs a bare handler returning a constant body;
- GET /v1/models with 10,000 adapters registered vs a bare handler returning a body of the same size;
- loading the 10,000 adapters through POST /v1/load_lora_adapter (absolute figure).

Each figure is the median of 3 alternating rounds (never the best one).

Usage: .venv/bin/python -m bench.bench_emulator [--seconds 1.5] [--concurrency 32] [--adapters 10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.net import free_port

CHAT_BODY = {"model": "base", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}

# A bare aiohttp server: /const answers a fixed chat-sized JSON body, /big a body of N bytes.
BASELINE = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    port, big = int(sys.argv[1]), int(sys.argv[2])
    small = b'{"id":"chatcmpl-0","object":"chat.completion","model":"base","choices":[]}' * 8
    large = b"x" * big
    async def const(request):
        await request.read()
        return web.Response(body=small, content_type="application/json")
    async def bigger(request):
        return web.Response(body=large, content_type="application/json")
    app = web.Application()
    app.router.add_post("/const", const)
    app.router.add_get("/big", bigger)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)
    """
)


@contextlib.asynccontextmanager
async def server(args: list[str], health_url: str) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(500):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(health_url) as resp:
                        await resp.read()
                        break
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"server {args} did not start")
        yield
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def rate(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, seconds: float, concurrency: int
) -> tuple[float, int]:
    """(requests/second, non-200 answers) over `seconds` with `concurrency` clients."""
    deadline = time.perf_counter() + seconds
    done = 0
    bad = 0

    async def worker() -> None:
        nonlocal done, bad
        while time.perf_counter() < deadline:
            async with http.request(method, url, json=body) as resp:
                await resp.read()
                done += 1
                bad += resp.status != 200

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start), bad


async def paired(
    http: aiohttp.ClientSession,
    emulator: tuple[str, str, Any],
    baseline: tuple[str, str, Any],
    seconds: float,
    concurrency: int,
    rounds: int = 3,
) -> tuple[float, float, int]:
    """Median-of-`rounds` rates of emulator and baseline, measured alternately so drift hits both."""
    emu_rates: list[float] = []
    base_rates: list[float] = []
    bad_total = 0
    for _ in range(rounds):
        emu_rate, bad = await rate(http, *emulator, seconds / rounds, concurrency)
        base_rate, _ = await rate(http, *baseline, seconds / rounds, concurrency)
        emu_rates.append(emu_rate)
        base_rates.append(base_rate)
        bad_total += bad
    return statistics.median(emu_rates), statistics.median(base_rates), bad_total


async def main(seconds: float, concurrency: int, adapters: int, json_out: Path | None) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    print(
        f"machine: {os.cpu_count()} cpu(s), {platform.machine()}, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, orjson {'yes' if _has('orjson') else 'no'}, "
        f"uvloop {'yes' if _has('uvloop') else 'no'}"
    )
    print(
        f"each figure: median of 3 alternating rounds over {seconds:.1f} s per server, {concurrency} concurrent "
        "clients; each server in its own process"
    )
    emu_port, base_port = free_port(), free_port()
    emu_url, base_url = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{base_port}"
    emu_args = ["-m", "lora_syncer", "emulator", "--port", str(emu_port), "--served-model-name", "base"]
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
        server(emu_args, emu_url + "/health"),
    ):
        # The bare server's big body must match /v1/models with all adapters: load them first.
        start = time.perf_counter()
        sem = asyncio.Semaphore(concurrency)

        async def load(i: int) -> int:
            async with sem:
                body = {"lora_name": f"adapter-{i:05d}", "lora_path": f"org/adapter-{i:05d}"}
                async with http.post(emu_url + "/v1/load_lora_adapter", json=body) as resp:
                    await resp.read()
                    return resp.status

        models_small_body_len = len(await (await http.get(emu_url + "/v1/models")).read())
        statuses = await asyncio.gather(*(load(i) for i in range(adapters)))
        load_rate = adapters / (time.perf_counter() - start)
        async with http.get(emu_url + "/v1/models") as resp:
            models_body = await resp.read()
            listed = len((await resp.json())["data"]) - 1
        base_args = ["-c", BASELINE, str(base_port), str(len(models_body))]
        async with server(base_args, base_url + "/big"):
            chat = await paired(
                http,
                ("POST", emu_url + "/v1/chat/completions", CHAT_BODY),
                ("POST", base_url + "/const", CHAT_BODY),
                seconds,
                concurrency,
            )
            models_big = await paired(
                http,
                ("GET", emu_url + "/v1/models", None),
                ("GET", base_url + "/big", None),
                seconds,
                concurrency,
            )
    assert all(s == 200 for s in statuses), "some adapter loads failed"
    assert listed == adapters, f"/v1/models listed {listed} adapters, expected {adapters}"
    print(f"{'figure':<50}{'req/s':>9}{'baseline':>10}{'ratio':>7}")
    print(
        f"{'POST /v1/chat/completions (16 tokens)':<50}{chat[0]:>9.0f}{chat[1]:>10.0f}{chat[0] / chat[1]:>7.2f}"
    )
    label = f"GET /v1/models, {adapters} adapters ({len(models_body) / 1e6:.1f} MB)"
    print(f"{label:<50}{models_big[0]:>9.0f}{models_big[1]:>10.0f}{models_big[0] / models_big[1]:>7.2f}")
    print(f"{'POST /v1/load_lora_adapter (hub ids, no baseline)':<50}{load_rate:>9.0f}")
    print(f"(/v1/models without adapters is {models_small_body_len} bytes)")
    if chat[2] or models_big[2]:
        print(f"warning: {chat[2] + models_big[2]} non-200 answers during the run")
    if json_out is not None:
        figures = {
            "chat_completions": {"rps": chat[0], "baseline_rps": chat[1], "ratio": chat[0] / chat[1]},
            "models_listing": {
                "adapters": adapters,
                "body_bytes": len(models_body),
                "rps": models_big[0],
                "baseline_rps": models_big[1],
                "ratio": models_big[0] / models_big[1],
            },
            "load_adapter": {"rps": load_rate},
            "non_200_answers": chat[2] + models_big[2],
            "seconds": seconds,
            "concurrency": concurrency,
        }
        await asyncio.to_thread(json_out.write_text, json.dumps(figures, indent=2))


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    ns = parser.parse_args()
    asyncio.run(main(ns.seconds, ns.concurrency, ns.adapters, ns.json))
