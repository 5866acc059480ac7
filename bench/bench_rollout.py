"""Benchmark: the proxy's CPU per request with a rollout-shaped route vs a plain InferenceModelRewrite.

    .venv/bin/python -m bench.bench_rollout [--requests 1500] [--runs 5] [--concurrency 8] [--json FILE]

(from the checkout's root, as a module, so it imports this checkout and tests/support).

Processes: the upstream (`lora-syncer emulator` serving the stable and the canary adapter) and
one proxy process per scenario (`ProxyService`, in front of the emulator), all started once and
kept; the load comes from this process (aiohttp, `--concurrency` connections, JSON answers of
one token). Scenarios, each a route for the same alias with the same two targets:

- plain: an InferenceModelRewrite rule, stable 90 / canary 10;
- rollout: the route an AdapterRollout `setWeight: 10` step compiles to (`rollout.weights.route_for`
  shape: [stable, canary] at 90/10, no mirror), put on the compiled route as the rollout
  controller does;
- mirror N: a `mirror: {percent: N}` step (stable 100, canary 0, N % copied to the canary), for
  N = 10 and 50: the shadow copies' cost, reported apart.

The proxy's CPU time (utime + stime from /proc, all its threads) over a batch of requests, divided
by the requests, is one figure. `--runs` rounds interleave the scenarios (each round measures every
scenario once, in a rotating order) and each scenario's figure is paired with the plain figure of
the same round; the median of the paired differences is printed, with the machine and load.
Nothing is asserted: machines are noisy.

`--json FILE` also writes the figures (per scenario: CPU per request and the paired difference vs
plain as median/min/max over the runs, the raw runs, requests measured and failed, canary
requests per batch) for bench/benchmarks_report.py. The interleaved runs are this script's own
repetitions, so the report runs it once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
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
from tests.support.net import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "small-segment-lora"
STABLE, CANARY = "small-segment-lora-v1", "small-segment-lora-v2"
RULES = f"""\
kind: InferenceModelRewrite
metadata: {{name: bench}}
spec:
  rules:
  - matches: [{{model: {{value: {ALIAS}}}}}]
    targets:
    - {{modelRewrite: {STABLE}, weight: 90}}
    - {{modelRewrite: {CANARY}, weight: 10}}
"""
SCENARIOS = ("plain", "rollout", "mirror-10", "mirror-50")
BODY = {"model": ALIAS, "messages": [{"role": "user", "content": "Which way would you go?"}], "max_tokens": 1}


def _run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- role: one proxy with one scenario's route -----------------------------------------------------


def _apply_scenario(service: Any, scenario: str) -> None:
    """Put the scenario's route on the alias, as the rollout controller will."""
    from lora_syncer.proxy.matching import Mirror
    from lora_syncer.proxy.select import SmoothWeightedRoundRobin
    from lora_syncer.rollout.weights import RolloutRoute, WeightedTarget

    if scenario == "plain":
        return
    if scenario == "rollout":
        shape = RolloutRoute(
            ALIAS, "AdapterRollout/bench", (WeightedTarget(STABLE, 90), WeightedTarget(CANARY, 10))
        )
    else:
        percent = int(scenario.split("-")[1])
        shape = RolloutRoute(
            ALIAS,
            "AdapterRollout/bench",
            (WeightedTarget(STABLE, 100), WeightedTarget(CANARY, 0)),
            WeightedTarget(CANARY, percent),
        )
    for pool in service.core.pools.pools.values():
        route = pool.table.exact[ALIAS]
        names = tuple(t.name for t in shape.targets)
        weights = tuple(t.weight for t in shape.targets)
        mirror = Mirror(shape.mirror.name, shape.mirror.weight) if shape.mirror is not None else None
        pool.table.exact[ALIAS] = dataclasses.replace(
            route,
            names=names,
            weights=weights,
            rr=SmoothWeightedRoundRobin(names, weights),
            first_live=next((t.name for t in shape.targets if t.weight > 0), None),
            mirror=mirror,
        )


async def _proxy(port: int, upstream: str, rules: str, scenario: str, shadow_concurrency: int) -> None:
    from prometheus_client import CollectorRegistry

    from lora_syncer.proxy.options import ProxyOptions
    from lora_syncer.proxy.service import ProxyService

    service = ProxyService(
        ProxyOptions(
            upstream=upstream,
            rules_path=Path(rules),
            host="127.0.0.1",
            port=port,
            shadow_concurrency=shadow_concurrency,
        ),
        registry=CollectorRegistry(),
    )
    await service.start()
    _apply_scenario(service, scenario)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await service.stop(1)


# --- role: the benchmark -------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_port(port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within 60 s")


async def _batch(url: str, requests: int, concurrency: int) -> int:
    """Send `requests` requests with `concurrency` connections; the number of 200 answers."""
    import aiohttp

    ok = 0
    left = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def worker() -> None:
            nonlocal ok, left
            while left > 0:
                left -= 1
                async with http.post(url, json=BODY) as resp:
                    await resp.read()
                    ok += resp.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def _served(emulator: str) -> dict[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(emulator + "/_emulator/calls") as resp:
        served: dict[str, int] = (await resp.json())["counters"]["served"]
        return served


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _figures(
    args: argparse.Namespace,
    per_request: dict[str, list[float]],
    copies: dict[str, list[int]],
    failed: dict[str, int],
) -> dict[str, Any]:
    """The JSON figures: one record per scenario (µs per request; paired differences vs plain)."""
    plain = per_request["plain"]
    scenarios: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        values = [v * 1e6 for v in per_request[scenario]]
        record: dict[str, Any] = {
            "name": scenario,
            "cpu_us_per_request": _spread(values),
            "requests": args.requests * args.runs,
            "failed_requests": failed[scenario],
            "canary_requests_per_batch": statistics.median(copies[scenario]),
            "runs_us_per_request": values,  # raw samples: kept in the JSON, not in the table
        }
        if scenario != "plain":
            diffs = [(v - p) * 1e6 for v, p in zip(per_request[scenario], plain, strict=True)]
            record["paired_difference_vs_plain_us"] = _spread(diffs)
            record["runs_paired_difference_us"] = diffs
        scenarios.append(record)
    return {
        "machine": machine_summary(),
        "settings": {
            "runs": args.runs,
            "requests_per_batch": args.requests,
            "concurrency": args.concurrency,
            "shadow_concurrency": args.shadow_concurrency,
        },
        "scenarios": scenarios,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per scenario per run")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shadow-concurrency", type=int, default=8, help="the mirror proxies' copy budget")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--role", choices=("bench", "proxy"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--rules", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "proxy":
        _run_loop(_proxy(args.port, args.upstream, args.rules, args.scenario, args.shadow_concurrency))
        return 0

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        try:
            emu_port = _free_port()
            emu = subprocess.Popen(
                [sys.executable, "-m", "lora_syncer", "emulator", "--port", str(emu_port), "--log-level", "error",
                 "--lora-modules", f"{STABLE}=org/{STABLE}", f"{CANARY}=org/{CANARY}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(emu)
            _wait_port(emu_port, emu, "the emulator")
            upstream = f"http://127.0.0.1:{emu_port}"
            proxies: dict[str, tuple[int, subprocess.Popen[Any]]] = {}
            for scenario in SCENARIOS:
                port = _free_port()
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--role", "proxy", "--port", str(port), "--upstream", upstream,
                     "--rules", str(rules), "--scenario", scenario,
                     "--shadow-concurrency", str(args.shadow_concurrency)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                procs.append(proc)
                proxies[scenario] = (port, proc)
            for scenario, (port, proc) in proxies.items():
                _wait_port(port, proc, f"the {scenario} proxy")

            print(f"machine: {machine_summary()}")
            load_start = os.getloadavg()
            print(f"load average at start: {_load()}")
            print(
                f"{args.runs} interleaved runs x {args.requests} requests per scenario, "
                f"{args.concurrency} connections, JSON answers of 1 token"
            )
            # Warm-up: connections, caches, the first copies.
            for port, _ in proxies.values():
                _run_loop(_batch(f"http://127.0.0.1:{port}/v1/chat/completions", 200, args.concurrency))
            per_request: dict[str, list[float]] = {s: [] for s in SCENARIOS}
            copies: dict[str, list[int]] = {s: [] for s in SCENARIOS}
            failed: dict[str, int] = dict.fromkeys(SCENARIOS, 0)
            for run in range(args.runs):
                order = SCENARIOS[run % len(SCENARIOS) :] + SCENARIOS[: run % len(SCENARIOS)]
                for scenario in order:
                    port, proc = proxies[scenario]
                    before_served = _run_loop(_served(upstream))
                    cpu0 = _cpu_seconds(proc.pid)
                    ok = _run_loop(
                        _batch(
                            f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.concurrency
                        )
                    )
                    if scenario.startswith("mirror"):
                        time.sleep(0.5)  # let the last copies finish: their CPU belongs to this batch
                    cpu1 = _cpu_seconds(proc.pid)
                    after_served = _run_loop(_served(upstream))
                    failed[scenario] += args.requests - ok
                    if ok != args.requests:
                        print(f"  warning: {scenario} run {run + 1}: {args.requests - ok} requests failed")
                    per_request[scenario].append((cpu1 - cpu0) / args.requests)
                    copies[scenario].append(after_served.get(CANARY, 0) - before_served.get(CANARY, 0))
            load_end = os.getloadavg()
            print(f"load average at end: {_load()}")
            print()
            print(
                "| scenario | CPU per request (median of runs) | paired difference vs plain (median) | canary requests per batch |"
            )
            print("|---|---|---|---|")
            plain = per_request["plain"]
            for scenario in SCENARIOS:
                values = per_request[scenario]
                diffs = [v - p for v, p in zip(values, plain, strict=True)]
                diff = "-" if scenario == "plain" else f"{statistics.median(diffs) * 1e6:+.1f} µs"
                print(
                    f"| {scenario} | {statistics.median(values) * 1e6:.1f} µs | {diff} | "
                    f"{statistics.median(copies[scenario]):.0f} |"
                )
            print()
            print("rollout vs plain is the cost of the rollout-shaped route itself; the mirror rows add the")
            print("shadow copies (each a second upstream request through the proxy), reported apart.")
            print("runs (µs per request):")
            for scenario in SCENARIOS:
                print(f"  {scenario:10s} " + " ".join(f"{v * 1e6:7.1f}" for v in per_request[scenario]))
            if args.json is not None:
                figures = _figures(args, per_request, copies, failed)
                figures["load_average"] = {"start": list(load_start), "end": list(load_end)}
                args.json.write_text(json.dumps(figures, indent=2) + "\n")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
