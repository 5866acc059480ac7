"""An AdapterRollout whose canary real vLLM refuses (rank 64 above --max-lora-rank 8) aborts:
the syncer marks the canary failed, the rollout aborts, and every request stays on the stable."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.realvllm.launcher import RealVLLM
from tests.e2e.conftest import loaded_adapters
from tests.e2e.test_rollout_e2e import spawn
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


async def test_a_canary_vllm_refuses_aborts_the_rollout_on_the_stable(vllm: RealVLLM, tmp_path: Path) -> None:
    stable, bad = str(vllm.adapter_dirs[0]), str(vllm.bad_rank_adapter_dir)
    config, rules = ConfigMapVolume(tmp_path / "config"), ConfigMapVolume(tmp_path / "rules")
    config.write({"configmap.yaml": adapters_file([(V1, stable), (V2, bad)])})
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

            async def status() -> dict[str, Any] | None:
                try:
                    async with session.get(f"http://127.0.0.1:{health}/status") as r:
                        body: dict[str, Any] = await r.json()
                        return body
                except aiohttp.ClientError:
                    return None

            async def send() -> str:
                async with session.post(
                    f"http://127.0.0.1:{proxy}/v1/completions",
                    json={"model": MODEL, "prompt": "hello", "max_tokens": 2},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                return str(body["model"])

            async def aborted() -> dict[str, Any] | None:
                body = await status()
                if body is None or not body["rollouts"]["rollouts"]:
                    return None
                r: dict[str, Any] = body["rollouts"]["rollouts"][0]
                return r if r["phase"] == "aborted" else None

            r = await eventually(aborted, timeout=120)
            assert r["canaryWeight"] == 0 and "failed to load" in r["reason"], r
            body = await status()
            assert body is not None
            canary = body["syncer"]["adapters"][V2]
            assert canary["state"] == "failed", canary
            assert "rank" in str(canary).lower(), canary  # vLLM's refusal is kept as the reason
            await eventually(lambda: _loaded(session, vllm, V1), timeout=120)
            for _ in range(10):
                served[await send()] += 1
            assert served == {V1: 10}
            assert V2 not in await loaded_adapters(session, vllm)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log_path.read_text()[-3000:]


async def _loaded(session: aiohttp.ClientSession, server: RealVLLM, name: str) -> bool:
    return name in await loaded_adapters(session, server)
