"""Weighted selection: smooth weighted round-robin, sticky hashing, and the per-request decision."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from math import gcd

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.config.rules import parse_rules
from lora_syncer.proxy.matching import RouteTable, decide
from lora_syncer.proxy.select import SmoothWeightedRoundRobin, pick_sticky, reduce_weights

V1, V2 = "small-segment-lora-v1", "small-segment-lora-v2"


def picks(rr: SmoothWeightedRoundRobin, n: int, eligible: frozenset[str] | None = None) -> list[str | None]:
    return [rr.pick_name(eligible) for _ in range(n)]


def table(text: str) -> RouteTable:
    return RouteTable.build(parse_rules(text.encode(), "rules.yaml"))


def split_rules(*targets: tuple[str, int]) -> str:
    lines = ["kind: InferenceModelRewrite", "metadata: {name: r}", "spec:", "  rules:"]
    lines += ["  - matches: [{model: {value: small-segment-lora}}]", "    targets:"]
    lines += [f"    - {{modelRewrite: {n}, weight: {w}}}" for n, w in targets]
    return "\n".join(lines) + "\n"


class TestSmoothWeightedRoundRobin:
    def test_ninety_ten_gives_exactly_eighteen_and_two_per_twenty(self) -> None:
        """90/10 gives exactly 18 and 2 in every window of 20 consecutive requests."""
        rr = SmoothWeightedRoundRobin([V1, V2], [90, 10])
        seq = picks(rr, 200)
        for start in range(0, 181):
            assert Counter(seq[start : start + 20]) == {V1: 18, V2: 2}

    def test_fifty_fifty_alternates(self) -> None:
        """50/50 alternates, starting with the first target."""
        rr = SmoothWeightedRoundRobin([V1, V2], [50, 50])
        assert picks(rr, 6) == [V1, V2, V1, V2, V1, V2]

    def test_zero_hundred_sends_everything_to_the_second(self) -> None:
        """A weight of 0 drains a target completely."""
        rr = SmoothWeightedRoundRobin([V1, V2], [0, 100])
        assert set(picks(rr, 50)) == {V2}

    def test_smoothness(self) -> None:
        """The minority target is spread out, not bunched: 90/10 puts v2 exactly once in each block of 10."""
        rr = SmoothWeightedRoundRobin([V1, V2], [90, 10])
        seq = picks(rr, 100)
        assert all(seq[i : i + 10].count(V2) == 1 for i in range(0, 100, 10))

    def test_all_drained_returns_none(self) -> None:
        """With every weight 0 there is nothing to pick."""
        rr = SmoothWeightedRoundRobin([V1, V2], [0, 0])
        assert rr.pick() is None

    def test_ineligible_share_moves_to_the_rest(self) -> None:
        """A target that is not eligible gets nothing; the others share in proportion to their weights."""
        rr = SmoothWeightedRoundRobin(["a", "b", "c"], [2, 1, 1])
        seq = picks(rr, 30, frozenset({"a", "c"}))
        assert Counter(seq) == {"a": 20, "c": 10}

    def test_none_eligible(self) -> None:
        """When no weighted target is eligible, pick returns None."""
        rr = SmoothWeightedRoundRobin([V1, V2], [90, 10])
        assert rr.pick(frozenset({"other"})) is None

    def test_reduce_weights(self) -> None:
        """Weights are divided by their common divisor; zeros stay zero."""
        assert reduce_weights([90, 10]) == (9, 1)
        assert reduce_weights([0, 100]) == (0, 1)
        assert reduce_weights([3, 5]) == (3, 5)
        assert reduce_weights([0, 0]) == (0, 0)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=6).filter(
            lambda ws: sum(ws) > 0
        )
    )
    def test_every_window_of_the_period_holds_exact_weights(self, weights: list[int]) -> None:
        """Over any run of sum(weights)/gcd consecutive picks, each target gets exactly weight/gcd picks."""
        names = [f"t{i}" for i in range(len(weights))]
        rr = SmoothWeightedRoundRobin(names, weights)
        divisor = 0
        for w in weights:
            divisor = gcd(divisor, w)
        period = sum(weights) // divisor
        seq = picks(rr, 3 * period)
        expected = {n: w // divisor for n, w in zip(names, weights, strict=True) if w}
        for start in range(0, 2 * period + 1):
            assert Counter(seq[start : start + period]) == expected

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(min_value=1, max_value=1_000_000),
        st.integers(min_value=1, max_value=1_000_000),
        st.integers(min_value=1, max_value=500),
    )
    def test_two_targets_never_drift_a_whole_request(self, w1: int, w2: int, n: int) -> None:
        """With two targets, after any number of picks each count is within one request of its exact share."""
        rr = SmoothWeightedRoundRobin(["a", "b"], [w1, w2])
        counts = Counter(picks(rr, n))
        assert abs(counts["a"] - n * w1 / (w1 + w2)) < 1.0 + 1e-9

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=1, max_size=6),
        st.integers(min_value=1, max_value=500),
    )
    def test_counts_stay_close_to_shares(self, weights: list[int], n: int) -> None:
        """With any number of targets, no count strays from its exact share by as much as the number of targets."""
        names = [f"t{i}" for i in range(len(weights))]
        rr = SmoothWeightedRoundRobin(names, weights)
        counts = Counter(picks(rr, n))
        total = sum(weights)
        for name, w in zip(names, weights, strict=True):
            assert abs(counts[name] - n * w / total) < len(weights)


class TestSticky:
    def test_same_key_same_target(self) -> None:
        """The same key always gets the same target while the weights stay the same."""
        first = [pick_sticky([V1, V2], [50, 50], f"user-{i}") for i in range(100)]
        again = [pick_sticky([V1, V2], [50, 50], f"user-{i}") for i in range(100)]
        assert first == again

    def test_hash_is_stable_across_processes(self) -> None:
        """Two processes with different hash seeds give the same, pinned, point for a key."""
        code = "from lora_syncer.proxy.select import key_point; print(key_point('user-42'))"
        points = {
            subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
            for seed in ("1", "2")
        }
        # blake2b-64 of b"user-42": changing the hash moves every sticky user to another target.
        assert points == {"8043651368623730598"}

    def test_shares_roughly_follow_weights(self) -> None:
        """Over many keys the split follows the weights."""
        counts = Counter(pick_sticky([V1, V2], [90, 10], f"session-{i}") for i in range(5000))
        assert 400 < counts[1] < 600

    def test_growing_canary_keeps_its_users(self) -> None:
        """Users on the canary stay on it when its weight grows (10 -> 50 -> 100)."""
        keys = [f"u{i}" for i in range(2000)]
        on_v2_at_10 = {k for k in keys if pick_sticky([V1, V2], [90, 10], k) == 1}
        on_v2_at_50 = {k for k in keys if pick_sticky([V1, V2], [50, 50], k) == 1}
        assert on_v2_at_10 and on_v2_at_10 <= on_v2_at_50
        assert all(pick_sticky([V1, V2], [0, 100], k) == 1 for k in keys)

    def test_scaled_weights_pick_the_same(self) -> None:
        """90/10 and 9/1 send every key to the same target."""
        keys = [f"k{i}" for i in range(500)]
        assert [pick_sticky([V1, V2], [90, 10], k) for k in keys] == [
            pick_sticky([V1, V2], [9, 1], k) for k in keys
        ]

    def test_ineligible_and_drained(self) -> None:
        """Ineligible and zero-weight targets are never chosen; none left gives None."""
        assert {pick_sticky([V1, V2], [50, 50], f"k{i}", frozenset({V2})) for i in range(50)} == {1}
        assert pick_sticky([V1, V2], [0, 0], "k") is None


class TestDecide:
    def test_rotation_through_the_table(self) -> None:
        """A compiled 90/10 route decides 18 v1 and 2 v2 out of 20."""
        route = table(split_rules((V1, 90), (V2, 10))).lookup("small-segment-lora")
        assert route is not None
        got = Counter(decide(route).target for _ in range(20))
        assert got == {V1: 18, V2: 2}

    def test_unknown_name_has_no_route(self) -> None:
        """A name no rule matches has no route (it is forwarded unchanged)."""
        assert table(split_rules((V1, 1))).lookup("other") is None

    def test_not_loaded_share_goes_to_loaded(self) -> None:
        """Targets the syncer has not confirmed loaded get nothing while another is loaded."""
        route = table(split_rules((V1, 50), (V2, 50))).lookup("small-segment-lora")
        assert route is not None
        decisions = [decide(route, loaded=frozenset({V1})) for _ in range(10)]
        assert {d.target for d in decisions} == {V1}
        assert {d.reason for d in decisions} == {"weighted"}

    def test_nothing_loaded_falls_back_to_first_live_target(self) -> None:
        """When no target is loaded the request still goes to the first target with weight > 0."""
        route = table(split_rules((V1, 0), (V2, 100))).lookup("small-segment-lora")
        assert route is not None
        d = decide(route, loaded=frozenset())
        assert (d.target, d.reason) == (V2, "fallback")

    def test_all_drained(self) -> None:
        """With every weight 0 the decision has no target."""
        route = table(split_rules((V1, 0), (V2, 0))).lookup("small-segment-lora")
        assert route is not None
        d = decide(route)
        assert (d.target, d.reason) == (None, "drained")

    def test_sticky_decision(self) -> None:
        """A sticky key decides by hash and says so."""
        route = table(split_rules((V1, 50), (V2, 50))).lookup("small-segment-lora")
        assert route is not None
        d = decide(route, sticky_key="user-1")
        assert d.reason == "sticky"
        assert all(decide(route, sticky_key="user-1").target == d.target for _ in range(5))

    def test_reload_keeps_rotation_of_unchanged_alias(self) -> None:
        """Rebuilding the table with the same weights keeps the rotation; changed weights restart it."""
        text = split_rules((V1, 90), (V2, 10))
        first = table(text)
        route = first.lookup("small-segment-lora")
        assert route is not None
        for _ in range(5):
            decide(route)
        same = RouteTable.build(parse_rules(text.encode(), "rules.yaml"), previous=first)
        same_route = same.lookup("small-segment-lora")
        assert same_route is not None and same_route.rr is route.rr
        changed = RouteTable.build(parse_rules(split_rules((V1, 50), (V2, 50)).encode(), "r"), previous=first)
        changed_route = changed.lookup("small-segment-lora")
        assert changed_route is not None and changed_route.rr is not route.rr

    def test_catch_all_route(self) -> None:
        """A catch-all rule routes every name without an Exact rule."""
        text = "kind: InferenceModelRewrite\nmetadata: {name: c}\nspec:\n  rules:\n  - targets: [{modelRewrite: base}]\n"
        t = table(text)
        route = t.lookup("anything")
        assert route is not None and route.alias == "*"
        assert t.aliases == ()
