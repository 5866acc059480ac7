"""Fault settings: endpoint names, flag parsing, deterministic and random failures, validated updates."""

from __future__ import annotations

import random

import pytest

from lora_syncer.emulator.faults import Faults, endpoint_key, parse_pairs


class TestEndpointNames:
    @pytest.mark.parametrize(
        ("name", "key"),
        [
            ("chat", "chat"),
            ("/v1/chat/completions", "chat"),
            ("/adapters", "load"),
            ("*", "*"),
            (" models ", "models"),
        ],
    )
    def test_keys_and_paths(self, name: str, key: str) -> None:
        """Short keys, route paths and `*` all name endpoints."""
        assert endpoint_key(name) == key

    def test_unknown_endpoint(self) -> None:
        """An unknown endpoint is refused with the list of valid names."""
        with pytest.raises(ValueError, match="unknown endpoint 'bogus'"):
            endpoint_key("bogus")

    def test_parse_pairs(self) -> None:
        """ENDPOINT=NUMBER pairs become a key -> float map."""
        assert parse_pairs(["chat=0.5", "/v1/models=1"], "--latency") == {"chat": 0.5, "models": 1.0}

    @pytest.mark.parametrize("item", ["chat", "chat=abc"])
    def test_parse_pairs_rejects_garbage(self, item: str) -> None:
        """A pair without '=' or with a non-number is refused naming the flag."""
        with pytest.raises(ValueError, match="--latency"):
            parse_pairs([item], "--latency")


class TestFaults:
    def test_latency_falls_back_to_star(self) -> None:
        """An endpoint without its own latency uses `*`."""
        faults = Faults(latency={"*": 0.2, "chat": 1.0})
        assert faults.latency_for("chat") == 1.0
        assert faults.latency_for("models") == 0.2
        assert Faults().latency_for("chat") == 0.0

    def test_fail_next_counts_down(self) -> None:
        """fail_next fails exactly N requests of that endpoint, then none."""
        faults = Faults(fail_next={"load": 2})
        rng = random.Random(0)
        assert [faults.should_fail("load", rng) for _ in range(3)] == [True, True, False]
        assert faults.should_fail("unload", rng) is False

    def test_rate_extremes(self) -> None:
        """Rate 1 always fails, rate 0 never does."""
        rng = random.Random(0)
        always = Faults(failure_rate={"chat": 1.0})
        never = Faults(failure_rate={"chat": 0.0})
        assert all(always.should_fail("chat", rng) for _ in range(50))
        assert not any(never.should_fail("chat", rng) for _ in range(50))

    def test_rate_is_roughly_honoured(self) -> None:
        """A 30% rate fails about 30% of a seeded run."""
        faults = Faults(failure_rate={"*": 0.3})
        rng = random.Random(42)
        failures = sum(faults.should_fail("chat", rng) for _ in range(2000))
        assert 450 < failures < 750

    def test_update_is_all_or_nothing(self) -> None:
        """An update with one bad field changes nothing."""
        faults = Faults()
        with pytest.raises(ValueError, match="failure_rate"):
            faults.update({"latency": {"chat": 1}, "failure_rate": {"chat": 2}})
        assert faults.latency == {}

    @pytest.mark.parametrize(
        "change",
        [
            {"failure_mode": "explode"},
            {"load_delay": -1},
            {"engine_dead": "yes"},
            {"nope": 1},
            {"latency": []},
        ],
    )
    def test_update_rejects_bad_values(self, change: dict[str, object]) -> None:
        """Unknown faults and out-of-range values are refused."""
        with pytest.raises(ValueError):
            Faults().update(change)

    def test_update_normalises_endpoint_paths(self) -> None:
        """Route paths in an update are stored under their endpoint keys."""
        faults = Faults()
        faults.update(
            {"failure_rate": {"/v1/load_lora_adapter": 0.5}, "fail_next": {"chat": 3}, "engine_dead": True}
        )
        assert faults.failure_rate == {"load": 0.5}
        assert faults.fail_next == {"chat": 3}
        assert faults.engine_dead is True

    def test_copy_is_independent(self) -> None:
        """A copy does not share its dicts with the original."""
        faults = Faults(latency={"chat": 1.0})
        clone = faults.copy()
        clone.latency["chat"] = 2.0
        assert faults.latency == {"chat": 1.0}
        assert clone.to_dict()["latency"] == {"chat": 2.0}
