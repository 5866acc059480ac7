"""Benchmark: the rewrite proxy against the upstream alone and against nginx, in one run.

    .venv/bin/python -m bench.bench_proxy [--duration 8] [--concurrency 32] [--upstream emulator|minimal] [--json FILE]

The proxy runs as the image ships it: `--build compiled` (the default) builds this checkout's
wheel with the per-request modules compiled by mypyc (setup.py, `LORA_SYNCER_COMPILE=1`) once per
source tree and runs it; `--build python` runs the sources as they are (a pip install without
the compile step).

Processes: the upstream (`lora-syncer emulator` serving two adapters, or `--upstream minimal`,
a bare aiohttp server answering like vLLM), nginx in front of it (temporary config: 1 worker,
upstream keep-alive 64, no buffering), and `lora-syncer proxy` in front of it with a 90/10
rule, at its default flags (metrics served on a free port, logs at info). Load comes from wrk
(one thread). wrk and nginx are required: scripts/setup-bench-tools.sh
installs them when run as root; without them the benchmark exits naming what to install, and
`--no-nginx` is the only way to leave the nginx comparison out. Straight and nginx requests name
the target model, proxy requests the alias, so all three get the same answers.

Scenarios, each run for `--duration` seconds against direct, nginx and proxy:
- latency: 1 connection, JSON answers (max_tokens 1): p50/p99, the proxy's added p50;
- throughput: `--concurrency` connections, JSON answers: req/s, proxy/nginx ratio;
- streaming: `--concurrency` connections, SSE answers of 8 tokens: req/s;
- first chunk: 1 connection, SSE: time to the first chunk (aiohttp load generator).

`--proxy-transport session` sends the proxy's requests through aiohttp's `ClientSession`
instead of the lean client (the way https upstreams go), to compare the two forward paths.

Also printed: the machine, the load average at start and end (other work on the machine shows
there), and CPU time per request of the proxy and of nginx (from /proc; less sensitive to
noise than req/s). The proxy runs at its default flags (metrics on, logging at info).

`--runs N` repeats every scenario N times, the paths taking turns within each round, and reports
the median of each figure (issue 11 asks for five). `--compare DIR` (repeatable) also starts a second proxy
from another checkout (`PYTHONPATH=DIR`, e.g. `git archive main lora_syncer | tar -x -C DIR`),
measured in the same rounds as `base`, so before/after is a same-run ratio. `--scenarios`
picks some scenarios (latency, throughput, streaming, first-chunk).

Targets (issue 11): CPU per proxied JSON request <= 2.6 x nginx's, throughput at 32 connections
>= 0.75 x nginx's, added p50 at one connection <= 0.25 ms. Printed, never asserted.

`--json FILE` also writes every measurement (and the machine, load averages and proxy command)
to FILE; `python -m bench.benchmarks_report` runs this and renders bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report_support import machine_summary
from tests.support.compiled import compiled_tree
from tests.support.net import free_port as _free_port

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
ALIAS = "small-segment-lora"
TARGET = "small-segment-lora-v1"
PROMPT = [{"role": "user", "content": "If you had a time machine, which way would you go?"}]
STREAM_CHUNKS = 8
# The proxy with its lean client turned off: every upstream goes through aiohttp's session.
SESSION_PROXY = (
    "from lora_syncer.proxy.upstream import UpstreamClient\n"
    "UpstreamClient.supports = staticmethod(lambda base: False)\n"
    "from lora_syncer.cli import main\n"
    "raise SystemExit(main())\n"
)


def _body(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": PROMPT,
        "max_tokens": STREAM_CHUNKS if stream else 1,
        "stream": stream,
    }


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


async def _load(url: str, model: str, concurrency: int, duration: float, stream: bool) -> dict[str, Any]:
    import aiohttp

    payload = json.dumps(_body(model, stream)).encode()
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

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/pt; fastcgi_temp_path {tmp}/ft;
  uwsgi_temp_path {tmp}/ut; scgi_temp_path {tmp}/st;
  upstream model_server {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model_server;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""


def emulator_argv(tmp: Path, port: int) -> list[str]:
    """The emulator serving the rule's two adapters (made in `tmp`) on `port`."""
    modules = []
    for name in ("small-segment-lora-v1", "small-segment-lora-v2"):
        adapter = tmp / name
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text(
            json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
        )
        modules.append(f"{name}={adapter}")
    return [
        sys.executable,
        "-m",
        "lora_syncer",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lora-modules",
        *modules,
        "--log-level",
        "warning",
    ]


def _spawn(
    argv: list[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    within: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start a server and wait until `port` accepts connections (at most `within` seconds)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{argv[0]} exited before it was ready:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{argv[:4]} did not listen on {port} within {within:.0f} s")


def _listening(log: Path, key: str) -> str:
    """A field of the proxy's `proxy listening` log line (event_loop, build), or "unknown"."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"proxy listening"' in line:
                try:
                    return str(json.loads(line).get(key, "unknown"))
                except ValueError:
                    return "unknown"
        time.sleep(0.05)
    return "unknown"


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    pct: dict[str, float] = {}
    for q, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        pct[q] = float(value) * _WRK_UNITS[unit]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0),
        "requests": int(done.group(1)) if done else 0,
    }


def _pyload(url: str, model: str, connections: int, duration: float, stream: bool) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--role",
            "load",
            "--url",
            url,
            "--model",
            model,
            "--concurrency",
            str(connections),
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
    """The machine, and the versions of the load generator and nginx."""
    tools = []
    for tool, argv in (("wrk", ["wrk", "-v"]), ("nginx", ["nginx", "-v"])):
        if shutil.which(tool) is None:
            tools.append(f"{tool} missing")
            continue
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        first = (proc.stdout + proc.stderr).strip().splitlines()
        tools.append(first[0] if first else tool)
    return f"{machine_summary()}; {'; '.join(tools)}"


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _fmt(value: float, spec: str = ".2f") -> str:
    return "-" if value != value else format(value, spec)  # NaN -> "-"


def _require_tools(no_nginx: bool) -> tuple[bool, bool]:
    """wrk and (unless --no-nginx) nginx, installed by scripts/setup-bench-tools.sh when root and
    missing; exits non-zero naming what to install when they cannot be had. Returns (wrk, nginx)."""
    # nginx lives in /usr/sbin, which a non-root PATH may lack.
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    setup = Path(__file__).resolve().parents[1] / "scripts" / "setup-bench-tools.sh"
    proc = subprocess.run(["bash", str(setup), *(["--no-nginx"] if no_nginx else [])], check=False)
    missing = [t for t in ("wrk", *(() if no_nginx else ("nginx",))) if shutil.which(t) is None]
    if proc.returncode != 0 or missing:
        raise SystemExit(
            f"error: the proxy benchmark needs {' and '.join(missing) or 'wrk and nginx'}: "
            "apt-get install wrk nginx (or run scripts/setup-bench-tools.sh as root); "
            "--no-nginx skips the nginx comparison"
        )
    return True, not no_nginx


def _measure(
    url: str,
    model: str,
    pids: list[int],
    conns: int,
    stream: bool,
    tool: str,
    have_wrk: bool,
    tmp: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One measurement of one path: wrk (or the aiohttp load generator) plus the server's CPU per request."""
    cpu0 = _cpu_seconds(pids)
    if tool == "wrk" and have_wrk:
        script = tmp / f"{model}-{stream}.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(json.dumps(_body(model, stream)))))
        r = _wrk(url, script, conns, args.duration)
    else:
        r = _pyload(url, model, conns, args.duration, stream)
        if tool == "py":  # report the time to the first chunk
            r = {**r, "p50_ms": r["ttfb_p50_ms"], "p99_ms": r["ttfb_p99_ms"]}
    cpu = _cpu_seconds(pids) - cpu0
    r["cpu_us"] = 1e6 * cpu / r["requests"] if pids and r["requests"] else float("nan")
    return r


def _median_result(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the rounds (errors and requests: summed)."""
    out: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if key in ("errors", "requests"):
            out[key] = sum(values)
        else:
            finite = [v for v in values if v == v]
            out[key] = statistics.median(finite) if finite else float("nan")
    out["min_requests"] = min(r["requests"] for r in rounds)
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Same-run comparisons: added p50 over direct, req/s and CPU per request against nginx (and base)."""
    d = results["direct"]
    out: dict[str, float] = {}
    for label in [k for k in results if k == "proxy" or k.startswith("base")]:
        p = results[label]
        out[f"{label} added p50 ms"] = p["p50_ms"] - d["p50_ms"]
        out[f"{label}/direct req/s"] = _div(p["rps"], d["rps"])
        if "nginx" in results:
            n = results["nginx"]
            out[f"{label}/nginx req/s"] = _div(p["rps"], n["rps"])
            out[f"{label}/nginx cpu"] = _div(p["cpu_us"], n["cpu_us"])
    if "nginx" in results:
        out["nginx added p50 ms"] = results["nginx"]["p50_ms"] - d["p50_ms"]
    for label in [k for k in results if k.startswith("base")]:
        out[f"proxy/{label} cpu"] = _div(results["proxy"]["cpu_us"], results[label]["cpu_us"])
        out[f"proxy/{label} req/s"] = _div(results["proxy"]["rps"], results[label]["rps"])
    return out


def _print_targets(scenarios: dict[str, Any]) -> None:
    """The issue-11 targets next to the figures (printed, never asserted)."""
    rows = []
    lat, thr = scenarios.get("latency"), scenarios.get("throughput")
    if lat:
        rows.append(
            (
                "added p50, 1 conn, JSON",
                f"{_fmt(lat['ratios'].get('proxy added p50 ms', float('nan')))} ms",
                "<= 0.25 ms",
            )
        )
    if thr and "proxy/nginx cpu" in thr["ratios"]:
        rows.append(
            ("CPU per request / nginx's, 32 conns", f"{_fmt(thr['ratios']['proxy/nginx cpu'])}x", "<= 2.6x")
        )
        rows.append(("req/s / nginx's, 32 conns", f"{_fmt(thr['ratios']['proxy/nginx req/s'])}x", ">= 0.75x"))
    if rows:
        print("\ntargets (issue 11):")
        for label, figure, target in rows:
            print(f"  {label:<38} {figure:>9}   target {target}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=("main", "upstream", "load"), default="main")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url")
    parser.add_argument("--model", default=TARGET)
    parser.add_argument("--concurrency", type=int, default=32)
    # 8 s: at least 4,000 requests per measurement on a 2-core machine (see bench/README.md).
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--upstream", choices=("emulator", "minimal"), default="emulator")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx baseline")
    parser.add_argument(
        "--proxy-transport",
        choices=("lean", "session"),
        default="lean",
        help="the proxy's upstream client for plain http: the lean client (default) or aiohttp's session",
    )
    parser.add_argument(
        "--proxy-arg", action="append", default=[], help="extra flag for the proxy (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=1, help="rounds per scenario; medians reported")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="also measure the proxy of another checkout (PYTHONPATH=DIR) as `base` (repeatable: base2, ...)",
    )
    parser.add_argument(
        "--build",
        choices=("compiled", "python"),
        default="compiled",
        help="the proxy's per-request modules as the image ships them, compiled by mypyc (default; "
        "built once per source tree, about two minutes), or this checkout's Python sources",
    )
    parser.add_argument(
        "--scenarios",
        default="latency,throughput,streaming,first-chunk",
        help="comma-separated: latency, throughput, streaming, first-chunk",
    )
    args = parser.parse_args()
    args.runs = max(1, min(args.runs, 15))

    if args.role == "upstream":
        _run_loop(_upstream(args.port))
        return
    if args.role == "load":
        print(
            json.dumps(_run_loop(_load(args.url, args.model, args.concurrency, args.duration, args.stream)))
        )
        return

    # Children (servers, the load role) import this checkout's package and tests.support.
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    have_wrk, have_nginx = _require_tools(args.no_nginx)
    compiled: Path | None = None
    if args.build == "compiled":
        print("building the compiled proxy (once per source tree)...", flush=True)
        compiled = compiled_tree()
    print(f"machine: {_machine()}")
    print(f"load average at start: {_loadavg()}  (2-core machines: above ~0.5 means other work competes)")
    print(
        f"upstream: {args.upstream}; proxy transport: {args.proxy_transport}; "
        f"{args.duration:.0f} s per measurement\n"
    )

    upstream_port, proxy_port, nginx_port = _free_port(), _free_port(), _free_port()
    report: dict[str, Any] = {
        "machine": _machine(),
        "loadavg_start": _loadavg(),
        "upstream": args.upstream,
        "proxy_transport": args.proxy_transport,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "scenarios": {},
    }
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            if args.upstream == "emulator":
                up_argv = emulator_argv(tmp, upstream_port)
            else:
                up_argv = [sys.executable, __file__, "--role", "upstream", "--port", str(upstream_port)]
            procs.append(_spawn(up_argv, upstream_port, tmp / "upstream.log"))
            rules = tmp / "rules.yaml"
            rules.write_text(RULES)
            launcher = ["-m", "lora_syncer"] if args.proxy_transport == "lean" else ["-c", SESSION_PROXY]

            def start_proxy(port: int, name: str, pythonpath: str | None) -> subprocess.Popen[bytes]:
                # Default flags: metrics served (on their own port), logging at info.
                env = dict(os.environ)
                if pythonpath is not None:
                    env["PYTHONPATH"] = pythonpath
                return _spawn(
                    [
                        sys.executable,
                        *launcher,
                        "proxy",
                        "--rules",
                        str(rules),
                        "--server",
                        f"http://127.0.0.1:{upstream_port}",
                        "--proxy-host",
                        "127.0.0.1",
                        "--proxy-port",
                        str(port),
                        "--metrics-host",
                        "127.0.0.1",
                        "--metrics-port",
                        str(_free_port()),
                        *args.proxy_arg,
                    ],
                    port,
                    tmp / f"{name}.log",
                    env,
                    # `python -m`/`-c` put the working directory first on sys.path, before PYTHONPATH:
                    # run from the scratch directory so a --compare checkout is really the one imported.
                    tmp,
                )

            proxy = start_proxy(proxy_port, "proxy", str(compiled) if compiled else None)
            report["proxy_command"] = ["lora-syncer", "proxy", "--rules", "...", *args.proxy_arg]
            report["proxy_event_loop"] = _listening(tmp / "proxy.log", "event_loop")
            report["proxy_build"] = _listening(tmp / "proxy.log", "build")
            if report["proxy_build"] != args.build:
                raise SystemExit(f"error: --build {args.build}, but the proxy runs {report['proxy_build']}")
            print(
                f"proxy event loop: {report['proxy_event_loop']} (the image installs the `fast` extra: uvloop); "
                f"proxy build: {report['proxy_build']} (the image's is compiled)\n"
            )
            procs.append(proxy)
            compared: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            for i, other in enumerate(args.compare):
                label = "base" if i == 0 else f"base{i + 1}"
                other_port = _free_port()
                compared[label] = (other_port, start_proxy(other_port, label, str(other.resolve())))
                procs.append(compared[label][1])
            paths: dict[str, tuple[str, str, list[int]]] = {
                "direct": (f"http://127.0.0.1:{upstream_port}", TARGET, []),
            }
            if have_nginx:
                (tmp / "nginx.conf").write_text(
                    NGINX_CONF.format(tmp=tmp, upstream=upstream_port, port=nginx_port)
                )
                nginx = _spawn(
                    ["nginx", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")],
                    nginx_port,
                    tmp / "nginx.out",
                )
                procs.append(nginx)
                paths["nginx"] = (
                    f"http://127.0.0.1:{nginx_port}",
                    TARGET,
                    [nginx.pid, *_children(nginx.pid)],
                )
            paths["proxy"] = (f"http://127.0.0.1:{proxy_port}", ALIAS, [proxy.pid])
            for label, (other_port, other_proc) in compared.items():
                paths[label] = (f"http://127.0.0.1:{other_port}", ALIAS, [other_proc.pid])

            all_scenarios = {
                "latency": ("latency, 1 conn, JSON", 1, False, "wrk"),
                "throughput": (f"throughput, {args.concurrency} conns, JSON", args.concurrency, False, "wrk"),
                "streaming": (
                    f"streaming, {args.concurrency} conns, SSE x{STREAM_CHUNKS}",
                    args.concurrency,
                    True,
                    "wrk",
                ),
                "first-chunk": ("first chunk, 1 conn, SSE", 1, True, "py"),
            }
            chosen = [k.strip() for k in args.scenarios.split(",") if k.strip()]
            unknown = [k for k in chosen if k not in all_scenarios]
            if unknown:
                raise SystemExit(
                    f"error: --scenarios: unknown {', '.join(unknown)}; use {', '.join(all_scenarios)}"
                )
            header = (
                f"{'scenario':<34} {'path':<7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'cpu us/req':>10} {'errors':>6}"
            )
            print(f"{args.runs} round(s) per scenario, paths taking turns; medians below each round's rows\n")
            print(header)
            print("-" * len(header))
            summary: list[str] = []
            labels = list(paths)
            for key in chosen:
                name, conns, stream, tool = all_scenarios[key]
                rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
                for i in range(args.runs):
                    order = labels[i % len(labels) :] + labels[: i % len(labels)]  # alternate who goes first
                    for label in order:
                        base, model, pids = paths[label]
                        if label == "nginx":  # its worker may have been forked after the first look
                            pids = [pids[0], *_children(pids[0])]
                        r = _measure(
                            base + "/v1/chat/completions",
                            model,
                            pids,
                            conns,
                            stream,
                            tool,
                            have_wrk,
                            tmp,
                            args,
                        )
                        rounds[label].append(r)
                        if args.runs > 1:
                            print(
                                f"{name + f' #{i + 1}':<34} {label:<7} {_fmt(r['rps'], '.0f'):>8} "
                                f"{_fmt(r['p50_ms']):>7} {_fmt(r['p99_ms']):>7} {_fmt(r['cpu_us'], '.0f'):>10} "
                                f"{r['errors']:>6}",
                                flush=True,
                            )
                results = {label: _median_result(rs) for label, rs in rounds.items()}
                for label, r in results.items():
                    print(
                        f"{name + (' median' if args.runs > 1 else ''):<34} {label:<7} {_fmt(r['rps'], '.0f'):>8} "
                        f"{_fmt(r['p50_ms']):>7} {_fmt(r['p99_ms']):>7} {_fmt(r['cpu_us'], '.0f'):>10} "
                        f"{r['errors']:>6}",
                        flush=True,
                    )
                short = [f"{k} {r['min_requests']}" for k, r in results.items() if r["min_requests"] < 4000]
                if short:
                    print(
                        f"  note: fewer than 4,000 requests in a measurement ({', '.join(short)}): raise --duration"
                    )
                figures = _ratios(results)
                report["scenarios"][key] = {"name": name, "results": results, "ratios": figures}
                summary.append(f"{name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items()))
            print()
            for line in summary:
                print(line)
            _print_targets(report["scenarios"])
            print(f"\nload average at end: {_loadavg()}")
            report["loadavg_end"] = _loadavg()
            report["summary"] = summary
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
