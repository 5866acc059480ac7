"""Benchmark: the rewrite proxy against going straight to the upstream, measured in one run.

    .venv/bin/python bench/bench_proxy.py [--duration 5] [--concurrency 32]

Three processes: a minimal aiohttp upstream that answers like vLLM (JSON, or SSE chunks, with
`model` = the requested name), `lora-syncer proxy` in front of it with a 90/10 rule, and an
aiohttp load generator. Each scenario runs once straight to the upstream (the baseline) and
once through the proxy:

- latency: one connection, plain JSON answers: p50/p99 and the added p50 latency;
- throughput: `--concurrency` connections, plain answers: requests/s;
- streaming: `--concurrency` connections, SSE answers of 8 chunks: time to first chunk, requests/s.

Prints the machine, the figures and the proxy/direct ratios. Bounded: every scenario runs for
`--duration` seconds; the whole run takes about 6 x duration plus start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RULES = """\
kind: InferenceModelRewrite
metadata: {name: bench}
spec:
  rules:
  - matches: [{model: {value: small-segment-lora}}]
    targets:
    - {modelRewrite: small-segment-lora-v1, weight: 90}
    - {modelRewrite: small-segment-lora-v2, weight: 10}
"""
BODY = {
    "model": "small-segment-lora",
    "messages": [{"role": "user", "content": "If you had a time machine, which way would you go?"}],
    "max_completion_tokens": 10,
}
STREAM_CHUNKS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- role: upstream --------------------------------------------------------------------------------


async def _upstream(port: int) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model", "base")
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(STREAM_CHUNKS):
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"delta": {"content": f"t{i}"}}],
                }
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "I would choose the future"}}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
        }
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


# --- role: load generator --------------------------------------------------------------------------


async def _load(url: str, concurrency: int, duration: float, stream: bool) -> dict[str, Any]:
    import aiohttp

    payload = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    first_chunks: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        # Warm-up: open the connections and let both servers reach steady state.
        warm_until = time.perf_counter() + min(1.0, duration / 4)

        async def worker(record: bool, until: float) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=payload, headers=headers) as resp:
                        if stream:
                            first = await resp.content.readany()
                            t_first = time.perf_counter()
                            while first:
                                first = await resp.content.readany()
                        else:
                            await resp.read()
                            t_first = time.perf_counter()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                    t_first = time.perf_counter()
                done = time.perf_counter()
                if record:
                    if ok:
                        latencies.append(done - started)
                        first_chunks.append(t_first - started)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(False, warm_until) for _ in range(concurrency)))
        started = time.perf_counter()
        until = started + duration
        await asyncio.gather(*(worker(True, until) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started

    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "ttfb_p50_ms": pct(first_chunks, 0.50),
        "ttfb_p99_ms": pct(first_chunks, 0.99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
    }


# --- orchestration ---------------------------------------------------------------------------------


def _spawn(argv: list[str], ready_text: str, stream_name: str = "stdout") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE if stream_name == "stdout" else subprocess.DEVNULL,
        stderr=subprocess.PIPE if stream_name == "stderr" else subprocess.DEVNULL,
        text=True,
    )
    pipe = proc.stdout if stream_name == "stdout" else proc.stderr
    assert pipe is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            raise SystemExit(f"{argv[:4]} exited before it was ready")
        if ready_text in line:
            return proc
    proc.kill()
    raise SystemExit(f"{argv[:4]} did not become ready in 30 s")


def _measure(url: str, concurrency: int, duration: float, stream: bool) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--role",
            "load",
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            *(["--stream"] if stream else []),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _machine() -> str:
    versions = []
    for mod in ("aiohttp", "uvloop", "orjson"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} missing")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=("main", "upstream", "load"), default="main")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()

    if args.role == "upstream":
        _run_loop(_upstream(args.port))
        return
    if args.role == "load":
        print(json.dumps(_run_loop(_load(args.url, args.concurrency, args.duration, args.stream))))
        return

    upstream_port, proxy_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        upstream = _spawn(
            [sys.executable, __file__, "--role", "upstream", "--port", str(upstream_port)], "ready"
        )
        proxy = _spawn(
            [
                sys.executable,
                "-m",
                "lora_syncer",
                "proxy",
                "--rules",
                str(rules),
                "--server",
                f"http://127.0.0.1:{upstream_port}",
                "--proxy-host",
                "127.0.0.1",
                "--proxy-port",
                str(proxy_port),
                "--metrics-port",
                "-1",
                "--log-level",
                "warning",
            ],
            "listening on",
            "stderr",
        )
        try:
            direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
            proxied = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
            scenarios = [
                ("latency (1 connection, JSON)", 1, False),
                (f"throughput ({args.concurrency} connections, JSON)", args.concurrency, False),
                (f"streaming ({args.concurrency} connections, SSE x{STREAM_CHUNKS})", args.concurrency, True),
            ]
            print(f"machine: {_machine()}")
            print(f"duration per measurement: {args.duration:.1f} s\n")
            header = f"{'scenario':<44} {'path':<7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ttfb p50':>9} {'ttfb p99':>9} {'errors':>6}"
            print(header)
            print("-" * len(header))
            for name, conc, stream in scenarios:
                results = {}
                for label, target in (("direct", direct), ("proxy", proxied)):
                    r = _measure(target, conc, args.duration, stream)
                    results[label] = r
                    print(
                        f"{name:<44} {label:<7} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                        f"{r['ttfb_p50_ms']:>9.2f} {r['ttfb_p99_ms']:>9.2f} {r['errors']:>6}"
                    )
                d, p = results["direct"], results["proxy"]
                print(
                    f"{'':<44} ratio   throughput proxy/direct = {p['rps'] / d['rps']:.2f}, "
                    f"added p50 = {p['p50_ms'] - d['p50_ms']:.2f} ms, added ttfb p50 = {p['ttfb_p50_ms'] - d['ttfb_p50_ms']:.2f} ms"
                )
        finally:
            for proc in (proxy, upstream):
                proc.send_signal(signal.SIGTERM)
            for proc in (proxy, upstream):
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
