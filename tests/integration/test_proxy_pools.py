"""The proxy splitting traffic between two emulated vLLM pools with different base models: exact
weighted splits from an HTTPRoute or flags, per-pool rewrites, failover, rollback, health."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lora_syncer.cli import build_parser
from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import POOL_HEADER, ProxyOptions, proxy_options_from_args
from lora_syncer.proxy.pools import PoolSpec
from lora_syncer.proxy.service import ProxyService
from tests.support.wait import eventually as support_eventually

OLD, NEW = "vllm-llama3-8b-instruct", "vllm-llama3-8b-instruct-new"
OLD_BASE, NEW_BASE = "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"
ALIAS = "food-review"
# The adapter each pool serves for the alias (trained for that pool's base model).
TARGET = {OLD: "food-review-llama31", NEW: "food-review-llama32"}
KEY = "rules.yaml"
TIMEOUT = aiohttp.ClientTimeout(total=20)
WAIT = 15.0


def per_pool_rules() -> str:
    """One InferenceModelRewrite per pool: the alias goes to the adapter trained for that pool's base model."""
    docs = []
    for pool, target in TARGET.items():
        docs.append(
            "\n".join(
                [
                    "apiVersion: inference.networking.x-k8s.io/v1alpha2",
                    "kind: InferenceModelRewrite",
                    "metadata:",
                    f"  name: {ALIAS}-{pool}",
                    "spec:",
                    "  poolRef:",
                    "    group: inference.networking.k8s.io",
                    f"    name: {pool}",
                    "  rules:",
                    "    - matches:",
                    f"        - model: {{type: Exact, value: {ALIAS}}}",
                    "      targets:",
                    f"        - modelRewrite: {target}",
                    "          weight: 100",
                ]
            )
        )
    return "\n---\n".join(docs) + "\n"


def http_route(old: int, new: int) -> str:
    """The guides' HTTPRoute: two InferencePool backendRefs with weights."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: llm-route
spec:
  parentRefs:
    - name: inference-gateway
  rules:
    - matches:
        - path: {{type: PathPrefix, value: /}}
      backendRefs:
        - group: inference.networking.k8s.io
          kind: InferencePool
          name: {OLD}
          weight: {old}
        - group: inference.networking.k8s.io
          kind: InferencePool
          name: {NEW}
          weight: {new}
"""


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def eventually(predicate: Any, what: str, within: float = WAIT) -> Any:
    """tests.support.wait.eventually, with this module's (predicate, what) call shape."""
    return await support_eventually(predicate, timeout=within, message=f"waiting for: {what}")


@dataclass
class Answer:
    status: int
    pool: str | None
    model: str | None


@dataclass
class PoolsEnv:
    """Two emulated pools (different base models, each with its own adapter), a rules volume, a proxy."""

    old: Emulator
    new: Emulator
    volume: ConfigMapVolume
    http: aiohttp.ClientSession
    proxy: ProxyService | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @property
    def emulators(self) -> dict[str, Emulator]:
        return {OLD: self.old, NEW: self.new}

    async def start(self, rules: str, **overrides: Any) -> ProxyService:
        self.volume.write({KEY: rules})
        values: dict[str, Any] = {
            "upstream": "http://127.0.0.1:9",  # never used: pools replace --server
            "rules_path": self.volume.path(KEY),
            "host": "127.0.0.1",
            "port": 0,
            "poll_interval": 0.05,
            "pools": (PoolSpec(OLD, self.old.url), PoolSpec(NEW, self.new.url)),
            "pools_from_rules": True,
            "pool_health_interval": 0.05,
            "pool_health_timeout": 1.0,
            "pool_backoff": 0.1,
            "pool_backoff_max": 0.4,
        }
        values.update(overrides)
        proxy = ProxyService(ProxyOptions(**values), registry=self.registry)
        await proxy.start()
        self.proxy = proxy
        return proxy

    async def set_rules(self, text: str) -> None:
        """Swap the rules file the kubelet way and re-read it (the watcher would, within moments)."""
        proxy = self.proxy
        assert proxy is not None
        before = proxy.status()["generation"]
        self.volume.write({KEY: text})
        await proxy.reload()  # the watcher may have been first: then this finds it unchanged
        assert proxy.status()["generation"] != before

    async def ask(self, model: str = ALIAS) -> Answer:
        assert self.proxy is not None
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1}
        async with self.http.post(
            f"http://127.0.0.1:{self.proxy.port}/v1/chat/completions", json=body
        ) as resp:
            data = await resp.json()
            return Answer(resp.status, resp.headers.get(POOL_HEADER), data.get("model"))

    async def window(self, n: int) -> Counter[str]:
        """n sequential requests for the alias; each must be answered by the adapter of the pool that served it."""
        counts: Counter[str] = Counter()
        for _ in range(n):
            answer = await self.ask()
            assert answer.status == 200, answer
            assert answer.pool is not None and answer.model == TARGET[answer.pool], answer
            counts[answer.pool] += 1
        return counts


@pytest_asyncio.fixture
async def pools_env(tmp_path: Path) -> AsyncIterator[PoolsEnv]:
    old = Emulator(EmulatorConfig(served_model_name=OLD_BASE))
    new = Emulator(EmulatorConfig(served_model_name=NEW_BASE))
    for emulator, pool in ((old, OLD), (new, NEW)):
        await emulator.start()
        emulator.preload({TARGET[pool]: f"org/{TARGET[pool]}"})
    env = PoolsEnv(old, new, ConfigMapVolume(tmp_path / "rules"), aiohttp.ClientSession(timeout=TIMEOUT))
    try:
        yield env
    finally:
        if env.proxy is not None:
            await env.proxy.stop(1.0)
        await env.http.close()
        await old.stop()
        await new.stop()


class TestWeightedPools:
    async def test_rollout_90_10_then_50_50_then_100_exact(self, pools_env: PoolsEnv) -> None:
        """HTTPRoute weights 90/10 -> 50/50 -> 0/100 give exactly those counts in every window of 20."""
        env = pools_env
        await env.start(per_pool_rules() + "---\n" + http_route(90, 10))
        assert await env.window(20) == {OLD: 18, NEW: 2}
        assert await env.window(20) == {OLD: 18, NEW: 2}
        await env.set_rules(per_pool_rules() + "---\n" + http_route(50, 50))
        assert await env.window(20) == {OLD: 10, NEW: 10}
        await env.set_rules(per_pool_rules() + "---\n" + http_route(0, 100))
        assert await env.window(20) == {NEW: 20}
        # Each emulator saw only its own adapter: the rewrite happened after the pool was chosen.
        assert {c.model for c in env.old.calls if c.op == "chat"} <= {TARGET[OLD]}
        assert {c.model for c in env.new.calls if c.op == "chat"} <= {TARGET[NEW]}

    async def test_rollback_by_weights(self, pools_env: PoolsEnv) -> None:
        """Going back to 100/0 sends every request to the old pool again, which was never changed."""
        env = pools_env
        await env.start(per_pool_rules() + "---\n" + http_route(0, 100))
        assert await env.window(10) == {NEW: 10}
        await env.set_rules(per_pool_rules() + "---\n" + http_route(100, 0))
        assert await env.window(10) == {OLD: 10}

    async def test_metrics_and_status_by_pool(self, pools_env: PoolsEnv) -> None:
        """Requests, weights and up/down are exported per pool, and /status lists the pools with their health."""
        env = pools_env
        proxy = await env.start(per_pool_rules() + "---\n" + http_route(3, 1))
        assert await env.window(8) == {OLD: 6, NEW: 2}
        reg = env.registry
        assert metric(reg, "lora_syncer_proxy_pool_requests_total", pool=OLD, status="200") == 6
        assert metric(reg, "lora_syncer_proxy_pool_requests_total", pool=NEW, status="200") == 2
        assert metric(reg, "lora_syncer_proxy_pool_weight", pool=OLD) == 3
        assert metric(reg, "lora_syncer_proxy_pool_up", pool=NEW) == 1
        status = proxy.status()
        assert status["poolSource"] == "httproute"
        assert [(p["name"], p["url"], p["weight"], p["state"]) for p in status["pools"]] == [
            (OLD, env.old.url, 3, "closed"),
            (NEW, env.new.url, 1, "closed"),
        ]
        assert status["pools"][1]["aliases"][ALIAS]["targets"] == {TARGET[NEW]: 100}
        assert status["httpRoute"]["backendRefs"][0]["name"] == OLD

    async def test_flag_weights_without_httproute(self, pools_env: PoolsEnv) -> None:
        """`--pool NAME=URL@WEIGHT` flags alone split traffic by their weights, with the per-pool rewrites."""
        env = pools_env
        argv = [
            "proxy",
            "--rules",
            "rules.yaml",
            "--pool",
            f"{OLD}={env.old.url}@1",
            "--pool",
            f"{NEW}={env.new.url}@1",
        ]
        args = build_parser(only="proxy").parse_args(argv)
        options = proxy_options_from_args(args, args.server, pools_from_rules=True)
        assert options.pools == (PoolSpec(OLD, env.old.url, 1), PoolSpec(NEW, env.new.url, 1))
        await env.start(per_pool_rules(), pools=options.pools)
        assert env.proxy is not None and env.proxy.status()["poolSource"] == "flags"
        assert await env.window(10) == {OLD: 5, NEW: 5}

    async def test_pools_from_environment(self, pools_env: PoolsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        """LORA_SYNCER_POOLS (comma-separated NAME=URL@WEIGHT) sets the pools when no --pool flag is given."""
        env = pools_env
        monkeypatch.setenv("LORA_SYNCER_POOLS", f"{OLD}={env.old.url}@4, {NEW}={env.new.url}@1")
        args = build_parser(only="proxy").parse_args(["proxy", "--rules", "rules.yaml"])
        options = proxy_options_from_args(args, args.server, pools_from_rules=True)
        assert options.pools == (PoolSpec(OLD, env.old.url, 4), PoolSpec(NEW, env.new.url, 1))
        await env.start(per_pool_rules(), pools=options.pools)
        assert await env.window(10) == {OLD: 8, NEW: 2}
        assert os.environ["LORA_SYNCER_POOLS"]

    async def test_sticky_header_pins_a_user_to_a_pool(self, pools_env: PoolsEnv) -> None:
        """With --sticky-header the same user always lands on the same pool while the weights stay."""
        env = pools_env
        proxy = await env.start(per_pool_rules() + "---\n" + http_route(50, 50), sticky_header="x-user-id")
        seen: dict[str, set[str]] = {}
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            for _ in range(3):
                async with env.http.post(
                    f"http://127.0.0.1:{proxy.port}/v1/chat/completions",
                    json={"model": ALIAS, "messages": [{"role": "user", "content": "x"}]},
                    headers={"x-user-id": user},
                ) as resp:
                    assert resp.status == 200
                    seen.setdefault(user, set()).add(resp.headers[POOL_HEADER])
        assert all(len(pools) == 1 for pools in seen.values())
        assert {p for pools in seen.values() for p in pools} == {OLD, NEW}

    async def test_rule_for_an_unknown_pool_is_reported(self, pools_env: PoolsEnv) -> None:
        """A poolRef naming a pool the proxy does not route to shows in /status (its rules are unused)."""
        env = pools_env
        rules = per_pool_rules().replace(f"name: {NEW}\n", "name: some-other-pool\n")
        proxy = await env.start(rules + "---\n" + http_route(1, 1))
        assert proxy.status()["unknownPoolRefs"] == ["some-other-pool"]
        answer = await env.ask()
        assert answer.status == 200
        # The first request goes to the old pool (SWRR picks the first of equals).
        assert answer.pool == OLD and answer.model == TARGET[OLD]
        answer = await env.ask()
        # No rule applies to the new pool: the name is passed on as is, and that server does not know it.
        assert (answer.pool, answer.status) == (NEW, 404)


class TestPoolHealth:
    async def test_pool_going_down_mid_run_loses_no_request(self, pools_env: PoolsEnv) -> None:
        """A pool that goes down mid-run: every request is still answered correctly by the other pool."""
        env = pools_env
        # Probes are slow here, so the outage is found by requests, which must be retried.
        proxy = await env.start(per_pool_rules() + "---\n" + http_route(50, 50), pool_health_interval=0.5)
        answers: list[Answer] = []

        async def client(n: int) -> None:
            for _ in range(n):
                answers.append(await env.ask())

        async def outage() -> None:
            await eventually(lambda: len(answers) >= 20, "20 answers before the outage")
            await env.new.go_down()

        await asyncio.gather(client(40), client(40), client(40), outage())
        assert len(answers) == 120
        assert [a for a in answers if a.status != 200 or a.pool is None or a.model != TARGET[a.pool]] == []
        assert Counter(a.pool for a in answers[:20]) == {OLD: 10, NEW: 10}
        assert metric(env.registry, "lora_syncer_proxy_pool_retries_total", pool=NEW) >= 1
        await eventually(lambda: proxy.status()["pools"][1]["state"] != "closed", "new pool out of rotation")
        assert metric(env.registry, "lora_syncer_proxy_pool_up", pool=NEW) == 0
        # While it is down, everything goes to the old pool.
        assert await env.window(10) == {OLD: 10}
        await env.new.come_up(forget_adapters=False)
        await eventually(lambda: proxy.status()["pools"][1]["state"] == "closed", "new pool back")
        assert metric(env.registry, "lora_syncer_proxy_pool_up", pool=NEW) == 1
        counts = await env.window(20)
        assert counts[OLD] > 0 and counts[NEW] > 0

    async def test_dropped_connection_is_retried_on_the_other_pool(self, pools_env: PoolsEnv) -> None:
        """A pool that closes the connection without answering: the request is answered by the other pool."""
        env = pools_env
        await env.start(per_pool_rules() + "---\n" + http_route(50, 50), pool_failure_threshold=10)
        env.new.faults.failure_mode = "drop"
        env.new.faults.fail_next = {"chat": 2}
        counts = await env.window(10)
        assert counts == {OLD: 7, NEW: 3}  # NEW's first two turns were retried on OLD
        assert metric(env.registry, "lora_syncer_proxy_pool_retries_total", pool=NEW) == 2
        assert metric(env.registry, "lora_syncer_proxy_pool_errors_total", pool=NEW, kind="disconnect") == 2

    async def test_5xx_answers_take_a_pool_out_until_its_health_probe_passes(
        self, pools_env: PoolsEnv
    ) -> None:
        """Failures in a row (500 answers) open the pool's breaker; a passing /health probe brings it back."""
        env = pools_env
        proxy = await env.start(
            per_pool_rules() + "---\n" + http_route(50, 50),
            pool_failure_threshold=2,
            pool_backoff=30.0,
            pool_backoff_max=30.0,
        )
        env.new.faults.fail_next = {"chat": 2}
        statuses = Counter()
        for _ in range(10):
            answer = await env.ask()
            statuses[(answer.pool, answer.status)] += 1
        # 500s are answers, relayed as they are (not retried); after 2 in a row the pool is out.
        assert statuses == {(OLD, 200): 8, (NEW, 500): 2}
        new_status = proxy.status()["pools"][1]
        assert new_status["state"] == "open" and new_status["lastError"] == "HTTP 500"
        assert metric(env.registry, "lora_syncer_proxy_pool_errors_total", pool=NEW, kind="status_5xx") == 2

    async def test_failed_health_probe_takes_a_pool_out_and_backs_off(self, pools_env: PoolsEnv) -> None:
        """A pool whose /health answers 503 leaves the rotation; it comes back when /health passes again."""
        env = pools_env
        proxy = await env.start(per_pool_rules() + "---\n" + http_route(50, 50))
        env.new.faults.engine_dead = True
        await eventually(lambda: proxy.status()["pools"][1]["state"] != "closed", "new pool out")
        assert await env.window(6) == {OLD: 6}
        await eventually(lambda: proxy.status()["pools"][1]["backoffSeconds"] >= 0.2, "backoff doubled")
        assert proxy.status()["pools"][1]["lastError"] == "health probe: HTTP 503"
        env.new.faults.engine_dead = False
        await eventually(lambda: proxy.status()["pools"][1]["state"] == "closed", "new pool back")
        assert proxy.status()["pools"][1]["timesOpened"] == 1
        counts = await env.window(10)
        assert counts[NEW] > 0
