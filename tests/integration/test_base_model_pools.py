"""A base model rollout's two pools: two sidecars with --base-model-policy=enforce share one
adapters file that declares adapters for both base models; each loads only its own, and the
proxy in front sends the client-facing name to the adapter of the pool it picked."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry
from sync_harness import SyncEnv, adapters_yaml

from lora_syncer.emulator import EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import POOL_HEADER, ProxyOptions
from lora_syncer.proxy.pools import PoolSpec
from lora_syncer.proxy.service import ProxyService

OLD_BASE, NEW_BASE = "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"
OLD_POOL, NEW_POOL = "vllm-llama3-8b-instruct", "vllm-llama3-8b-instruct-new"
# One adapters file for both pools: each adapter names the base model it was trained for.
SHARED = adapters_yaml(
    [
        ("food-review-llama31", "org/food-review-llama31", OLD_BASE),
        ("food-review-llama32", "org/food-review-llama32", NEW_BASE),
        ("legal-llama31", "org/legal-llama31"),  # defaultBaseModel: the old base
    ],
    base=OLD_BASE,
    name="vllm-llama3-8b-instruct-adapters",
)
RULES = f"""apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {{name: food-review-old}}
spec:
  poolRef: {{name: {OLD_POOL}}}
  rules:
  - matches: [{{model: {{type: Exact, value: food-review}}}}]
    targets: [{{modelRewrite: food-review-llama31}}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {{name: food-review-new}}
spec:
  poolRef: {{name: {NEW_POOL}}}
  rules:
  - matches: [{{model: {{type: Exact, value: food-review}}}}]
    targets: [{{modelRewrite: food-review-llama32}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm-route}}
spec:
  rules:
  - backendRefs:
    - {{group: inference.networking.k8s.io, kind: InferencePool, name: {OLD_POOL}, weight: 50}}
    - {{group: inference.networking.k8s.io, kind: InferencePool, name: {NEW_POOL}, weight: 50}}
"""


async def test_two_sidecars_share_one_adapters_file_across_base_models(
    env_factory: Callable[..., Awaitable[SyncEnv]], tmp_path: Path
) -> None:
    """Each pool's sidecar (enforce) loads only the adapters of its base model from the shared file; the proxy routes per pool."""
    old = await env_factory(EmulatorConfig(served_model_name=OLD_BASE))
    new = await env_factory(EmulatorConfig(served_model_name=NEW_BASE))
    for env in (old, new):
        env.write(SHARED)  # the same ConfigMap, mounted in both pools' pods
        await env.start(base_model_policy="enforce")
    await old.wait_loaded(
        {"food-review-llama31": "org/food-review-llama31", "legal-llama31": "org/legal-llama31"}
    )
    await new.wait_loaded({"food-review-llama32": "org/food-review-llama32"})
    for adapter in ("food-review-llama31", "legal-llama31"):
        state = await new.wait_state(adapter, "base_model_mismatch")
        assert OLD_BASE in state["lastError"] and NEW_BASE in state["lastError"]
        assert new.calls(name=adapter) == []
    state = await old.wait_state("food-review-llama32", "base_model_mismatch")
    assert old.calls(name="food-review-llama32") == []

    volume = ConfigMapVolume(tmp_path / "rules")
    volume.write({"rules.yaml": RULES})
    proxy = ProxyService(
        ProxyOptions(
            upstream=old.emulator.url,
            rules_path=volume.path("rules.yaml"),
            host="127.0.0.1",
            port=0,
            pools=(PoolSpec(OLD_POOL, old.emulator.url), PoolSpec(NEW_POOL, new.emulator.url)),
            pools_from_rules=True,
            pool_health_interval=0.1,
        ),
        registry=CollectorRegistry(),
    )
    await proxy.start()
    try:
        served: Counter[tuple[str, str]] = Counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for _ in range(10):
                async with http.post(
                    f"http://127.0.0.1:{proxy.port}/v1/completions",
                    json={"model": "food-review", "prompt": "Write as if you were a critic: San Francisco"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    served[(resp.headers[POOL_HEADER], (await resp.json())["model"])] += 1
        assert served == {(OLD_POOL, "food-review-llama31"): 5, (NEW_POOL, "food-review-llama32"): 5}
    finally:
        await proxy.stop(1.0)
