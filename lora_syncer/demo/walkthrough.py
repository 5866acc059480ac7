"""Walk the LoRA Adapter Rollout guide against a model server, checking every step.

In one process: the model server (emulator or real vLLM), two ConfigMap volumes in a temporary
directory written the way kubelet writes them, and the sidecar (syncer + health server + proxy),
all on free loopback ports. Each step replaces one ConfigMap key, waits on `/status` until the
syncer or the proxy has acted on it, sends the guide's 20 requests through the proxy and checks
the split and the adapters. The first step that does not hold ends the walk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.app import Sidecar
from lora_syncer.demo.checks import (
    Split,
    check_adapters,
    check_split,
    declared,
    proxy_settled,
    syncer_settled,
    unified_diff,
)
from lora_syncer.demo.render import Reporter
from lora_syncer.demo.servers import EmulatorServer, ModelServer, RealVLLMServer
from lora_syncer.demo.steps import KEYS, Step, Target, Walkthrough, load_walkthrough, with_sources
from lora_syncer.demo.traffic import send_requests
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.settings import SyncerSettings

POLL_SECONDS = 0.02
_HTTP = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class DemoOptions:
    """How to run the walk. `fault_step` (tests only) makes the server fail everything in that step."""

    real_vllm: bool = False
    converge_timeout: float = 10.0
    request_timeout: float = 30.0
    fault_step: str | None = None
    pause: Callable[[], Awaitable[None]] | None = None  # awaited between steps (--step)


@dataclass
class DemoResult:
    """The outcome: whether every step held, the first failing step and why, the splits seen."""

    ok: bool
    seconds: float
    failed_step: Step | None = None
    failures: list[str] = field(default_factory=list)
    splits: dict[str, Split] = field(default_factory=dict)


class StepFailed(Exception):
    """A step did not hold; carries the reasons."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures


def generation(text: str) -> str:
    """The generation `/status` reports for a file with this content (sha256, 12 hex digits)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class DemoRun:
    """One walk: the volumes, the sidecar, the HTTP session, what was written last (also `demo --rollout`'s)."""

    def __init__(
        self,
        walk: Walkthrough,
        server: ModelServer,
        workdir: Path,
        options: DemoOptions,
        reporter: Reporter,
        session: aiohttp.ClientSession,
    ) -> None:
        self.walk = walk
        self.server = server
        self.options = options
        self.reporter = reporter
        self.session = session
        self.volumes: dict[Target, ConfigMapVolume] = {
            "adapters": ConfigMapVolume(workdir / "adapters"),
            "rules": ConfigMapVolume(workdir / "rules"),
        }
        self.sources = server.sources(walk.adapter_names)
        self.current: dict[Target, str] = {}
        self.sidecar: Sidecar | None = None

    # -- files -------------------------------------------------------------------------------

    def content(self, target: Target, text: str) -> str:
        return with_sources(text, self.sources) if target == "adapters" else text

    def path(self, target: Target) -> Path:
        return self.volumes[target].path(KEYS[target])

    async def write(self, target: Target, text: str) -> None:
        await asyncio.to_thread(self.volumes[target].write, {KEYS[target]: text})
        self.current[target] = text

    # -- sidecar -------------------------------------------------------------------------------

    async def start(self) -> Sidecar:
        for target in ("adapters", "rules"):
            await self.write(target, self.content(target, self.walk.start[target].content))
        settings = SyncerSettings(
            config=self.path("adapters"),
            server=self.server.url,
            metrics_host="127.0.0.1",
            metrics_port=0,
            health_check_interval=0.1,
            reconcile_trigger=5.0,
            backoff_initial=1.0,
            backoff_max=5.0,
            shutdown_grace=1.0,
            load_timeout=max(self.options.converge_timeout, 1.0),
        )
        proxy = ProxyOptions(
            upstream=self.server.url,
            rules_path=self.path("rules"),
            host="127.0.0.1",
            port=0,
            upstream_timeout=self.options.request_timeout,
            poll_interval=0.2,
        )
        self.sidecar = Sidecar(settings, proxy)
        await self.sidecar.start()
        await self.wait_adapters("syncer reads the adapters file")
        await self.wait_rules("proxy reads the rules file")
        return self.sidecar

    @property
    def status_url(self) -> str:
        assert self.sidecar is not None
        return f"http://127.0.0.1:{self.sidecar.health_port}/status"

    @property
    def proxy_url(self) -> str:
        assert self.sidecar is not None
        return f"http://127.0.0.1:{self.sidecar.proxy.port}"

    async def status(self) -> dict[str, Any]:
        async with self.session.get(self.status_url, timeout=_HTTP) as resp:
            body: dict[str, Any] = await resp.json()
            return body

    async def served(self) -> list[str]:
        """Adapter ids the model server lists in `GET /v1/models` (asked directly, not via the syncer)."""
        async with self.session.get(f"{self.server.url}/v1/models", timeout=_HTTP) as resp:
            body = await resp.json()
        return [m["id"] for m in body.get("data", []) if m.get("parent") is not None]

    # -- waiting -------------------------------------------------------------------------------

    async def wait_adapters(
        self, label: str, before: Mapping[str, Any] | None = None
    ) -> dict[str, list[str]]:
        """Poll `/status` until the syncer acted on the adapters file; returns each adapter's states seen.

        `before` is the `adapters` section read before the file was written: where each story starts.
        """
        text = self.current["adapters"]
        gen, wanted = generation(text), declared(text)
        history: dict[str, list[str]] = {}
        for name in wanted:
            if before and name in before:
                history[name] = [before[name]["state"]]
        deadline = time.monotonic() + self.options.converge_timeout
        async with self.reporter.waiting(label) as line:
            while True:
                syncer = (await self.status())["syncer"]
                for name in wanted:
                    state = (syncer["adapters"].get(name) or {}).get("state")
                    seen = history.setdefault(name, [])
                    if state is not None and (not seen or seen[-1] != state):
                        seen.append(state)
                line.update("  ".join(f"{n}={h[-1]}" for n, h in history.items() if h))
                if syncer_settled(syncer, gen, wanted):
                    line.update("")
                    return history
                if time.monotonic() > deadline:
                    states = {n: h[-1] if h else "unknown" for n, h in history.items()}
                    raise StepFailed(
                        [f"the syncer did not settle within {self.options.converge_timeout:g} s: {states}"]
                    )
                await asyncio.sleep(POLL_SECONDS)

    async def wait_rules(self, label: str) -> dict[str, Any]:
        """Poll `/status` until the proxy serves the rules file just written; returns its section."""
        gen = generation(self.current["rules"])
        deadline = time.monotonic() + self.options.converge_timeout
        async with self.reporter.waiting(label):
            while True:
                proxy = (await self.status())["proxy"]
                in_force, error = proxy_settled(proxy, gen)
                if in_force:
                    return dict(proxy)
                if time.monotonic() > deadline:
                    why = f": {error}" if error else ""
                    limit = self.options.converge_timeout
                    raise StepFailed([f"the proxy did not put the rules in force within {limit:g} s{why}"])
                await asyncio.sleep(POLL_SECONDS)

    # -- one step --------------------------------------------------------------------------------

    async def run_step(self, step: Step) -> Split | None:
        target = step.target
        after = self.content(target, step.manifest.content)
        diff = unified_diff(self.current[target], after, KEYS[target])
        self.reporter.edit(
            f"kubectl edit configmap {step.manifest.configmap}   # as {step.manifest.filename}",
            str(self.path(target)),
            diff,
        )
        before = (await self.status())["syncer"]["adapters"]
        await self.write(target, after)
        failures: list[str] = []
        if target == "adapters":
            history = await self.wait_adapters("syncer acts on the new adapters file", before)
            status = (await self.status())["syncer"]["adapters"]
            served = await self.served()
            wanted = declared(after)
            rows = [
                (name, wanted[name], history.get(name, []), (status.get(name) or {}).get("lastError"))
                for name in wanted
            ]
            self.reporter.adapters(rows, served)
            adapter_failures = check_adapters(step.expect, status, served)
            self.reporter.verdict(adapter_failures, "adapters as declared, and GET /v1/models agrees")
            failures += adapter_failures
        else:
            proxy = await self.wait_rules("proxy puts the new rules in force")
            alias = (proxy.get("aliases") or {}).get(self.walk.alias)
            if alias is not None:
                self.reporter.rules(self.walk.alias, alias.get("targets") or {})
        split: Split | None = None
        if step.expect.split:
            total = self.walk.requests
            async with self.reporter.waiting(f"send {total} requests through the proxy:") as line:
                split = await send_requests(
                    self.session,
                    self.proxy_url,
                    self.walk.alias,
                    total,
                    request_timeout=self.options.request_timeout,
                    on_answer=lambda done: line.update(f"{done}/{total}"),
                )
                line.update(f"{split.answered}/{total} answered")
            self.reporter.split(self.walk.alias, split, step.expect.split)
            split_failures = check_split(step.expect.split, split)
            counts = "/".join(str(split.counts.get(n, 0)) for n in step.expect.split)
            self.reporter.verdict(split_failures, f"split {counts} exactly as the guide says")
            failures += split_failures
        if failures:
            raise StepFailed(failures)
        return split


async def walk(
    reporter: Reporter,
    options: DemoOptions,
    *,
    workdir: Path | None = None,
    server: ModelServer | None = None,
) -> DemoResult:
    """Run the whole walk; never raises for a step that does not hold (see `DemoResult`)."""
    started = time.monotonic()
    plan = load_walkthrough()
    if options.fault_step is not None:
        plan.step(options.fault_step)  # KeyError names the steps: a usage error, raised now
    result = DemoResult(ok=False, seconds=0.0)
    current: Step | None = None
    with contextlib.ExitStack() as files:
        if workdir is None:
            workdir = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="lora-syncer-demo-")))
        if server is None:
            server = RealVLLMServer(workdir / "vllm") if options.real_vllm else EmulatorServer()
        try:
            async with contextlib.AsyncExitStack() as stack:
                reporter.title("lora-syncer demo: the LoRA Adapter Rollout guide, end to end")
                if options.real_vllm:
                    reporter.note("starting a real vLLM (about 30 s on a CPU) ...")
                async with reporter.waiting("model server starts"):
                    await stack.enter_async_context(server)
                session = await stack.enter_async_context(aiohttp.ClientSession())
                run = DemoRun(plan, server, workdir, options, reporter, session)
                stack.push_async_callback(stop_sidecar, run)
                await run.start()
                reporter.header(
                    [
                        ("model server", server.description),
                        ("adapters", f"{run.path('adapters')}  (ConfigMap key configmap.yaml)"),
                        ("rules", f"{run.path('rules')}  (ConfigMap key rules.yaml)"),
                        ("syncer", f"status {run.status_url}"),
                        ("proxy", f"{run.proxy_url}  (clients ask for model {plan.alias!r})"),
                    ],
                )
                for index, step in enumerate(plan.steps, start=1):
                    if index > 1 and options.pause is not None:
                        await options.pause()
                    current = step
                    reporter.step(index, len(plan.steps), step)
                    server.set_fault(step.id == options.fault_step)
                    try:
                        split = await run.run_step(step)
                    finally:
                        server.set_fault(False)
                    if split is not None:
                        result.splits[step.id] = split
                current = None
                result.ok = True
        except StepFailed as exc:
            result.failed_step, result.failures = current, exc.failures
        except (OSError, aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            result.failed_step, result.failures = current, [f"{type(exc).__name__}: {exc}"]
    result.seconds = time.monotonic() - started
    reporter.summary(result.ok, result.failed_step, result.failures, result.seconds)
    return result


async def stop_sidecar(run: DemoRun) -> None:
    if run.sidecar is not None:
        await run.sidecar.stop()


def expected_counts(splits: Mapping[str, Split]) -> dict[str, dict[str, int]]:
    """step id -> counts, for reports and tests."""
    return {step_id: dict(split.counts) for step_id, split in splits.items()}
