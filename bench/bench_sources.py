"""Benchmarks of remote adapter sources (issue 15). Figures are printed, never asserted.

  a  declared -> listed for a 50 MB adapter from a local S3 server (moto), through the sidecar
     (`--adapter-cache`), vs the same library's plain download (S3Fetcher, same concurrency, same
     file system) plus a direct load; median of alternating runs. "Listed" is when the emulator
     recorded the finished load (its call log, on this process's clock), so polling during the
     sidecar's download does not slow it. Two figures:
     cold  a fresh sidecar whose first s3:// source this is: it imports boto3 and makes its S3
           client after the declaration (boto3 is imported only once an s3:// source is
           declared); the baseline is a fresh process too, started and idle (its HTTP session to
           the server made, boto3 not imported) until told to go: it imports boto3, makes its
           client, downloads and loads. Also printed: the same download from this process, where
           boto3 is already imported (what a cold sidecar cannot have)
     warm  a sidecar already serving an s3:// adapter declares a new 50 MB version; the
           baseline downloads with a fetcher whose client is already made
     plus the cost of importing boto3 in a fresh process holding the sidecar's modules
  b  CPU of a no-op pass with 10,000 cached s3:// sources vs the same pass with the same 10,000
     directories declared as local sources (in-process reconciler, emulator in its own process)
  c  RSS (VmRSS, peak VmHWM) of `lora-syncer run` with one local adapter vs one s3:// adapter

The emulator plays vLLM (its own process). Usage:

  .venv/bin/python bench/bench_sources.py [--runs 5] [--mb 50] [--adapters 10000] [--only abc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sync import (  # noqa: E402
    adapters_file,
    child_env,
    direct_load,
    listed,
    machine,
    rss_kib,
    session,
    start_emulator,
    start_sidecar,
    unload_all,
)

from lora_syncer.kubelet import ConfigMapVolume  # noqa: E402
from tests.support.sources_servers import moto_server, s3_env  # noqa: E402

KEY = "configmap.yaml"
BUCKET = "bench"
ADAPTER_CONFIG = json.dumps(
    {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
).encode()


def remote_file(entries: Sequence[tuple[str, str, str | None]]) -> str:
    lines = ["vLLMLoRAConfig:", "  ensureExist:", "    models:"]
    for adapter_id, source, checksum in entries:
        lines += [f"    - id: {adapter_id}", f"      source: {source}"]
        if checksum:
            lines.append(f"      checksum: {checksum}")
    return "\n".join(lines) + "\n"


async def wait_listed_name(
    s: aiohttp.ClientSession, server: str, name: str, within: float = 600, poll: float = 0.005
) -> None:
    deadline = time.perf_counter() + within
    while name not in await listed(s, server):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name} not listed within {within} s")
        await asyncio.sleep(poll)


async def emulator_calls(s: aiohttp.ClientSession, server: str) -> list[dict[str, Any]]:
    async with s.get(server + "/_emulator/calls") as r:
        calls: list[dict[str, Any]] = (await r.json())["calls"]
    return calls


async def emulator_clock(s: aiohttp.ClientSession, server: str) -> float:
    """This process's perf_counter minus the emulator call log's clock (to within half a round trip).

    (a) times "listed" from the emulator's own record of the finished load, on both sides: a
    bench polling `/v1/models` every few ms during the sidecar's download would compete with it
    for the CPU (and the baseline would not pay that).
    """
    t1 = time.perf_counter()
    async with s.post(server + "/v1/unload_lora_adapter", json={"lora_name": "bench-clock"}) as r:
        await r.read()
    t2 = time.perf_counter()
    mark = [c for c in await emulator_calls(s, server) if c["name"] == "bench-clock"][-1]
    return float((t1 + t2) / 2 - mark["t"])


async def loaded_at(s: aiohttp.ClientSession, server: str, name: str, clock: float) -> float:
    """When the emulator finished loading `name`, on this process's perf_counter."""
    await wait_listed_name(s, server, name, poll=0.05)
    done = [c for c in await emulator_calls(s, server) if c["op"] == "load" and c["name"] == name]
    ok = [c for c in done if c["status"] == 200]
    return float(ok[-1]["t"]) + clock


# --- (a) declared -> listed, 50 MB from S3 -----------------------------------------------------


async def bench_declared_to_listed(workdir: Path, server: str, mb: int, runs: int) -> dict[str, Any]:
    import boto3

    from lora_syncer.sources.digest import directory_checksum
    from lora_syncer.sources.fetch_s3 import S3Fetcher
    from lora_syncer.sources.uri import S3Source

    files = {"adapter_config.json": ADAPTER_CONFIG}
    # Several objects, as a real adapter directory has, so the concurrency counts.
    per = mb * 1024 * 1024 // 4
    for i in range(4):
        files[f"adapter_model-{i}.safetensors"] = os.urandom(per)
    local = workdir / "upload"
    local.mkdir()
    client = boto3.session.Session().client("s3")
    client.create_bucket(Bucket=BUCKET)
    for name, data in files.items():
        (local / name).write_bytes(data)
        client.put_object(Bucket=BUCKET, Key=f"big/{name}", Body=data)
    checksum = str(directory_checksum(local))
    source = f"s3://{BUCKET}/big/"
    volume = ConfigMapVolume(workdir / "config")
    volume.write({KEY: adapters_file([])})
    sidecar_s: list[float] = []
    direct_s: list[float] = []
    imported_s: list[float] = []
    async with session() as s:
        for run in range(runs):
            # The sidecar: fresh cache, already running and idle when the file changes.
            cache = workdir / f"cache-{run}"
            sidecar = await start_sidecar(
                workdir, volume.path(KEY), server, "--adapter-cache", str(cache), "--reconcile-trigger", "5"
            )
            try:
                clock = await emulator_clock(s, server)
                t0 = time.perf_counter()
                volume.write({KEY: remote_file([(f"big-{run}", source, checksum)])})
                sidecar_s.append(await loaded_at(s, server, f"big-{run}", clock) - t0)
            finally:
                sidecar.stop()
            volume.write({KEY: adapters_file([])})
            await unload_all(s, server)
            shutil.rmtree(cache, ignore_errors=True)
            # The baseline, cold as the sidecar is: a fresh process downloads with the same library
            # into the same file system, then loads directly.
            dest = workdir / f"direct-{run}"
            dest.mkdir()
            child = await ColdBaseline.start(workdir, server, f"direct-{run}", dest)
            try:
                clock = await emulator_clock(s, server)
                t0 = time.perf_counter()
                got_checksum = await child.go()
                direct_s.append(await loaded_at(s, server, f"direct-{run}", clock) - t0)
            finally:
                child.stop()
            assert got_checksum == checksum
            await unload_all(s, server)
            shutil.rmtree(dest, ignore_errors=True)
            # The same download from this process, boto3 already imported (a fresh client).
            dest.mkdir()
            clock = await emulator_clock(s, server)
            t0 = time.perf_counter()
            got = await S3Fetcher(concurrency=4).download(S3Source(BUCKET, "big/"), dest)
            await direct_load(s, server, f"imported-{run}", str(dest))
            imported_s.append(await loaded_at(s, server, f"imported-{run}", clock) - t0)
            assert str(got.checksum) == checksum
            await unload_all(s, server)
            shutil.rmtree(dest, ignore_errors=True)
    return {
        **_figures(mb, sidecar_s, direct_s),
        "imported_s": imported_s,
        "imported_median_s": statistics.median(imported_s),
        "ratio_vs_imported": statistics.median(sidecar_s) / statistics.median(imported_s),
    }


class ColdBaseline:
    """The cold baseline's process: this file with `--role cold-baseline`, idle until told to go."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, workdir: Path, server: str, name: str, dest: Path) -> ColdBaseline:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "bench_sources.py"),
            "--role",
            "cold-baseline",
            "--server",
            server,
            "--name",
            name,
            "--dest",
            str(dest),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=child_env(),
        )
        child = cls(proc)
        assert (await child._line()) == "ready"
        return child

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"cold baseline exited ({await self.proc.wait()})")
        return line.decode().strip()

    async def go(self) -> str:
        """Tell it to download and load; the checksum of what it downloaded."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        return await self._line()

    def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def cold_baseline_child(server: str, name: str, dest: Path) -> None:
    """A fresh process, its HTTP session made and boto3 not imported, until a line on stdin."""
    from lora_syncer.sources.fetch_s3 import S3Fetcher
    from lora_syncer.sources.uri import S3Source

    assert "boto3" not in sys.modules, "the cold baseline must import boto3 after the go"
    loop = asyncio.get_running_loop()
    async with session() as s:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        got = await S3Fetcher(concurrency=4).download(S3Source(BUCKET, "big/"), dest)
        await direct_load(s, server, name, str(dest))
        print(got.checksum, flush=True)


async def bench_declared_to_listed_warm(workdir: Path, server: str, mb: int, runs: int) -> dict[str, Any]:
    """A new version declared to a sidecar that already serves an s3:// adapter, vs a fetcher
    whose client is already made (both have boto3 imported and an S3 client ready)."""
    import boto3

    from lora_syncer.sources.digest import directory_checksum
    from lora_syncer.sources.fetch_s3 import S3Fetcher
    from lora_syncer.sources.uri import S3Source

    client = boto3.session.Session().client("s3")
    names = [
        o["Key"].split("/", 1)[1] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="big/")["Contents"]
    ]
    client.put_object(Bucket=BUCKET, Key="seed/adapter_config.json", Body=ADAPTER_CONFIG)
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    (seed_dir / "adapter_config.json").write_bytes(ADAPTER_CONFIG)
    seed = ("seed", f"s3://{BUCKET}/seed/", str(directory_checksum(seed_dir)))
    checksum = str(directory_checksum(workdir / "upload"))
    # A new version per run and side: the same files under a new prefix (a new cache version).
    for run in range(runs):
        for side in ("sidecar", "direct"):
            for name in names:
                client.copy_object(
                    Bucket=BUCKET,
                    Key=f"{side}-{run}/{name}",
                    CopySource={"Bucket": BUCKET, "Key": f"big/{name}"},
                )
    volume = ConfigMapVolume(workdir / "config-warm")
    volume.write({KEY: remote_file([seed])})
    sidecar_s: list[float] = []
    direct_s: list[float] = []
    fetcher = S3Fetcher(concurrency=4)
    await asyncio.to_thread(fetcher._get_client)  # a process that has downloaded before
    async with session() as s:
        sidecar = await start_sidecar(
            workdir,
            volume.path(KEY),
            server,
            "--adapter-cache",
            str(workdir / "cache-warm"),
            "--reconcile-trigger",
            "5",
        )
        try:
            await wait_listed_name(s, server, "seed")
            for run in range(runs):
                clock = await emulator_clock(s, server)
                t0 = time.perf_counter()
                volume.write(
                    {KEY: remote_file([seed, (f"warm-{run}", f"s3://{BUCKET}/sidecar-{run}/", checksum)])}
                )
                sidecar_s.append(await loaded_at(s, server, f"warm-{run}", clock) - t0)
                dest = workdir / f"warm-direct-{run}"
                dest.mkdir()
                clock = await emulator_clock(s, server)
                t0 = time.perf_counter()
                got = await fetcher.download(S3Source(BUCKET, f"direct-{run}/"), dest)
                await direct_load(s, server, f"warm-direct-{run}", str(dest))
                direct_s.append(await loaded_at(s, server, f"warm-direct-{run}", clock) - t0)
                assert str(got.checksum) == checksum
        finally:
            sidecar.stop()
        await unload_all(s, server)
    return _figures(mb, sidecar_s, direct_s)


def _figures(mb: int, sidecar_s: list[float], direct_s: list[float]) -> dict[str, Any]:
    """The raw samples of both sides, their medians and the sidecar's ratio to the baseline."""
    med, base = statistics.median(sidecar_s), statistics.median(direct_s)
    return {
        "mb": mb,
        "sidecar_s": sidecar_s,
        "direct_s": direct_s,
        "sidecar_median_s": med,
        "direct_median_s": base,
        "ratio": med / base,
    }


def boto3_import_seconds(runs: int = 3) -> float:
    """Median seconds to import boto3 in a fresh interpreter that already holds the sidecar's
    modules: what a cold sidecar pays once, after the first s3:// declaration, and the cold
    baseline does not (this process imported boto3 before timing)."""
    import subprocess

    code = (
        "import time, lora_syncer.app, lora_syncer.sources.service\n"
        "t = time.perf_counter()\n"
        "import boto3\n"
        "print(time.perf_counter() - t)\n"
    )
    env = child_env()
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(samples)


# --- (b) no-op pass, 10,000 cached s3:// sources vs local --------------------------------------


def populate_cache(root: Path, n: int) -> list[tuple[str, str, str]]:
    """n published versions, written in the cache's layout: (source, checksum, directory)."""
    from lora_syncer.sources.cache import MARKER_SUFFIX, TMP_DIR, version_name
    from lora_syncer.sources.digest import parse_checksum

    root.mkdir(parents=True)
    (root / TMP_DIR).mkdir()
    out = []
    for i in range(n):
        source = f"s3://{BUCKET}/team/adapter-{i}/"
        checksum = parse_checksum("sha256:" + f"{i:064x}")
        name = version_name(source, checksum)
        d = root / name
        d.mkdir()
        (d / "adapter_config.json").write_bytes(ADAPTER_CONFIG)
        marker = {
            "source": source,
            "checksum": str(checksum),
            "pinned": True,
            "revision": None,
            "size": len(ADAPTER_CONFIG),
            "last_used": time.time(),
        }
        (root / (name + MARKER_SUFFIX)).write_text(json.dumps(marker))
        out.append((source, str(checksum), str(d)))
    return out


async def bench_noop(
    workdir: Path, server: str, n: int, runs: int, passes: int = 5, profile: bool = False
) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
    from lora_syncer.config.source import WatchedFile
    from lora_syncer.sources.cache import AdapterCache
    from lora_syncer.sources.fetch import RemoteFetcher
    from lora_syncer.sync.metrics import SyncMetrics
    from lora_syncer.sync.plan import PlanOptions
    from lora_syncer.sync.reconciler import Reconciler, SyncOptions
    from lora_syncer.sync.vllm_client import VLLMClient

    cache_dir = workdir / "noop-cache"
    versions = populate_cache(cache_dir, n)
    remote_cfg = workdir / "remote.yaml"
    remote_cfg.write_text(remote_file([(f"a{i}", src, ck) for i, (src, ck, _) in enumerate(versions)]))
    local_cfg = workdir / "local.yaml"
    local_cfg.write_text(adapters_file([(f"a{i}", d) for i, (_, _, d) in enumerate(versions)]))
    async with session() as s:
        sem = asyncio.Semaphore(16)

        async def load(i: int, d: str) -> None:
            async with sem:
                await direct_load(s, server, f"a{i}", d)

        await asyncio.gather(*(load(i, d) for i, (_, _, d) in enumerate(versions)))

    cache = AdapterCache(cache_dir, RemoteFetcher(http=None, s3=None), max_bytes=None, gc_grace=900)
    cache.open()
    client = VLLMClient(server)

    def reconciler(config: Path, remote: bool) -> Reconciler:
        source: WatchedFile[AdaptersConfig] = WatchedFile(config, parse_adapters)
        options = SyncOptions(plan=PlanOptions())
        return Reconciler(
            source, client, options, SyncMetrics(CollectorRegistry()), cache=cache if remote else None
        )

    recs = {"s3": reconciler(remote_cfg, True), "local": reconciler(local_cfg, False)}
    cpu: dict[str, list[float]] = {"s3": [], "local": []}
    try:
        for rec in recs.values():
            await rec.source.reload()  # type: ignore[attr-defined]
            await rec.run_pass({"bench"})
            first = await rec.run_pass({"bench"})
            if first.actions:
                raise RuntimeError(f"expected a no-op pass, got {first.actions} actions ({first.result})")
        for _ in range(runs):
            for kind in ("local", "s3"):  # alternating
                samples = []
                for _ in range(passes):
                    c0 = time.process_time()
                    result = await recs[kind].run_pass({"bench"})
                    samples.append(time.process_time() - c0)
                    assert result.actions == 0, result
                cpu[kind].append(statistics.median(samples))
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(3):
                await recs["s3"].run_pass({"bench"})
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    finally:
        await client.aclose()
        async with session() as s:
            await unload_all(s, server)
    s3_ms, local_ms = statistics.median(cpu["s3"]) * 1000, statistics.median(cpu["local"]) * 1000
    return {"adapters": n, "s3_cpu_ms": s3_ms, "local_cpu_ms": local_ms, "ratio": s3_ms / local_ms}


# --- (c) RSS ----------------------------------------------------------------------------------


async def bench_rss(workdir: Path, server: str, runs: int) -> dict[str, Any]:
    from lora_syncer.sources.digest import directory_checksum

    local = workdir / "rss-local"
    local.mkdir()
    (local / "adapter_config.json").write_bytes(ADAPTER_CONFIG)
    checksum = str(directory_checksum(workdir / "upload"))
    results: dict[str, list[tuple[int, int]]] = {"local": [], "s3": []}
    async with session() as s:
        for run in range(runs):
            for kind in ("local", "s3"):
                volume = ConfigMapVolume(workdir / f"rss-config-{kind}-{run}")
                name = f"rss-{kind}-{run}"
                entry = (
                    (name, str(local), None) if kind == "local" else (name, f"s3://{BUCKET}/big/", checksum)
                )
                volume.write({KEY: remote_file([entry])})
                cache = workdir / f"rss-cache-{kind}-{run}"
                sidecar = await start_sidecar(
                    workdir, volume.path(KEY), server, "--adapter-cache", str(cache)
                )
                try:
                    await wait_listed_name(s, server, name)
                    await asyncio.sleep(2.0)  # a few resync passes after the load
                    results[kind].append(rss_kib(sidecar.popen.pid))
                finally:
                    sidecar.stop()
                await unload_all(s, server)
                shutil.rmtree(cache, ignore_errors=True)
    med = {k: (statistics.median(r for r, _ in v), max(h for _, h in v)) for k, v in results.items()}
    return {"rss_kib": med}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp, moto_server() as endpoint:
        os.environ.update(s3_env(endpoint))
        workdir = Path(tmp)
        emulator = await start_emulator(workdir)
        try:
            if "a" in args.only or "c" in args.only:
                results["a"] = await bench_declared_to_listed(workdir, emulator.url, args.mb, args.runs)
            if "a" in args.only:
                results["a_warm"] = await bench_declared_to_listed_warm(
                    workdir, emulator.url, args.mb, args.runs
                )
                results["a_boto3_import_s"] = boto3_import_seconds()
            if "c" in args.only:
                results["c"] = await bench_rss(workdir, emulator.url, max(1, args.runs // 2))
            if "b" in args.only:
                results["b"] = await bench_noop(
                    workdir, emulator.url, args.adapters, args.runs, profile=args.profile
                )
        finally:
            emulator.stop()
    return results


def report(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']}")
    if "a" in r:
        a = r["a"]
        print(
            f"(a) {a['mb']} MB s3:// adapter, declared -> listed, cold (a fresh process on both sides): "
            f"sidecar median {a['sidecar_median_s']:.2f} s, "
            f"plain download + direct load {a['direct_median_s']:.2f} s, ratio {a['ratio']:.2f} (target <= 1.2)"
        )
        print(
            f"    runs: sidecar {[round(x, 2) for x in a['sidecar_s']]}, direct {[round(x, 2) for x in a['direct_s']]}"
        )
        if "imported_s" in a:
            print(
                f"    the same download from a process with boto3 already imported: median "
                f"{a['imported_median_s']:.2f} s (runs {[round(x, 2) for x in a['imported_s']]}); "
                f"sidecar / that {a['ratio_vs_imported']:.2f}"
            )
    if "a_boto3_import_s" in r:
        print(
            f"    importing boto3, paid once per process by both cold sides: "
            f"{r['a_boto3_import_s']:.2f} s (median of 3, fresh interpreter holding the sidecar's modules)"
        )
    if "a_warm" in r:
        w = r["a_warm"]
        print(
            f"(a) {w['mb']} MB s3:// adapter, declared -> listed, warm (a new version, S3 client ready on both sides): "
            f"sidecar median {w['sidecar_median_s']:.2f} s, "
            f"plain download + direct load {w['direct_median_s']:.2f} s, ratio {w['ratio']:.2f} (target <= 1.2)"
        )
        print(
            f"    runs: sidecar {[round(x, 2) for x in w['sidecar_s']]}, direct {[round(x, 2) for x in w['direct_s']]}"
        )
    if "b" in r:
        b = r["b"]
        print(
            f"(b) no-op pass CPU, {b['adapters']} adapters: cached s3:// {b['s3_cpu_ms']:.1f} ms, "
            f"local {b['local_cpu_ms']:.1f} ms, ratio {b['ratio']:.2f} (target <= 1.1)"
        )
    if "c" in r:
        for kind, (rss, hwm) in r["c"]["rss_kib"].items():
            print(f"(c) RSS with one {kind} adapter: {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--adapters", type=int, default=10_000)
    parser.add_argument("--only", default="abc")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", action="store_true", help="print (b)'s profile of three s3:// passes")
    parser.add_argument("--role", choices=("main", "cold-baseline"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "cold-baseline":
        asyncio.run(cold_baseline_child(args.server, args.name, args.dest))
        return 0
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
