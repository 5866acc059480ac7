"""The standalone proxy splitting traffic between a real vLLM pool and an emulated pool with a different base model."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from prometheus_client import CollectorRegistry

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import POOL_HEADER, ProxyOptions
from lora_syncer.proxy.pools import PoolSpec
from lora_syncer.proxy.service import ProxyService
from lora_syncer.realvllm.launcher import RealVLLM

REAL, EMU = "pool-real", "pool-emulated"
ALIAS = "e2e-pool-alias"
TARGET = {REAL: "e2e-pool-real-lora", EMU: "e2e-pool-emulated-lora"}
_TIMEOUT = aiohttp.ClientTimeout(total=120)


def rules(real: int, emulated: int) -> str:
    """Per-pool rewrites of the alias plus an HTTPRoute with the given weights."""
    docs = [
        f"""kind: InferenceModelRewrite
metadata: {{name: alias-{pool}}}
spec:
  poolRef: {{name: {pool}}}
  rules:
  - matches: [{{model: {{type: Exact, value: {ALIAS}}}}}]
    targets: [{{modelRewrite: {target}}}]
"""
        for pool, target in TARGET.items()
    ]
    docs.append(
        f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route}}
spec:
  rules:
  - backendRefs:
    - {{group: inference.networking.k8s.io, kind: InferencePool, name: {REAL}, weight: {real}}}
    - {{group: inference.networking.k8s.io, kind: InferencePool, name: {EMU}, weight: {emulated}}}
"""
    )
    return "---\n".join(docs)


@pytest_asyncio.fixture
async def emulated() -> AsyncIterator[Emulator]:
    emulator = Emulator(EmulatorConfig(served_model_name="other-base"))
    await emulator.start()
    emulator.preload({TARGET[EMU]: "org/emulated"})
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_real_and_emulated_pools_weights_exact(
    vllm: RealVLLM, emulated: Emulator, tmp_path: Path
) -> None:
    """3/1 then 1/1 across a real vLLM and an emulator are honoured exactly; the emulator going down loses no request."""
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
        async with http.post(
            f"{vllm.url}/v1/load_lora_adapter",
            json={"lora_name": TARGET[REAL], "lora_path": str(vllm.adapter_dirs[0])},
        ) as resp:
            assert resp.status == 200, await resp.text()
        volume = ConfigMapVolume(tmp_path / "rules")
        volume.write({"rules.yaml": rules(3, 1)})
        proxy = ProxyService(
            ProxyOptions(
                upstream=vllm.url,
                rules_path=volume.path("rules.yaml"),
                host="127.0.0.1",
                port=0,
                pools=(PoolSpec(REAL, vllm.url), PoolSpec(EMU, emulated.url)),
                pools_from_rules=True,
                pool_health_interval=0.5,
            ),
            registry=CollectorRegistry(),
        )
        await proxy.start()
        try:

            async def window(n: int) -> Counter[str]:
                counts: Counter[str] = Counter()
                for _ in range(n):
                    async with http.post(
                        f"http://127.0.0.1:{proxy.port}/v1/chat/completions",
                        json={
                            "model": ALIAS,
                            "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 2,
                        },
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        pool = resp.headers[POOL_HEADER]
                        assert (await resp.json())["model"] == TARGET[pool]
                        counts[pool] += 1
                return counts

            assert await window(8) == {REAL: 6, EMU: 2}
            before = proxy.status()["generation"]
            volume.write({"rules.yaml": rules(1, 1)})
            await proxy.reload()
            assert proxy.status()["generation"] != before
            assert await window(8) == {REAL: 4, EMU: 4}
            await emulated.go_down()
            assert await window(6) == {REAL: 6}
        finally:
            await proxy.stop(1.0)
