"""`--warmup`: after a load, one 1-token completion per adapter, one at a time, before it counts.

The syncer talks to the emulator through `warmup_front` (a real HTTP front on 127.0.0.1) which
records the warm-up requests, holds them on demand and fails one adapter's inference the way
vLLM does; everything else reaches the emulator unchanged.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_sum, metric_value
from warmup_front import ENGINE_FAILURE, warmup_front

from lora_syncer.app import Sidecar
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions

ALIAS = "small-segment"
RULES = f"""\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: split
spec:
  poolRef:
    group: inference.networking.k8s.io
    name: vllm
  rules:
    - matches:
        - model:
            type: Exact
            value: {ALIAS}
      targets:
        - modelRewrite: v1
          weight: 50
        - modelRewrite: v2
          weight: 50
"""


async def ready(env: SyncEnv) -> tuple[int, Any]:
    return await env.get("/readyz")


async def start_with_proxy(env: SyncEnv, server: str, tmp_path: Path, **overrides: Any) -> Sidecar:
    """The sidecar with its rewrite proxy (alias -> v1/v2 50:50) forwarding to the emulator itself."""
    rules = ConfigMapVolume(tmp_path / "rules")
    rules.write({"rules.yaml": RULES})
    options = ProxyOptions(
        upstream=env.emulator.url, rules_path=rules.path("rules.yaml"), host="127.0.0.1", port=0
    )
    sidecar = Sidecar(env.settings(server=server, **overrides), options)
    env.sidecar = sidecar
    await sidecar.start()
    return sidecar


async def served_through_proxy(env: SyncEnv, sidecar: Sidecar, n: int) -> Counter[str]:
    """Send `n` completions for the alias through the proxy; count the models that answered."""
    counts: Counter[str] = Counter()
    url = f"http://127.0.0.1:{sidecar.proxy.port}/v1/completions"
    for _ in range(n):
        async with env.http.post(url, json={"model": ALIAS, "prompt": "hi", "max_tokens": 1}) as resp:
            assert resp.status == 200, await resp.text()
            counts[(await resp.json())["model"]] += 1
    return counts


async def test_an_adapter_warms_before_it_counts_as_loaded(sync_env: SyncEnv) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        front.hold["a"] = asyncio.Event()
        env.write(adapters_yaml([("a", "org/a")]))
        await env.start(server=front.url, warmup=True)

        entry = await env.wait_state("a", "warming")
        assert entry["lastError"] is None and entry["attempts"] == 0
        assert env.emulator.loaded() == {"a": "org/a"}  # loaded on the server, not counted yet
        await eventually(lambda: len(front.of("a")) == 1, "the warm-up request arrived")
        # The pass is over and the server has it, yet readiness waits for the warm-up.
        await eventually(lambda: env.passes(), "a pass completed")
        code, body = await ready(env)
        assert code == 503
        assert body["reasons"] == ["1 declared adapter(s) not loaded yet (1 warming up): a"]

        front.hold["a"].set()
        await env.wait_state("a", "loaded")
        code, _ = await ready(env)
        assert code == 200
        [warm] = front.of("a")
        assert warm.status == 200
        assert env.emulator.call_log.served["a"] == 1  # the emulator answered it, for that adapter
        text = await env.metrics()
        assert metric_value(text, "lora_syncer_warmups_total", result="ok") == 1
        assert metric_value(text, "lora_syncer_warmup_duration_seconds_count", result="ok") == 1
        assert metric_sum(text, "lora_syncer_warmups_total", result="failed") == 0


async def test_without_the_flag_nothing_is_warmed(sync_env: SyncEnv) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        env.write(adapters_yaml([("a", "org/a")]))
        await env.start(server=front.url)
        await env.wait_state("a", "loaded")
        await eventually(lambda: env.passes(), "a pass completed")
        assert front.completions == []


async def test_warmups_run_one_adapter_at_a_time(sync_env: SyncEnv) -> None:
    env = sync_env
    names = [f"m-{i}" for i in range(5)]
    env.emulator.faults.latency = {"completions": 0.1}  # long enough for an overlap to show
    async with warmup_front(env.emulator.url) as front:
        env.write(adapters_yaml([(n, f"org/{n}") for n in names]))
        await env.start(server=front.url, warmup=True, max_concurrency=4)
        for n in names:
            await env.wait_state(n, "loaded")
        assert sorted(c.model for c in front.completions) == names  # one warm-up each
        assert front.max_in_flight == 1
        assert front.overlaps() == []


async def test_an_in_place_reload_warms_again(sync_env: SyncEnv) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        env.write(adapters_yaml([("a", "org/a-v1")]))
        await env.start(server=front.url, warmup=True)
        await env.wait_state("a", "loaded")
        front.hold["a"] = asyncio.Event()
        env.write(adapters_yaml([("a", "org/a-v2")]))
        await env.wait_state("a", "warming")
        assert env.emulator.loaded() == {"a": "org/a-v2"}
        assert [c.load_inplace for c in env.calls("load", "a")] == [False, True]
        front.hold["a"].set()
        await env.wait_state("a", "loaded")
        assert len(front.of("a")) == 2


async def test_a_warming_adapter_gets_no_proxy_traffic(sync_env: SyncEnv, tmp_path: Path) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        front.hold["v2"] = asyncio.Event()
        env.write(adapters_yaml([("v1", "org/v1"), ("v2", "org/v2")]))
        sidecar = await start_with_proxy(env, front.url, tmp_path, warmup=True)
        await env.wait_state("v1", "loaded")
        await env.wait_state("v2", "warming")
        assert set(env.emulator.loaded()) == {"v1", "v2"}  # vLLM would serve v2 already

        assert await served_through_proxy(env, sidecar, 10) == Counter({"v1": 10})

        front.hold["v2"].set()
        await env.wait_state("v2", "loaded")
        counts = await served_through_proxy(env, sidecar, 10)
        assert counts == Counter({"v1": 5, "v2": 5})


async def test_a_failed_warmup_is_failed_with_vllms_answer_and_not_routable(
    sync_env: SyncEnv, tmp_path: Path
) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        front.fail["v2"] = ENGINE_FAILURE
        env.write(adapters_yaml([("v1", "org/v1"), ("v2", "org/v2")]))
        with capture_logs() as logs:
            sidecar = await start_with_proxy(env, front.url, tmp_path, warmup=True)
            await env.wait_state("v1", "loaded")
            entry = await env.wait_state("v2", "failed")
        assert entry["lastError"] == f"warm-up failed: /v1/completions: server error 500: {ENGINE_FAILURE}"
        assert entry["attempts"] >= 1
        assert env.emulator.loaded() == {"v1": "org/v1", "v2": "org/v2"}  # the server lists it...
        assert await served_through_proxy(env, sidecar, 10) == Counter({"v1": 10})  # ...no traffic
        failures = [e for e in logs if e["event"] == "warm-up failed"]
        assert failures and failures[0]["adapter"] == "v2" and failures[0]["error"].endswith(ENGINE_FAILURE)
        text = await env.metrics()
        assert (metric_value(text, "lora_syncer_warmups_total", result="failed") or 0) >= 1
        assert (metric_value(text, "lora_syncer_warmup_duration_seconds_count", result="failed") or 0) >= 1

        # Retried with backoff (never reloaded); once inference works again it becomes loaded.
        await eventually(lambda: len(front.of("v2")) >= 2 * 3, "the warm-up retried after its backoff")
        del front.fail["v2"]
        await env.wait_state("v2", "loaded")
        assert len(env.calls("load", "v2")) == 1
        counts = await served_through_proxy(env, sidecar, 10)
        assert counts == Counter({"v1": 5, "v2": 5})


async def test_a_failed_warmup_is_retried_with_a_growing_backoff(sync_env: SyncEnv) -> None:
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        front.fail["a"] = "boom"
        env.write(adapters_yaml([("a", "org/a")]))
        with capture_logs() as logs:
            await env.start(server=front.url, warmup=True, backoff_initial=0.3, backoff_max=10.0)

            def failures() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "warm-up failed"]

            await eventually(lambda: len(failures()) >= 3, "three failed warm-ups", within=30)
        # 0.3 s, then 0.6 s, then 1.2 s (+-10% jitter) before the next try.
        delays = [e["retry_in_seconds"] for e in failures()[:3]]
        assert [e["attempts"] for e in failures()[:3]] == [1, 2, 3]
        for delay, base in zip(delays, (0.3, 0.6, 1.2), strict=True):
            assert base * 0.85 <= delay <= base * 1.15, delays
        assert len(env.calls("load", "a")) == 1  # the warm-up is retried, not the load
        assert all(c.model == "a" and c.status == 500 for c in front.completions)
        code, _ = await ready(env)
        assert code == 200  # a broken adapter does not hold readiness (as for a failing load)


async def test_the_proxy_ignores_nothing_without_a_syncer_state(sync_env: SyncEnv, tmp_path: Path) -> None:
    """Base models and adapters the syncer has no entry for stay routable (only warming/failed go)."""
    env = sync_env
    async with warmup_front(env.emulator.url) as front:
        env.write(adapters_yaml([("v1", "org/v1")]))
        sidecar = await start_with_proxy(env, front.url, tmp_path, warmup=True)
        await env.wait_state("v1", "loaded")
        assert sidecar.reconciler is not None
        names = sidecar.reconciler.status.loaded_names()
        assert names == {"Qwen/Qwen3-32B", "v1"}
