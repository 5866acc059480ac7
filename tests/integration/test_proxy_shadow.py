"""Shadow traffic over real HTTP: a proxy on 127.0.0.1 in front of the emulator, a mirror route copying to the canary.

The mirror is put on the compiled route the way a rollout's mirror step will put it
(`Route.mirror`); the copies are counted at the emulator, which serves both adapter versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.emulator.model_faults import ModelFault
from lora_syncer.proxy.matching import Mirror
from lora_syncer.proxy.options import SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.proxy.pools import PoolSpec
from lora_syncer.proxy.select import SmoothWeightedRoundRobin
from lora_syncer.proxy.service import ProxyService
from lora_syncer.proxy.shadow import ShadowResult
from tests.support.emulator import running_emulator
from tests.support.http import client_session
from tests.support.wait import eventually

ALIAS = "small"
STABLE, CANARY = "small-v1", "small-v2"
# Rollout-shaped: [stable, canary], the canary at weight 0 while only mirrored.
RULES = f"""\
kind: InferenceModelRewrite
metadata: {{name: small-rewrite}}
spec:
  rules:
  - matches: [{{model: {{value: {ALIAS}}}}}]
    targets:
    - {{modelRewrite: {STABLE}, weight: 100}}
    - {{modelRewrite: {CANARY}, weight: 0}}
"""
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with running_emulator(
        EmulatorConfig(served_model_name="base"), {STABLE: "/a/v1", CANARY: "/a/v2"}
    ) as e:
        yield e


class Rig:
    """A proxy service in front of the emulator, with its own metrics registry and shadow results."""

    def __init__(self, service: ProxyService, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self.results: list[ShadowResult] = []
        service.core.shadow.observers.append(self.results.append)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}/v1/chat/completions"

    def mirror(self, percent: float, target: str = CANARY) -> None:
        """Put a mirror on the alias's compiled route in every pool (what a rollout's mirror step does)."""
        for pool in self.service.core.pools.pools.values():
            table = pool.table
            table.exact[ALIAS] = dataclasses.replace(table.exact[ALIAS], mirror=Mirror(target, percent))

    def samples(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(generate_latest(self.registry).decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def shadow(self, outcome: str) -> float:
        return self.samples(
            "lora_syncer_proxy_shadow_requests_total", alias=ALIAS, target=CANARY, outcome=outcome
        )

    def active(self) -> float:
        return self.samples("lora_syncer_proxy_shadow_active")


@pytest.fixture
async def rig_factory(tmp_path: Path, emu: Emulator) -> AsyncIterator[Any]:
    services: list[ProxyService] = []

    async def make(**options: Any) -> Rig:
        rules = tmp_path / f"rules-{len(services)}.yaml"
        rules.write_text(RULES)
        registry = CollectorRegistry()
        upstream = options.pop("upstream", emu.url)
        service = ProxyService(
            ProxyOptions(upstream=upstream, rules_path=rules, host="127.0.0.1", port=0, **options),
            registry=registry,
        )
        await service.start()
        services.append(service)
        return Rig(service, registry)

    yield make
    for service in services:
        await service.stop(1)


async def chat(http: aiohttp.ClientSession, rig: Rig, **extra: Any) -> tuple[int, str | None, bytes]:
    async with http.post(rig.url, json={"model": ALIAS, "messages": MESSAGES, **extra}) as resp:
        return resp.status, resp.headers.get(SERVED_MODEL_HEADER), await resp.read()


async def test_half_of_twenty_requests_are_copied_to_the_canary(emu: Emulator, rig_factory: Any) -> None:
    """mirror 50%: exactly 10 of 20 requests reach the canary as copies; clients get the stable's answers unchanged."""
    rig: Rig = await rig_factory()
    rig.mirror(50)
    async with client_session() as http:
        answers = [await chat(http, rig, max_tokens=3) for _ in range(20)]
    assert all(status == 200 and served == STABLE for status, served, _ in answers)
    assert all(json.loads(raw)["model"] == STABLE for _, _, raw in answers)
    await eventually(lambda: rig.shadow("ok") == 10 and rig.active() == 0, message=lambda: rig.results)
    assert emu.call_log.served == {STABLE: 20, CANARY: 10}
    assert rig.shadow("dropped") == rig.shadow("error") == rig.shadow("cancelled") == 0
    # The copies are not the alias's traffic: its counters only know the 20 real requests.
    assert rig.samples("lora_syncer_proxy_requests_total", alias=ALIAS) == 20
    assert rig.samples("lora_syncer_proxy_requests_total", target=CANARY) == 0
    assert rig.samples("lora_syncer_model_rewrite_decisions_total", target=CANARY) == 0
    assert [r.finish_reason for r in rig.results] == ["length"] * 10


async def test_streaming_copies_keep_stream_and_are_read_to_the_end(emu: Emulator, rig_factory: Any) -> None:
    """A streamed request's copy is streamed too, and the proxy reads it to [DONE] though nobody wants it."""
    rig: Rig = await rig_factory()
    rig.mirror(100)
    async with client_session() as http:
        status, served, raw = await chat(http, rig, stream=True, max_tokens=4)
    assert status == 200 and served == STABLE and raw.endswith(b"data: [DONE]\n\n")
    await eventually(lambda: rig.shadow("ok") == 1)
    assert emu.call_log.streamed == {STABLE: 1, CANARY: 1}
    assert emu.call_log.streams_completed[CANARY] == 1
    assert rig.results[0].finish_reason == "length"  # the last chunk was read


async def test_a_full_budget_drops_and_counts(emu: Emulator, rig_factory: Any) -> None:
    """--shadow-concurrency 2 with slow copies: of 5 copies, 2 run and 3 are dropped; clients are not held up."""
    emu.faults.models[CANARY] = ModelFault(latency=30)
    rig: Rig = await rig_factory(shadow_concurrency=2)
    rig.mirror(100)
    async with client_session() as http:
        for _ in range(5):
            status, served, _ = await chat(http, rig, max_tokens=1)
            assert (status, served) == (200, STABLE)  # answered while the copies still wait 30 s
    assert rig.shadow("dropped") == 3
    assert rig.active() == 2
    assert [r.outcome for r in rig.results] == ["dropped"] * 3


async def test_client_disconnect_cancels_its_copy(emu: Emulator, rig_factory: Any) -> None:
    """A client that leaves before its answer is complete takes its copy with it; the canary's work is cut."""
    emu.faults.models[STABLE] = ModelFault(latency=0.5)
    emu.faults.models[CANARY] = ModelFault(latency=0.5)
    rig: Rig = await rig_factory()
    rig.mirror(100)
    async with client_session() as http:
        body = {"model": ALIAS, "messages": MESSAGES, "stream": True, "max_tokens": 50}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0), http.post(rig.url, json=body) as resp:
                await resp.read()
    await eventually(lambda: rig.shadow("cancelled") == 1 and rig.active() == 0, message=lambda: rig.results)
    await eventually(lambda: emu.handlers.metrics.running == 0)
    assert emu.call_log.streams_completed[CANARY] == 0
    assert rig.shadow("ok") == 0


async def test_a_copy_outlives_a_client_that_got_its_whole_answer(emu: Emulator, rig_factory: Any) -> None:
    """A fast client answer does not cut its slower copy short: the copy runs to the end."""
    emu.faults.models[CANARY] = ModelFault(latency=0.3)
    rig: Rig = await rig_factory()
    rig.mirror(100)
    async with client_session() as http:
        assert (await chat(http, rig, stream=True, max_tokens=2))[0] == 200
    assert rig.active() == 1
    await eventually(lambda: rig.shadow("ok") == 1)
    assert emu.call_log.streams_completed[CANARY] == 1


async def test_draining_cancels_copies(emu: Emulator, rig_factory: Any) -> None:
    """Stopping the proxy cancels the copies in flight (they are not waited for) and counts them cancelled."""
    emu.faults.models[CANARY] = ModelFault(latency=30)
    rig: Rig = await rig_factory()
    rig.mirror(100)
    async with client_session() as http:
        for _ in range(2):
            assert (await chat(http, rig, max_tokens=1))[0] == 200
    assert rig.active() == 2
    await rig.service.stop(grace=60)  # would take 30 s if the copies were waited for
    assert rig.shadow("cancelled") == 2 and rig.active() == 0
    await eventually(lambda: emu.handlers.metrics.running == 0)


async def test_failing_copies_never_open_the_pool_breaker(emu: Emulator, rig_factory: Any) -> None:
    """Copies answered 500 are counted as shadow errors only: the pool stays up, its 5xx count and the alias's metrics stay clean."""
    emu.faults.models[CANARY] = ModelFault(error_rate=1.0)
    rig: Rig = await rig_factory(pools=(PoolSpec(name="a", url=emu.url, weight=1),), pool_failure_threshold=1)
    rig.mirror(100)
    breaker = rig.service.core.pools.pools["a"].breaker
    async with client_session() as http:
        for _ in range(6):
            assert (await chat(http, rig, max_tokens=1))[:2] == (200, STABLE)
        await eventually(lambda: rig.shadow("error") == 6 and rig.active() == 0)
        assert emu.call_log.counters()["model_faults"][CANARY]["error"] == 6
        assert breaker.available(time.monotonic())
        assert rig.samples("lora_syncer_proxy_pool_up", pool="a") == 1
        assert rig.samples("lora_syncer_proxy_pool_errors_total", pool="a") == 0
        assert rig.samples("lora_syncer_proxy_requests_total", status="500") == 0
        assert rig.samples("lora_syncer_proxy_requests_total", alias=ALIAS, target=STABLE, status="200") == 6
        assert {r.error for r in rig.results} == {"http_5xx"}
        # The same failure on the real traffic opens it at once (threshold 1): the check above is not vacuous.
        emu.faults.models[STABLE] = ModelFault(error_rate=1.0)
        assert (await chat(http, rig, max_tokens=1))[0] == 500
    assert not breaker.available(time.monotonic())


async def test_no_mirror_no_copies(emu: Emulator, rig_factory: Any) -> None:
    """Without a mirror on the route nothing is copied and no shadow series appear."""
    rig: Rig = await rig_factory()
    async with client_session() as http:
        for _ in range(4):
            assert (await chat(http, rig, max_tokens=1))[0] == 200
    assert emu.call_log.served == {STABLE: 4}
    assert rig.samples("lora_syncer_proxy_shadow_requests_total") == 0


async def test_requests_already_sent_to_the_canary_are_not_copied(emu: Emulator, rig_factory: Any) -> None:
    """stable 50 / canary 50 with a 100% mirror: only the stable's 5 of 10 requests are copied."""
    rig: Rig = await rig_factory()
    for pool in rig.service.core.pools.pools.values():
        route = pool.table.exact[ALIAS]
        names, weights = (STABLE, CANARY), (50, 50)
        pool.table.exact[ALIAS] = dataclasses.replace(
            route, weights=weights, rr=SmoothWeightedRoundRobin(names, weights), mirror=Mirror(CANARY, 100)
        )
    async with client_session() as http:
        served = [(await chat(http, rig, max_tokens=1))[1] for _ in range(10)]
    assert served.count(STABLE) == served.count(CANARY) == 5
    await eventually(lambda: rig.shadow("ok") == 5 and rig.active() == 0)
    assert emu.call_log.served == {STABLE: 5, CANARY: 10}
