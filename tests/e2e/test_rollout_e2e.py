"""An AdapterRollout walked by `lora-syncer run --state-dir` against a real vLLM: v1 -> v2 completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.realvllm.launcher import RealVLLM
from tests.e2e.test_syncer_e2e import adapters_file, eventually
from tests.support.net import free_port

_TIMEOUT = aiohttp.ClientTimeout(total=60)
V1, V2, MODEL = "small-segment-lora-v1", "small-segment-lora-v2", "small-segment-lora"

RULES = f"""\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {{name: seg-rewrite}}
spec:
  rules:
  - matches: [{{model: {{type: Exact, value: {MODEL}}}}}]
    targets: [{{modelRewrite: {V1}, weight: 100}}]
---
apiVersion: lora-syncer.io/v1alpha1
kind: AdapterRollout
metadata: {{name: seg-v2}}
spec:
  model: {MODEL}
  stable: {V1}
  canary: {V2}
  steps:
  - setWeight: 50
  - pause: {{duration: 2s}}
  - setWeight: 100
  analysis: {{interval: 1s, minRequests: 1, maxErrorRate: 0.5}}
"""


def spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`lora-syncer run ARGS` as its own process, logging JSON lines to `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lora_syncer", "run", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def test_a_rollout_from_v1_to_v2_completes_on_real_vllm(vllm: RealVLLM, tmp_path: Path) -> None:
    a, b = (str(p) for p in vllm.adapter_dirs[:2])
    config, rules = ConfigMapVolume(tmp_path / "config"), ConfigMapVolume(tmp_path / "rules")
    config.write({"configmap.yaml": adapters_file([(V1, a), (V2, b)])})
    rules.write({"rules.yaml": RULES})
    health, proxy = free_port(), free_port()
    log_path = tmp_path / "sidecar.log"
    proc = spawn(
        [
            "--config", str(config.path("configmap.yaml")), "--server", vllm.url,
            "--rules", str(rules.path("rules.yaml")), "--state-dir", str(tmp_path / "state"),
            "--metrics-port", str(health), "--metrics-host", "127.0.0.1",
            "--proxy-port", str(proxy), "--proxy-host", "127.0.0.1",
            "--reconcile-trigger", "1", "--log-format", "json",
        ],
        log_path,
    )  # fmt: skip
    served: Counter[str] = Counter()
    try:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:

            async def rollout() -> dict[str, Any] | None:
                try:
                    async with session.get(f"http://127.0.0.1:{health}/status") as r:
                        body = await r.json()
                except aiohttp.ClientError:
                    return None
                found: list[dict[str, Any]] = body["rollouts"]["rollouts"]
                return found[0] if found else None

            async def send() -> str:
                async with session.post(
                    f"http://127.0.0.1:{proxy}/v1/completions",
                    json={"model": MODEL, "prompt": "hello", "max_tokens": 2},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                return str(body["model"])

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{health}/readyz") as r:
                        return r.status == 200  # adapters loaded, rules read, proxy listening
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=120)

            async def completed() -> dict[str, Any] | None:
                served[await send()] += 1
                r = await rollout()
                return r if r is not None and r["phase"] == "completed" else None

            done = await eventually(completed, timeout=120)
            assert done["canaryWeight"] == 100 and done["step"] == 3
            assert done["windowsJudged"] >= 2
            assert served[V2] > 0
            tail = Counter([await send() for _ in range(6)])
            assert tail == {V2: 6}
        assert (tmp_path / "state" / "rollout-seg-v2.json").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log_path.read_text()[-3000:]
