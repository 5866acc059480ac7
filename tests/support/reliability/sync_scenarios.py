"""Syncer scenarios: ConfigMap churn, vLLM restart storms, SIGTERM/restart cycles of a real process."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lora_syncer.emulator import EmulatorConfig
from lora_syncer.sync.vllm_client import TRANSIENT_RETRY
from tests.support.net import free_port
from tests.support.processes import Child, run_args
from tests.support.reliability.audit import (
    converged,
    load_counts,
    redundant_loads,
    unload_violations,
)
from tests.support.reliability.files import (
    KEY,
    MIB,
    adapters_yaml,
    binary_variants,
    malformed_variants,
    source_of,
)
from tests.support.reliability.memory import peak_rss_kib, settled_rss_kib
from tests.support.reliability.world import world
from tests.support.wait import WAIT, seconds_until

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
        took = await seconds_until(lambda: converged(w.emulator, final), WAIT)
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
        took = await seconds_until(lambda: converged(w.emulator, final), WAIT)
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

                def busy(before: int = before) -> bool:
                    return w.emulator.call_log.admin_in_flight > 0 or len(w.emulator.calls) > before

                in_flight = await seconds_until(busy, WAIT)
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
            took = await seconds_until(lambda: converged(w.emulator, final), WAIT)
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
            unload_violations=unload_violations(calls, w.ledger),
            redundant_loads=len(redundant_loads(calls)),
            lost=[f"lost: {n} declared but not loaded" for n in lost],
            converge_seconds=took,
            load_calls=len([c for c in calls if c.op == "load"]),
        )
