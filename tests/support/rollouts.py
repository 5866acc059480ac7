"""What the rollout tests share (integration and e2e): the adapter names, the rules documents, a
client of one sidecar's rollout (its /status and its proxy), and `lora-syncer run` as a process.

- `rules_with_rollout(steps, extra=...)`: the rule sending MODEL to V1, then an AdapterRollout of
  MODEL from V1 to V2 with those steps (`extra`: more `spec` lines, indented two spaces).
- `RolloutPod`: mixed into a test's view of one pod (it gives `http`, `base` and `proxy_url`):
  `rollout()`, `wait_for(what, **fields)`, `send(n)`, `ready()`.
- `proxy_options(...)`: the proxy options of an in-process sidecar running rollouts.
- `controller_at(rules, now)`: a rollout controller alone, on a rules file, at a fixed instant,
  with no traffic and its state in memory (unit tests drive `tick()` themselves).
- `running_run(tmp, server=, adapters=, rules=)`: `lora-syncer run` with the rules and a state
  dir as its own process (files written the way kubelet writes them), stopped with SIGTERM on
  exit, which must end it with status 0; the `RunProcess` it yields talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.rollout.controller import Analyzer, RolloutController
from lora_syncer.rollout.metrics import RolloutMetrics
from lora_syncer.rollout.store import StateStore
from lora_syncer.rollout.verdict import TargetCounts
from lora_syncer.rollout.weights import RolloutRoute
from tests.support.net import free_port
from tests.support.wait import WAIT, eventually

V1, V2, MODEL = "small-segment-lora-v1", "small-segment-lora-v2", "small-segment-lora"
NAME = "seg-v2"

# The rule the rollout takes MODEL over from (and hands it back to when removed): all on V1.
REWRITE = f"""\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {{name: seg-rewrite}}
spec:
  rules:
  - matches: [{{model: {{type: Exact, value: {MODEL}}}}}]
    targets: [{{modelRewrite: {V1}, weight: 100}}]
"""


def rollout_document(steps: str, *, name: str = NAME, extra: str = "") -> str:
    """An AdapterRollout of MODEL from V1 to V2: `steps` is the YAML list indented two spaces."""
    return f"""\
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {{name: {name}}}
spec:
  model: {MODEL}
  stable: {V1}
  canary: {V2}
  steps:
{steps}{extra}"""


def rules_with_rollout(steps: str, *, name: str = NAME, extra: str = "") -> str:
    """The rules file: REWRITE, then the rollout."""
    return f"{REWRITE}---\n{rollout_document(steps, name=name, extra=extra)}"


# A rollout that completes in a few seconds with local analysis (the e2e tests on real vLLM).
QUICK_RULES = rules_with_rollout(
    "  - setWeight: 50\n  - pause: {duration: 2s}\n  - setWeight: 100\n",
    extra="  analysis: {interval: 1s, minRequests: 1, maxErrorRate: 0.5}\n",
)


class RolloutPod:
    """One pod's rollout as a test sees it; the class mixing it in gives `http`, `base` (the
    metrics port's URL) and `proxy_url`."""

    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        raise NotImplementedError

    @property
    def proxy_url(self) -> str:
        raise NotImplementedError

    async def rollouts(self) -> list[dict[str, Any]]:
        async with self.http.get(self.base + "/status") as resp:
            assert resp.status == 200
            body = await resp.json()
        rollouts: list[dict[str, Any]] = body["rollouts"]["rollouts"]
        return rollouts

    async def rollout(self) -> dict[str, Any]:
        """The one rollout in /status."""
        rollouts = await self.rollouts()
        assert len(rollouts) == 1, rollouts
        return rollouts[0]

    async def wait_for(self, what: str, within: float = WAIT, **expected: Any) -> dict[str, Any]:
        """Until the rollout's fields have the `expected` values (none until the document is read)."""

        async def check() -> dict[str, Any] | None:
            rollouts = await self.rollouts()
            r = rollouts[0] if len(rollouts) == 1 else {}
            return r if r and all(r.get(k) == v for k, v in expected.items()) else None

        found: dict[str, Any] = await eventually(check, timeout=within, message=what)
        return found

    async def ready(self) -> bool:
        async with self.http.get(self.base + "/readyz") as resp:
            return resp.status == 200

    async def send(self, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        """n completions for MODEL, one after another; the served model of each."""
        served: Counter[str] = Counter()
        for _ in range(n):
            async with self.http.post(
                self.proxy_url + "/v1/completions",
                json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                headers=headers or {},
            ) as resp:
                await resp.read()
                served[resp.headers.get(SERVED_MODEL_HEADER, f"status-{resp.status}")] += 1
        return served


class NoTraffic:
    """Window counts of a pod that served nothing."""

    def counts(self, alias: str, target: str, start: float, end: float) -> TargetCounts:
        return TargetCounts()


async def controller_at(
    rules: Path,
    now: float,
    *,
    analyzer: Analyzer | None = None,
    routes: list[dict[str, RolloutRoute]] | None = None,
) -> RolloutController:
    """A controller of the rollouts in `rules` whose clock stands at `now`, the file read; the routes
    it applies are appended to `routes`."""
    applied = routes if routes is not None else []
    controller = RolloutController(
        rules,
        apply_routes=applied.append,
        aliases=dict,
        telemetry=NoTraffic(),
        metrics=RolloutMetrics(CollectorRegistry()),
        store=StateStore(None),
        analyzer=analyzer,
        clock=lambda: now,
    )
    await controller.file.reload()
    return controller


def proxy_options(upstream: str, rules: Path, state_dir: Path, *, control: bool, **more: Any) -> ProxyOptions:
    """The proxy of an in-process sidecar running rollouts: on 127.0.0.1 (any port), the rules file
    polled every 0.1 s and re-read every second, so edits are seen well within a test's bounds."""
    return ProxyOptions(
        upstream=upstream,
        rules_path=rules,
        host="127.0.0.1",
        port=0,
        state_dir=state_dir,
        rollout_control=control,
        poll_interval=0.1,
        rules_resync_interval=1.0,
        **more,
    )


async def set_canary_errors(http: aiohttp.ClientSession, emulator_url: str, rate: float) -> None:
    """The emulator answers this share of V2's requests 500 from now on (its control API)."""
    async with http.post(
        emulator_url + "/_emulator/faults", json={"models": {V2: {"error_rate": rate}}}
    ) as resp:
        assert resp.status == 200, await resp.text()


def spawn_run(
    *, config: Path, server: str, rules: Path, state_dir: Path, health: int, proxy: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """`lora-syncer run` with the rules and a state dir on 127.0.0.1, as its own process, logging
    JSON lines to `log_path`."""
    args = [
        "--config", str(config), "--server", server,
        "--rules", str(rules), "--state-dir", str(state_dir),
        "--metrics-port", str(health), "--metrics-host", "127.0.0.1",
        "--proxy-port", str(proxy), "--proxy-host", "127.0.0.1",
        "--reconcile-trigger", "1", "--log-format", "json",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lora_syncer", "run", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@dataclass
class RunProcess:
    """A running `lora-syncer run` and a client session to its metrics port and its proxy."""

    health: int
    proxy: int
    state_dir: Path
    session: aiohttp.ClientSession

    async def status(self) -> dict[str, Any] | None:
        """Its /status, or None while it is not listening yet."""
        try:
            async with self.session.get(f"http://127.0.0.1:{self.health}/status") as r:
                body: dict[str, Any] = await r.json()
                return body
        except aiohttp.ClientError:
            return None

    async def rollout(self) -> dict[str, Any] | None:
        """The first rollout in its /status, or None (not listening, or no rollout read yet)."""
        body = await self.status()
        found: list[dict[str, Any]] = body["rollouts"]["rollouts"] if body else []
        return found[0] if found else None

    async def ready(self) -> bool:
        try:
            async with self.session.get(f"http://127.0.0.1:{self.health}/readyz") as r:
                return r.status == 200  # adapters loaded, rules read, proxy listening
        except aiohttp.ClientError:
            return False

    async def send(self) -> str:
        """One completion for MODEL through its proxy; the model that answered."""
        async with self.session.post(
            f"http://127.0.0.1:{self.proxy}/v1/completions",
            json={"model": MODEL, "prompt": "hello", "max_tokens": 2},
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        return str(body["model"])


@contextlib.asynccontextmanager
async def running_run(tmp: Path, *, server: str, adapters: str, rules: str) -> AsyncIterator[RunProcess]:
    """`lora-syncer run` on `adapters` (the adapters file's text) and `rules` against `server`."""
    config_volume, rules_volume = ConfigMapVolume(tmp / "config"), ConfigMapVolume(tmp / "rules")
    config_volume.write({"configmap.yaml": adapters})
    rules_volume.write({"rules.yaml": rules})
    health, proxy, log_path = free_port(), free_port(), tmp / "sidecar.log"
    proc = spawn_run(
        config=config_volume.path("configmap.yaml"),
        server=server,
        rules=rules_volume.path("rules.yaml"),
        state_dir=tmp / "state",
        health=health,
        proxy=proxy,
        log_path=log_path,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            yield RunProcess(health, proxy, tmp / "state", session)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log_path.read_text()[-3000:]
