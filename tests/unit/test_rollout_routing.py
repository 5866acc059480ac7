"""Rollout routes as an input of the proxy's route table: exact splits, sticky monotonicity, reloads."""

from __future__ import annotations

from collections import Counter

from lora_syncer.config.rules import RuleSet, parse_rules_text
from lora_syncer.proxy.matching import RouteTable, decide
from lora_syncer.rollout.schedule import Phase, RolloutPosition
from lora_syncer.rollout.spec import RolloutSpec, SetWeight
from lora_syncer.rollout.weights import RolloutRoute, route_for

SPEC = RolloutSpec(name="r", model="m", stable="m-v1", canary="m-v2", steps=(SetWeight(10),))
RULES = """\
kind: InferenceModelRewrite
metadata: {name: rw}
spec:
  rules:
  - matches: [{model: {type: Exact, value: m}}]
    targets: [{modelRewrite: m-v1, weight: 1}]
  - matches: [{model: {type: Exact, value: other}}]
    targets: [{modelRewrite: other-v1, weight: WEIGHT}]
"""


def route(weight: int, mirror: int = 0) -> dict[str, RolloutRoute]:
    pos = RolloutPosition(Phase.PROGRESSING, 0, weight, mirror, "", 0.0)
    return {"m": route_for(SPEC, pos)}


def rules(weight: int = 1) -> RuleSet:
    return parse_rules_text(RULES.replace("WEIGHT", str(weight)), "rules.yaml")


def test_every_block_of_twenty_is_exact_at_every_step() -> None:
    previous = None
    for weight in (0, 10, 25, 50, 90, 100):
        table = RouteTable.build(rules(), previous, overrides=route(weight))
        r = table.lookup("m")
        assert r is not None and r.names == ("m-v1", "m-v2") and r.canary == "m-v2"
        for _ in range(3):
            got = Counter(decide(r).target for _ in range(20))
            assert got[("m-v2")] == weight * 20 // 100 and got["m-v1"] == 20 - weight * 20 // 100
        previous = table


def test_a_rules_reload_keeps_the_rollouts_route_and_its_rotation() -> None:
    table = RouteTable.build(rules(1), overrides=route(10))
    r = table.lookup("m")
    assert r is not None
    picks = [decide(r).target for _ in range(7)]
    reloaded = RouteTable.build(rules(5), table, overrides=route(10))
    again = reloaded.lookup("m")
    assert again is not None and again.rr is r.rr and again.rule.kind == "AdapterRollout"
    # The rotation continues where it was: the 20-block stays exact across the reload.
    picks += [decide(again).target for _ in range(13)]
    assert Counter(picks) == {"m-v1": 18, "m-v2": 2}
    assert reloaded.lookup("other") is not None


def test_sticky_users_on_the_canary_stay_there_as_it_grows() -> None:
    users = [f"user-{i}" for i in range(400)]
    on_canary: set[str] = set()
    for weight in (10, 25, 50, 75, 100):
        r = RouteTable.build(RuleSet(), overrides=route(weight)).lookup("m")
        assert r is not None
        now = {u for u in users if decide(r, sticky_key=u).target == "m-v2"}
        assert on_canary <= now
        on_canary = now
    assert on_canary == set(users)


def test_an_unloaded_canary_gets_no_traffic_and_the_mirror_is_on_the_route() -> None:
    r = RouteTable.build(RuleSet(), overrides=route(50, mirror=20)).lookup("m")
    assert r is not None and r.mirror is not None
    assert (r.mirror.target, r.mirror.percent) == ("m-v2", 20)
    assert {decide(r, loaded=frozenset({"m-v1"})).target for _ in range(10)} == {"m-v1"}


def test_target_named_knows_only_the_alias_targets() -> None:
    r = RouteTable.build(RuleSet(), overrides=route(10)).lookup("m")
    assert r is not None
    assert (r.target_named("stable"), r.target_named("canary"), r.target_named("m-v2")) == (
        "m-v1",
        "m-v2",
        "m-v2",
    )
    assert r.target_named("base-model") is None
    plain = RouteTable.build(rules()).lookup("m")
    assert plain is not None and plain.target_named("canary") is None and plain.target_named("m-v1") == "m-v1"


def test_a_canarys_5xx_answers_never_open_a_pools_breaker() -> None:
    from prometheus_client import CollectorRegistry

    from lora_syncer.proxy.metrics import ProxyMetrics
    from lora_syncer.proxy.options import ProxyOptions
    from lora_syncer.proxy.pool_manager import PoolManager
    from lora_syncer.proxy.pools import PoolSpec

    options = ProxyOptions(
        upstream="http://127.0.0.1:1",
        pools=(PoolSpec("a", "http://127.0.0.1:1", 1), PoolSpec("b", "http://127.0.0.1:2", 1)),
        pool_failure_threshold=2,
    )
    manager = PoolManager(options, ProxyMetrics(CollectorRegistry()), None, lambda: 0.0)
    manager.apply_rollouts(route(50))
    pool = manager.pools.pools["a"]
    assert manager.is_canary("m", "m-v2") and not manager.is_canary("m", "m-v1")
    for _ in range(5):
        manager.answered(pool, 500, canary=True)
    assert pool.breaker.available(0.0)
    manager.answered(pool, 500)
    manager.answered(pool, 500)
    assert not pool.breaker.available(0.0)
    # Pool mode keeps the rollout's route in every pool's table.
    assert all(p.table.lookup("m") is not None for p in manager.pools.pools.values())
