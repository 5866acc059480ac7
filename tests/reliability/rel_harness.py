"""Scenarios of the reliability tier, shared by its tests and by bench/reliability_report.py.

Each scenario drives the real pieces on 127.0.0.1 (the in-process `Sidecar` or a
`python -m lora_syncer run` child, the emulated vLLM with its fault injection, a directory
written the way kubelet writes a ConfigMap volume) and returns a result holding figures and
the list of invariant violations it found. Tests assert the violations are empty; the report
prints the figures. Every loop here is bounded in count and in time.

The invariants, judged against the emulator's call log (what the server really received):

- lost unload: an adapter that every good file declared in `ensureExist` was unloaded;
- spurious unload: an unload of a name no good file written before it had in `ensureNotExist`,
  or of a name the files in force during the whole preceding second declared present;
- duplicate unload: a second successful unload of a name with no successful load in between;
- redundant load: a load the server refused as "already loaded" in a scenario without lost
  answers (nothing can excuse it there), and load calls per adapter above what the retry policy
  allows for the transitions the files asked for (a storm).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.app import Sidecar
from lora_syncer.config.adapters import parse_adapters
from lora_syncer.config.errors import ConfigError
from lora_syncer.emulator import CallRecord, Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.settings import SyncerSettings
from lora_syncer.sync.vllm_client import TRANSIENT_RETRY

ROOT = Path(__file__).resolve().parents[2]
KEY = "configmap.yaml"
RULES_KEY = "rules.yaml"
MIB = 1024 * 1024
# Bound of every "eventually": never reached when things work.
WAIT = 20.0

FAST_SETTINGS: dict[str, Any] = {
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "reconcile_trigger": 0.5,
    "health_check_timeout": 2.0,
    "health_check_interval": 0.05,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "call_timeout": 2.0,
    "load_timeout": 3.0,
    "shutdown_grace": 2.0,
}


# --- files ------------------------------------------------------------------------------------


def source_of(name: str) -> str:
    return f"org/{name}"


def adapters_yaml(exist: Iterable[str], not_exist: Iterable[str] = (), *, pad_to: int = 0) -> str:
    """An adapters file (upstream format); `pad_to` pads it with a comment to that many bytes."""
    lines = ["vLLMLoRAConfig:", "  name: reliability", "  defaultBaseModel: Qwen/Qwen3-32B"]
    exist, not_exist = list(exist), list(not_exist)
    if exist:
        lines += ["  ensureExist:", "    models:"]
        for name in exist:
            lines += [f"    - id: {name}", f"      source: {source_of(name)}"]
    if not_exist:
        lines += ["  ensureNotExist:", "    models:"]
        for name in not_exist:
            lines += [f"    - id: {name}", f"      source: {source_of(name)}"]
    text = "\n".join(lines) + "\n"
    if pad_to > len(text):
        filler = "# " + "x" * 98 + "\n"
        text += filler * ((pad_to - len(text)) // len(filler))
    return text


def rules_yaml(alias: str, targets: Sequence[tuple[str, int]]) -> str:
    """An InferenceModelRewrite (guide 002 shape) sending `alias` to weighted targets."""
    lines = [
        "apiVersion: inference.networking.x-k8s.io/v1alpha2",
        "kind: InferenceModelRewrite",
        "metadata:",
        "  name: reliability-rewrite",
        "spec:",
        "  rules:",
        "    - matches:",
        "        - model:",
        "            type: Exact",
        f"            value: {alias}",
        "      targets:",
    ]
    for name, weight in targets:
        lines += [f'        - modelRewrite: "{name}"', f"          weight: {weight}"]
    return "\n".join(lines) + "\n"


def malformed_variants(good_exist: Sequence[str], protected: Sequence[str]) -> list[bytes]:
    """Bad adapters files that would unload `protected` if any part of them were applied."""
    base = adapters_yaml(good_exist, protected)
    dup = adapters_yaml(good_exist, [*protected, protected[0]])
    return [
        (base + "  extra: [unclosed\n").encode(),  # YAML syntax error at the end
        dup.encode(),  # duplicate id in ensureNotExist
        base.replace("  name: reliability", "  port: not-a-number").encode(),  # wrong type
        base.replace(f"      source: {source_of(good_exist[0])}\n", "", 1).encode(),  # missing source
        (base + "---\n" + base).encode(),  # two documents
        b"ensureNotExist:\n  models:\n" + b"".join(f"  - id: {p}\n".encode() for p in protected),
    ]


def binary_variants(rng: random.Random) -> list[bytes]:
    """Files that are not UTF-8 text."""
    return [
        bytes(rng.getrandbits(8) for _ in range(4096)) + b"\x00",
        adapters_yaml(["x"]).encode("utf-16"),
        b"vLLMLoRAConfig:\n  name: \xff\xfe\xfa\n",
    ]


# --- the ledger of files and the call-log audit ----------------------------------------------------


@dataclass(frozen=True)
class GoodFile:
    """A file that parses, in force from time `t` (emulator clock) until the next good one."""

    t: float
    exist: frozenset[str]
    not_exist: frozenset[str]


@dataclass
class Ledger:
    """Every file written, judged by the real parser, timed on the emulator's call-log clock."""

    clock: Callable[[], float]
    good: list[GoodFile] = field(default_factory=list)
    written: Counter[str] = field(default_factory=Counter)
    # When the server came back from a restart (it re-reads --lora-modules and forgets the rest).
    restarts: list[float] = field(default_factory=list)

    def note(self, raw: bytes | None, kind: str) -> GoodFile | None:
        self.written[kind] += 1
        if raw is None:
            return None
        try:
            cfg = parse_adapters(raw, KEY)
        except ConfigError:
            return None
        entry = GoodFile(
            self.clock(),
            frozenset(a.id for a in cfg.ensure_exist),
            frozenset(a.id for a in cfg.ensure_not_exist) - cfg.conflicts,
        )
        self.good.append(entry)
        return entry

    def in_force(self, t: float) -> GoodFile | None:
        current = None
        for g in self.good:
            if g.t <= t:
                current = g
        return current

    def transitions_into_exist(self, name: str) -> int:
        """How many good files declared `name` present after one that did not (loads it may need)."""
        count, before = 0, False
        for g in self.good:
            now = name in g.exist
            if now and not before:
                count += 1
            before = now
        return count


def unload_violations(calls: Sequence[CallRecord], ledger: Ledger, lag: float = 1.0) -> list[str]:
    """Lost, spurious and duplicate unloads in the call log (see the module docstring)."""
    out: list[str] = []
    protected = frozenset.intersection(*(g.exist for g in ledger.good)) if ledger.good else frozenset()
    unloaded: set[str] = set()
    restarts = list(ledger.restarts)
    for c in calls:
        while restarts and restarts[0] <= c.t:
            restarts.pop(0)
            unloaded.clear()  # a restarted server has its --lora-modules again
        if c.op == "load" and c.status == 200:
            unloaded.discard(c.name)
        if c.op != "unload":
            continue
        if c.name in protected:
            out.append(f"lost: {c.name} unloaded at t={c.t:.3f} though every good file declares it present")
            continue
        if not any(g.t <= c.t and c.name in g.not_exist for g in ledger.good):
            out.append(f"spurious: {c.name} unloaded at t={c.t:.3f}; no good file asked for it")
            continue
        window = [g for g in ledger.good if c.t - lag < g.t <= c.t]
        before = ledger.in_force(c.t - lag)
        if before is not None and all(c.name in g.exist for g in [before, *window]):
            out.append(f"stale: {c.name} unloaded at t={c.t:.3f}; declared present for the whole last {lag}s")
        if c.status == 200:
            if c.name in unloaded:
                out.append(f"duplicate: {c.name} unloaded twice with success, no load or restart in between")
            unloaded.add(c.name)
    return out


def load_counts(calls: Sequence[CallRecord]) -> Counter[str]:
    return Counter(c.name for c in calls if c.op == "load")


def redundant_loads(calls: Sequence[CallRecord]) -> list[CallRecord]:
    """Loads the server refused with 400: every source in these scenarios is valid, so 'already loaded'."""
    return [c for c in calls if c.op == "load" and c.status == 400]


def rss_kib() -> int:
    """Resident set size of this process now, from /proc/self/statm."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def settled_rss_kib() -> int:
    gc.collect()
    return rss_kib()


async def poll_until(predicate: Callable[[], Any], within: float, interval: float = 0.01) -> float | None:
    """Seconds until `predicate()` is truthy (awaited if a coroutine), or None after `within`."""
    start = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start >= within:
            return None
        await asyncio.sleep(interval)


def converged(emulator: Emulator, final: GoodFile) -> bool:
    """The server holds every adapter the file declares present and none it declares absent."""
    loaded = emulator.loaded()
    return final.exist <= loaded.keys() and not (final.not_exist & loaded.keys())


# --- the in-process world ---------------------------------------------------------------------------


@dataclass
class World:
    """An emulator, a ConfigMap volume and the sidecar in-process against both."""

    emulator: Emulator
    volume: ConfigMapVolume
    ledger: Ledger
    sidecar: Sidecar | None = None
    rules_volume: ConfigMapVolume | None = None

    def write(self, raw: str | bytes, kind: str = "good") -> GoodFile | None:
        data = raw.encode() if isinstance(raw, str) else raw
        entry = self.ledger.note(data, kind)
        self.volume.write({KEY: data})
        return entry

    def delete(self) -> None:
        self.ledger.note(None, "deleted")
        self.volume.remove_key(KEY)

    async def start_sidecar(self, proxy_options: Any = None, **overrides: Any) -> Sidecar:
        values: dict[str, Any] = {
            "config": self.volume.path(KEY),
            "server": self.emulator.url,
            **FAST_SETTINGS,
            **overrides,
        }
        self.sidecar = Sidecar(SyncerSettings(**values), proxy_options)
        await self.sidecar.start()
        return self.sidecar


@contextlib.asynccontextmanager
async def world(workdir: Path, config: EmulatorConfig | None = None) -> AsyncIterator[World]:
    emulator = Emulator(config or EmulatorConfig(seed=7))
    await emulator.start()
    w = World(emulator, ConfigMapVolume(workdir / "config"), Ledger(emulator.call_log.now))
    try:
        yield w
    finally:
        try:
            if w.sidecar is not None:
                await w.sidecar.stop()
        finally:
            await emulator.stop()


# --- scenario: ConfigMap churn ------------------------------------------------------------------


CORE = tuple(f"core-{i}" for i in range(4))
ROTATING = tuple(f"rot-{i}" for i in range(6))


@dataclass
class ChurnResult:
    swaps: int
    kinds: dict[str, int]
    unload_violations: list[str]
    redundant_loads: int
    load_storms: list[str]
    max_loads_per_adapter: int
    converge_seconds: float | None
    rss_warm_kib: int = 0
    rss_end_kib: int = 0
    rss_samples_kib: list[int] = field(default_factory=list)
    peak_rss_kib: int = 0
    passes: int = 0

    @property
    def violations(self) -> list[str]:
        out = list(self.unload_violations) + list(self.load_storms)
        if self.redundant_loads:
            out.append(f"{self.redundant_loads} load(s) of adapters already loaded")
        if self.converge_seconds is None:
            out.append("did not converge to the last good file")
        return out


def _random_good(rng: random.Random, pad_to: int = 0) -> str:
    exist, not_exist = list(CORE), []
    for name in ROTATING:
        roll = rng.random()
        if roll < 0.45:
            exist.append(name)
        elif roll < 0.8:
            not_exist.append(name)
    return adapters_yaml(exist, not_exist, pad_to=pad_to)


async def run_churn(
    workdir: Path,
    *,
    seconds: float,
    swaps_per_second: float,
    seed: int = 1,
    warmup_fraction: float = 0.0,
) -> ChurnResult:
    """Swap the adapters file many times a second: good, malformed, deleted/restored, 1 MiB, binary."""
    rng = random.Random(seed)
    kinds = ["good", "malformed", "deleted", "restored", "huge_good", "huge_garbage", "binary"]
    weights = [45, 20, 8, 0, 5, 5, 12]
    async with world(workdir) as w:
        w.write(_random_good(rng))
        await w.start_sidecar(reconcile_trigger=0.5)
        steps = max(1, int(seconds * swaps_per_second))
        interval = 1.0 / swaps_per_second
        warm_at = int(steps * warmup_fraction)
        rss_warm = 0
        samples: list[int] = []
        deleted = False
        for step in range(steps):
            if warmup_fraction and step == warm_at:
                rss_warm = settled_rss_kib()
            if warmup_fraction and step % max(1, steps // 10) == 0:
                samples.append(settled_rss_kib())
            kind = "restored" if deleted else rng.choices(kinds, weights)[0]
            deleted = False
            if kind in ("good", "restored"):
                w.write(_random_good(rng), kind)
            elif kind == "malformed":
                present = [n for n in ROTATING if rng.random() < 0.5] or [ROTATING[0]]
                w.write(rng.choice(malformed_variants([*CORE, *present], CORE)), kind)
            elif kind == "deleted":
                w.delete()
                deleted = True
            elif kind == "huge_good":
                text = _random_good(rng, pad_to=MIB - 4096)
                await asyncio.to_thread(w.write, text, kind)
            elif kind == "huge_garbage":
                # Valid YAML, wrong shape: a 1 MiB string where a mapping belongs.
                garbage = ("vLLMLoRAConfig:\n  ensureExist: '" + "x" * (MIB - 64) + "'\n").encode()
                await asyncio.to_thread(w.write, garbage, kind)
            else:
                w.write(rng.choice(binary_variants(rng)), kind)
            await asyncio.sleep(interval)
        # Churn ends on a good file. (Ending on a bad one, the syncer keeps the last good file it
        # managed to read: one that lived 40 ms between two bad ones may never have been read.)
        final = w.write(_random_good(rng), "restored" if deleted else "good")
        assert final is not None
        took = await poll_until(lambda: converged(w.emulator, final), WAIT)
        await asyncio.sleep(0.3)  # a quiet moment: nothing more may happen to the server
        calls = w.emulator.calls
        counts = load_counts(calls)
        storms = []
        for name in set(counts):
            allowed = TRANSIENT_RETRY.attempts * max(1, w.ledger.transitions_into_exist(name))
            if counts[name] > allowed:
                storms.append(f"storm: {name} loaded {counts[name]} times; the files allow {allowed}")
        assert w.sidecar is not None and w.sidecar.reconciler is not None
        result = ChurnResult(
            swaps=steps,
            kinds=dict(w.ledger.written),
            unload_violations=unload_violations(calls, w.ledger),
            redundant_loads=len(redundant_loads(calls)),
            load_storms=storms,
            max_loads_per_adapter=max(counts.values(), default=0),
            converge_seconds=took,
            passes=w.sidecar.reconciler.status.passes,
        )
        if warmup_fraction:
            result.rss_warm_kib = rss_warm
            result.rss_end_kib = settled_rss_kib()
            result.rss_samples_kib = [*samples, result.rss_end_kib]
        result.peak_rss_kib = peak_rss_kib()
        return result


# --- scenario: vLLM restarting during passes, slow loads, dropped connections -----------------------------


@dataclass
class FaultResult:
    restarts: int
    injected: int
    load_calls: int
    unload_violations: list[str]
    load_storms: list[str]
    converge_seconds: float | None
    successful_unloads: dict[str, int]

    @property
    def violations(self) -> list[str]:
        out = list(self.unload_violations) + list(self.load_storms)
        if self.converge_seconds is None:
            out.append("did not converge after faults stopped")
        return out


def retries_within(seconds: float, initial: float, maximum: float) -> int:
    """How many per-adapter backoff expiries fit in `seconds` (the doubling schedule, jitter aside)."""
    n, spent, delay = 0, 0.0, initial * 0.9
    while spent + delay <= seconds and n < 1000:
        spent += delay
        n += 1
        delay = min(delay * 2, maximum * 0.9)
    return n


async def run_restart_storm(
    workdir: Path,
    *,
    restarts: int = 6,
    period: float = 0.5,
    down_seconds: float = 0.1,
    drop_rate: float = 0.25,
    failure_mode: str = "drop",
    seed: int = 3,
) -> FaultResult:
    """vLLM restarting every `period` s while loads are slower than the timeout and a share of calls drop."""
    exist = [f"keep-{i}" for i in range(10)]
    gone = [f"gone-{i}" for i in range(4)]
    # `gone-*` are --lora-modules: back after every restart, so every epoch has unloads to make.
    static = tuple((name, source_of(name)) for name in gone)
    async with world(workdir, EmulatorConfig(seed=seed, lora_modules=static)) as w:
        w.write(adapters_yaml(exist, gone))
        faults = w.emulator.faults
        faults.update(
            {
                "failure_mode": failure_mode,
                "failure_rate": {"load": drop_rate, "unload": drop_rate, "models": drop_rate / 2},
            }
        )
        faults.load_delay = 0.5  # beyond the 0.3 s load timeout below: every load times out
        await w.start_sidecar(load_timeout=0.3, call_timeout=1.0)
        fault_started = time.monotonic()
        for i in range(restarts):
            await asyncio.sleep(period)
            if i == restarts // 2:
                faults.load_delay = 0.02  # second half: loads fit, but calls still drop
            await w.emulator.restart(down_seconds=down_seconds)
            w.ledger.restarts.append(w.emulator.call_log.now())
            w.emulator.faults.update(
                {
                    "failure_mode": failure_mode,
                    "failure_rate": {"load": drop_rate, "unload": drop_rate, "models": drop_rate / 2},
                }
            )
        fault_seconds = time.monotonic() - fault_started
        injected = sum(w.emulator.call_log.injected_failures.values())
        w.emulator.reset_faults()
        final = w.ledger.good[-1]
        took = await poll_until(lambda: converged(w.emulator, final), WAIT)
        await asyncio.sleep(0.3)
        calls = w.emulator.calls
        counts = load_counts(calls)
        per_epoch = TRANSIENT_RETRY.attempts * (2 + retries_within(fault_seconds + WAIT, 0.2, 1.0))
        allowed = (restarts + 1) * per_epoch
        storms = [
            f"storm: {n} loaded {c} times (policy allows {allowed})" for n, c in counts.items() if c > allowed
        ]
        ok_unloads = Counter(c.name for c in calls if c.op == "unload" and c.status == 200)
        return FaultResult(
            restarts=restarts,
            injected=injected,
            load_calls=sum(counts.values()),
            unload_violations=unload_violations(calls, w.ledger),
            load_storms=storms,
            converge_seconds=took,
            successful_unloads=dict(ok_unloads),
        )


# --- scenario: the process killed with SIGTERM mid-pass and started again ---------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LORA_SYNCER_") and k not in ("DYNAMIC_LORA_ROLLOUT_CONFIG", "VLLM_API_KEY")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    """One `python -m lora_syncer ...` process; its stderr (JSON log lines) goes to a file."""

    proc: asyncio.subprocess.Process
    log_path: Path
    metrics_port: int

    @classmethod
    async def spawn(cls, args: Sequence[str], log_path: Path, metrics_port: int) -> Child:
        log = await asyncio.to_thread(log_path.open, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lora_syncer",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=clean_env(),
                cwd=str(log_path.parent),
            )
        finally:
            log.close()
        return cls(proc, log_path, metrics_port)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def stop(self, sig: int = signal.SIGTERM, within: float = WAIT) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def run_args(config: Path, server: str, metrics_port: int, *extra: str) -> list[str]:
    return [
        "run",
        "--config",
        str(config),
        "--server",
        server,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
        "--health-check-interval",
        "0.05",
        "--reconcile-trigger",
        "0.5",
        "--backoff-initial",
        "0.2",
        "--log-format",
        "json",
        *extra,
    ]


@dataclass
class ProcessResult:
    cycles: int
    exit_codes: list[int]
    unload_violations: list[str]
    redundant_loads: int
    lost: list[str]
    converge_seconds: float | None
    load_calls: int

    @property
    def violations(self) -> list[str]:
        out = list(self.unload_violations) + list(self.lost)
        if any(code != 0 for code in self.exit_codes):
            out.append(f"exit codes {self.exit_codes}")
        if self.redundant_loads:
            out.append(f"{self.redundant_loads} load(s) of adapters already loaded")
        if self.converge_seconds is None:
            out.append("the last process did not converge")
        return out


async def run_process_restarts(workdir: Path, *, cycles: int = 3, seed: int = 5) -> ProcessResult:
    """SIGTERM a real `lora-syncer run` while loads are in flight, change the file, start it again; repeat."""
    rng = random.Random(seed)
    names = [f"proc-{i}" for i in range(10)]
    children: list[Child] = []
    codes: list[int] = []
    async with world(workdir) as w:
        w.emulator.faults.load_delay = 0.25
        exist = names[:6]
        w.write(adapters_yaml(exist))
        try:
            for cycle in range(cycles):
                port = free_port()
                child = await Child.spawn(
                    run_args(w.volume.path(KEY), w.emulator.url, port, "--shutdown-grace", "5"),
                    workdir / f"child{cycle}.log",
                    port,
                )
                children.append(child)
                before = len(w.emulator.calls)
                in_flight = await poll_until(
                    lambda b=before: w.emulator.call_log.admin_in_flight > 0 or len(w.emulator.calls) > b,
                    WAIT,
                )
                if in_flight is None:
                    break
                codes.append(await child.stop())
                # Between runs the ConfigMap changes: some adapters go, others arrive.
                moved = rng.sample(names, 3)
                exist = sorted((set(exist) | set(moved[:2])) - {moved[2]} | set(names[:2]))
                w.write(adapters_yaml(exist, [n for n in names if n not in exist]))
            w.emulator.faults.load_delay = 0.0
            port = free_port()
            last = await Child.spawn(
                run_args(w.volume.path(KEY), w.emulator.url, port), workdir / "last.log", port
            )
            children.append(last)
            final = w.ledger.good[-1]
            took = await poll_until(lambda: converged(w.emulator, final), WAIT)
            await asyncio.sleep(0.3)
            codes.append(await last.stop())
        finally:
            for child in children:
                await child.kill()
        calls = w.emulator.calls
        lost = [n for n in final.exist if n not in w.emulator.loaded()]
        return ProcessResult(
            cycles=cycles,
            exit_codes=codes,
            unload_violations=unload_violations(calls, w.ledger, lag=0.5),
            redundant_loads=len(redundant_loads(calls)),
            lost=[f"lost: {n} declared but not loaded" for n in lost],
            converge_seconds=took,
            load_calls=len([c for c in calls if c.op == "load"]),
        )


# --- scenario: the proxy under load while the upstream restarts and the rules change -----------------------

ALIAS = "canary"
V1, V2, V3 = "canary-v1", "canary-v2", "canary-v3"
RULE_VERSIONS: tuple[tuple[tuple[str, int], ...], ...] = (
    ((V1, 90), (V2, 10)),
    ((V1, 50), (V2, 50)),
    ((V2, 100),),
    ((V2, 50), (V3, 50)),
    ((V3, 100),),
)


@dataclass
class ProxyLoadResult:
    requests: int = 0
    correct: int = 0
    openai_errors: int = 0
    cut_short: int = 0
    hung: int = 0
    wrong: list[str] = field(default_factory=list)
    bad_errors: list[str] = field(default_factory=list)
    restarts: int = 0
    rules_changes: int = 0
    split: list[str] = field(default_factory=list)  # one line per stable window
    split_off: list[str] = field(default_factory=list)
    converge_seconds: float | None = None
    active_streams_after: float | None = None
    in_flight_after: int | None = None
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def violations(self) -> list[str]:
        out = [*self.wrong[:5], *self.bad_errors[:5], *self.split_off]
        if self.hung:
            out.append(f"{self.hung} request(s) hung past the client timeout")
        if self.converge_seconds is None:
            out.append("the syncer did not converge after faults stopped")
        if self.active_streams_after != 0 or self.in_flight_after != 0:
            out.append(
                f"proxy not idle after the run: streams={self.active_streams_after} in_flight={self.in_flight_after}"
            )
        return out


def is_openai_error(body: Any) -> bool:
    """`{"error": {"message": str, "type": str, ...}}`, the shape vLLM and OpenAI answer errors in."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("message"), str)
        and isinstance(body["error"].get("type"), str)
    )


def proxy_options(upstream: str, rules_path: Path, **overrides: Any) -> Any:
    from lora_syncer.proxy.options import ProxyOptions

    values: dict[str, Any] = {
        "upstream": upstream,
        "rules_path": rules_path,
        "host": "127.0.0.1",
        "port": 0,
        "poll_interval": 0.05,
        "upstream_timeout": 5.0,
        "upstream_connect_timeout": 1.0,
        "client_body_timeout": 2.0,
        "client_idle_timeout": 5.0,
    }
    values.update(overrides)
    return ProxyOptions(**values)


def gauge(sidecar: Sidecar, name: str) -> float | None:
    value = sidecar.registry.get_sample_value(name)
    return None if value is None else float(value)


class _Timeline:
    """When each rules version was written and when the upstream restarted (monotonic clock)."""

    def __init__(self) -> None:
        self.rules: list[tuple[float, frozenset[str]]] = []
        self.restarts: list[tuple[float, float]] = []

    def allowed(self, sent: float, received: float) -> frozenset[str]:
        """Targets of every version that may have been in force between `sent` and `received`."""
        first = max(0, sum(1 for t, _ in self.rules if t <= sent) - 2)  # the proxy may lag one version
        last = sum(1 for t, _ in self.rules if t <= received)
        out: frozenset[str] = frozenset()
        for _, targets in self.rules[first:last]:
            out |= targets
        return out

    def restarted_between(self, sent: float, received: float) -> bool:
        return any(start <= received and end >= sent for start, end in self.restarts)


async def _one_request(
    http: aiohttp.ClientSession, url: str, stream: bool, timeline: _Timeline, result: ProxyLoadResult
) -> None:
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "hello"}],
        "max_completion_tokens": 4,
        "stream": stream,
    }
    sent = time.monotonic()
    result.requests += 1
    status = 0
    try:
        async with http.post(url, json=body) as resp:
            status = resp.status
            result.statuses[status] += 1
            if status == 200 and stream:
                models: set[str] = set()
                done = False
                try:
                    async for raw in resp.content:
                        line = raw.decode().strip()
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            models.add(json.loads(line[6:]).get("model"))
                except aiohttp.ClientPayloadError:
                    done = False
                received = time.monotonic()
                wrong = models - timeline.allowed(sent, received)
                if wrong:
                    result.wrong.append(f"stream answered by {sorted(wrong)}")
                elif done:
                    result.correct += 1
                elif timeline.restarted_between(sent, received):
                    result.cut_short += 1  # the upstream died mid-answer; the client saw it cut
                else:
                    result.bad_errors.append("stream cut short with no upstream restart")
                return
            text = await resp.text()
    except TimeoutError:
        result.hung += 1
        return
    except aiohttp.ClientError as exc:
        result.bad_errors.append(f"status {status}: connection error {type(exc).__name__}")
        return
    received = time.monotonic()
    try:
        parsed = json.loads(text)
    except ValueError:
        result.bad_errors.append(f"status {status}: not JSON: {text[:120]!r}")
        return
    if status == 200:
        model = parsed.get("model") if isinstance(parsed, dict) else None
        if model in timeline.allowed(sent, received):
            result.correct += 1
        else:
            result.wrong.append(f"answered by {model!r}")
    elif is_openai_error(parsed):
        result.openai_errors += 1
    else:
        result.bad_errors.append(f"status {status}: not an OpenAI error: {text[:120]!r}")


async def _split_window(
    w: World,
    http: aiohttp.ClientSession,
    url: str,
    targets: Sequence[tuple[str, int]],
    n: int,
    result: ProxyLoadResult,
) -> None:
    assert w.sidecar is not None and w.rules_volume is not None
    proxy = w.sidecar.proxy
    before = proxy.status()["generation"]
    w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, targets)})
    if await poll_until(lambda: proxy.status()["generation"] not in (before, None), WAIT) is None:
        result.split_off.append(f"rules {targets} never came into force")
        return
    served: Counter[str] = Counter()
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem, http.post(url, json={"model": ALIAS, "prompt": "x", "max_tokens": 1}) as resp:
            body = await resp.json()
            served[body.get("model", f"status {resp.status}")] += 1

    await asyncio.gather(*(one() for _ in range(n)))
    total = sum(weight for _, weight in targets)
    expected = {name: n * weight / total for name, weight in targets}
    line = f"{'/'.join(str(wt) for _, wt in targets)}: " + ", ".join(
        f"{k}={served[k]}" for k in sorted(served)
    )
    result.split.append(line)
    for name, want in expected.items():
        if abs(served[name] - want) > 1:
            result.split_off.append(f"split {targets}: {name} got {served[name]} of {n}, expected {want}")
    strays = set(served) - set(expected)
    if strays:
        result.split_off.append(f"split {targets}: answers from {sorted(strays)}")


async def run_proxy_under_faults(
    workdir: Path,
    *,
    seconds: float = 6.0,
    clients: int = 8,
    restart_every: float = 1.2,
    rules_every: float = 0.7,
    drop_rate: float = 0.05,
    stream_share: float = 0.25,
    split_requests: int = 100,
    seed: int = 11,
) -> ProxyLoadResult:
    """Clients load the proxy while vLLM restarts, a share of chats drop, and the rules file changes."""
    rng = random.Random(seed)
    result = ProxyLoadResult()
    timeline = _Timeline()
    async with world(workdir, EmulatorConfig(seed=seed)) as w:
        w.rules_volume = ConfigMapVolume(workdir / "rules")
        w.write(adapters_yaml([V1, V2, V3]))
        w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, RULE_VERSIONS[0])})
        timeline.rules.append((time.monotonic(), frozenset(n for n, _ in RULE_VERSIONS[0])))
        options = proxy_options(w.emulator.url, w.rules_volume.path(RULES_KEY))
        sidecar = await w.start_sidecar(options, reconcile_trigger=0.3)
        assert sidecar.reconciler is not None
        status = sidecar.reconciler.status
        all_loaded = frozenset({V1, V2, V3})
        if await poll_until(lambda: all_loaded <= status.loaded_names(), WAIT) is None:
            result.converge_seconds = None
            return result
        url = f"http://127.0.0.1:{sidecar.proxy.port}/v1/chat/completions"
        stop = asyncio.Event()

        def set_faults() -> None:
            w.emulator.faults.update({"failure_mode": "drop", "failure_rate": {"chat": drop_rate}})

        async def restarts() -> None:
            while not stop.is_set():
                await asyncio.sleep(restart_every)
                if stop.is_set():
                    return
                began = time.monotonic()
                await w.emulator.restart(down_seconds=0.2)
                set_faults()
                timeline.restarts.append((began, time.monotonic()))
                result.restarts += 1

        async def rules() -> None:
            index = 0
            while not stop.is_set():
                await asyncio.sleep(rules_every)
                index = (index + 1) % len(RULE_VERSIONS)
                targets = RULE_VERSIONS[index]
                timeline.rules.append((time.monotonic(), frozenset(n for n, _ in targets)))
                assert w.rules_volume is not None
                w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, targets)})
                result.rules_changes += 1

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def client() -> None:
                while not stop.is_set():
                    await _one_request(http, url, rng.random() < stream_share, timeline, result)

            set_faults()
            background = [asyncio.create_task(restarts()), asyncio.create_task(rules())]
            workers = [asyncio.create_task(client()) for _ in range(clients)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*workers, *background)
            # Faults stop: the syncer must get every target back, then the split must be exact.
            w.emulator.reset_faults()
            result.converge_seconds = await poll_until(
                lambda: all_loaded <= status.loaded_names() and all_loaded <= w.emulator.loaded().keys(), WAIT
            )
            if result.converge_seconds is not None:
                for targets in RULE_VERSIONS:
                    await _split_window(
                        w,
                        http,
                        url.replace("chat/completions", "completions"),
                        targets,
                        split_requests,
                        result,
                    )
        await poll_until(lambda: sidecar.proxy.core.in_flight == 0, 5.0)
        result.in_flight_after = sidecar.proxy.core.in_flight
        result.active_streams_after = gauge(sidecar, "lora_syncer_proxy_active_streams")
        return result
