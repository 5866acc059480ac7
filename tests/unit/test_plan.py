"""The pure planner: desired file vs observed `/v1/models` -> actions and skips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.config.adapters import AdaptersConfig, DesiredAdapter
from lora_syncer.sync.plan import (
    ObservedModel,
    Op,
    PlanOptions,
    SkipReason,
    SourceRule,
    make_plan,
    prune_limit,
    source_allowed,
)
from lora_syncer.sync.reconciler import supports_inplace
from lora_syncer.sync.status import BackoffPolicy

BASE = ObservedModel("Qwen/Qwen3-32B", root="/models/qwen", parent=None)


def lora(name: str, root: str) -> ObservedModel:
    return ObservedModel(name, root=root, parent=BASE.id)


def cfg(
    exist: list[tuple[str, str]] | None = None,
    not_exist: list[str] | None = None,
    base: str | None = None,
) -> AdaptersConfig:
    e = tuple(DesiredAdapter(i, s, base) for i, s in exist or [])
    n = tuple(DesiredAdapter(i, "", base) for i in not_exist or [])
    conflicts = frozenset({a.id for a in e} & {a.id for a in n})
    return AdaptersConfig(ensure_exist=e, ensure_not_exist=n, conflicts=conflicts, default_base_model=base)


class TestMakePlan:
    def test_loads_missing(self) -> None:
        """Declared adapters the server lacks are loaded, in file order."""
        plan = make_plan(cfg([("a", "s1"), ("b", "s2")]), [BASE], PlanOptions())
        assert [(x.op, x.adapter_id, x.source) for x in plan.actions] == [
            (Op.LOAD, "a", "s1"),
            (Op.LOAD, "b", "s2"),
        ]

    def test_noop_when_in_sync(self) -> None:
        """A server matching the file needs no action."""
        plan = make_plan(cfg([("a", "s1")], ["gone"]), [BASE, lora("a", "s1")], PlanOptions())
        assert plan.is_noop and plan.in_sync == ("a",) and plan.absent == ("gone",)

    def test_unloads_declared_absent(self) -> None:
        """ensureNotExist adapters that are loaded get unloaded."""
        plan = make_plan(cfg([], ["a"]), [BASE, lora("a", "s")], PlanOptions())
        assert [(x.op, x.adapter_id) for x in plan.actions] == [(Op.UNLOAD, "a")]

    def test_never_unloads_undeclared_without_prune(self) -> None:
        """An adapter the file does not mention is left alone unless --prune."""
        observed = [BASE, lora("stray", "s")]
        assert make_plan(cfg([("a", "s")]), observed, PlanOptions()).actions[0].op == Op.LOAD
        assert all(
            x.adapter_id != "stray" for x in make_plan(cfg([("a", "s")]), observed, PlanOptions()).actions
        )
        pruned = make_plan(cfg([("a", "s")]), observed, PlanOptions(prune=True, prune_max="100%"))
        assert (Op.UNLOAD, "stray") in [(x.op, x.adapter_id) for x in pruned.actions]

    def test_prune_never_touches_base_models(self) -> None:
        """--prune unloads adapters only, never a base model entry."""
        plan = make_plan(cfg([]), [BASE], PlanOptions(prune=True))
        assert plan.is_noop

    def test_source_change_reloads_in_place(self) -> None:
        """A loaded adapter whose root differs from the declared source is reloaded in place."""
        plan = make_plan(cfg([("a", "v2")]), [BASE, lora("a", "v1")], PlanOptions())
        [action] = plan.actions
        assert (action.op, action.inplace, action.source) == (Op.RELOAD, True, "v2")

    def test_source_change_on_old_server(self) -> None:
        """Without load_inplace support the reload is marked for unload + load."""
        plan = make_plan(cfg([("a", "v2")]), [BASE, lora("a", "v1")], PlanOptions(supports_inplace=False))
        assert plan.actions[0].op == Op.RELOAD and not plan.actions[0].inplace

    def test_conflict_left_alone(self) -> None:
        """An id in both lists is skipped as a conflict and never unloaded."""
        plan = make_plan(cfg([("a", "s")], ["a"]), [BASE, lora("a", "s")], PlanOptions())
        assert plan.actions == ()
        assert [(s.adapter_id, s.reason) for s in plan.skips] == [("a", SkipReason.CONFLICT)]

    def test_conflict_not_loaded_either(self) -> None:
        """A conflicting id that is not loaded is not loaded either."""
        plan = make_plan(cfg([("a", "s")], ["a"]), [BASE], PlanOptions())
        assert plan.actions == ()

    def test_forbidden_source(self) -> None:
        """A source outside --allowed-sources is skipped and never sent."""
        plan = make_plan(
            cfg([("a", "evil/x"), ("b", "good/y")]), [BASE], PlanOptions(allowed_sources=("good/",))
        )
        assert [x.adapter_id for x in plan.actions] == ["b"]
        assert plan.skips[0].reason == SkipReason.FORBIDDEN_SOURCE

    @pytest.mark.parametrize(
        ("policy", "loads", "skips", "warns"),
        [("ignore", 1, 0, 0), ("warn", 1, 0, 1), ("enforce", 0, 1, 0)],
    )
    def test_base_model_policy(self, policy: str, loads: int, skips: int, warns: int) -> None:
        """An adapter for another base model is loaded, loaded with a warning, or skipped."""
        plan = make_plan(
            cfg([("a", "s")], base="meta-llama/Llama-3.1-8B"), [BASE], PlanOptions(base_model_policy=policy)
        )  # type: ignore[arg-type]
        assert (len(plan.actions), len(plan.skips), len(plan.base_model_warnings)) == (loads, skips, warns)

    def test_base_model_matches_root_or_served_name(self) -> None:
        """The base model may be named by its served name or by its --model path."""
        for base in ("Qwen/Qwen3-32B", "/models/qwen"):
            plan = make_plan(cfg([("a", "s")], base=base), [BASE], PlanOptions(base_model_policy="enforce"))
            assert len(plan.actions) == 1

    @settings(max_examples=200, deadline=None)
    @given(
        exist=st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from(["s1", "s2"]), max_size=6),
        not_exist=st.sets(st.sampled_from("abcdefgh"), max_size=6),
        loaded=st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from(["s1", "s2"]), max_size=8),
        prune=st.booleans(),
    )
    def test_never_unloads_an_ensure_exist_adapter(
        self, exist: dict[str, str], not_exist: set[str], loaded: dict[str, str], prune: bool
    ) -> None:
        """Whatever the inputs, no UNLOAD targets an id declared in ensureExist, and applying the plan converges."""
        config = cfg(list(exist.items()), sorted(not_exist))
        observed = [BASE, *(lora(k, v) for k, v in loaded.items())]
        # --prune-max 100%: convergence in one pass (holding is tested on its own below).
        plan = make_plan(config, observed, PlanOptions(prune=prune, prune_max="100%"))
        for action in plan.actions:
            if action.op == Op.UNLOAD:
                assert action.adapter_id not in exist
        # Apply the plan to a model of the server, then plan again: nothing left to do.
        server = dict(loaded)
        for action in plan.actions:
            if action.op == Op.UNLOAD:
                server.pop(action.adapter_id, None)
            else:
                server[action.adapter_id] = action.source or ""
        again = make_plan(
            config,
            [BASE, *(lora(k, v) for k, v in server.items())],
            PlanOptions(prune=prune, prune_max="100%"),
        )
        assert again.is_noop


class TestSourceRules:
    @pytest.mark.parametrize(
        ("rules", "source", "allowed"),
        [
            ((), "anything", True),
            (("myorg/",), "myorg/adapter", True),
            (("myorg/",), "other/adapter", False),
            (("myorg/",), "myorg/../../tmp/x", False),
            (("/adapters/",), "/adapters/a/v1", True),
            (("/adapters/",), "/adapters/../etc/passwd", False),
            (("/adapters",), "/adapters-evil/x", False),
            (("/adapters/",), "/adapters/./a", True),
            (("re:^s3://bucket/[a-z0-9-]+$",), "s3://bucket/abc-1", True),
            (("re:^s3://bucket/[a-z0-9-]+$",), "s3://bucket/abc/../x", False),
            (("a/", "b/"), "b/x", True),
        ],
    )
    def test_allowed(self, rules: tuple[str, ...], source: str, allowed: bool) -> None:
        """Prefixes, directory prefixes (no `..` escapes) and `re:` regexes decide what may load."""
        assert source_allowed(source, rules) is allowed

    def test_regex_rule_is_full_match(self) -> None:
        """A regex rule must match the whole source."""
        assert not SourceRule.parse("re:abc").allows("xabcx")


class TestBackoffAndVersion:
    def test_backoff_doubles_to_maximum(self) -> None:
        """Per-adapter backoff doubles from the initial delay up to the maximum (within jitter)."""
        policy = BackoffPolicy(initial=5, maximum=300, jitter=0.1)
        rng = random.Random(1)
        delays = [policy.delay(n, rng) for n in range(1, 10)]
        for n, d in enumerate(delays, start=1):
            base = min(300, 5 * 2 ** (n - 1))
            assert base * 0.9 <= d <= base * 1.1
        assert policy.delay(0) == 0

    @pytest.mark.parametrize(
        ("version", "expected"),
        [
            ("0.32.0", True),
            ("0.15.0", True),
            ("0.14.1", False),
            ("0.8.5.post1", False),
            ("1.0", True),
            (None, True),
            ("dev", True),
        ],
    )
    def test_supports_inplace(self, version: str | None, expected: bool) -> None:
        """load_inplace is used from vLLM 0.15 on (unknown versions are assumed recent)."""
        assert supports_inplace(version) is expected


class TestPruneMax:
    """--prune-max: an edit that would prune too much is held (pure part; the loop is tested live)."""

    @pytest.mark.parametrize(
        ("text", "loaded", "limit"),
        [
            ("50%", 5, 2),
            ("50%", 1, 0),
            ("100%", 3, 3),
            ("0%", 9, 0),
            ("3", 10, 3),
            ("0", 4, 0),
            ("12.5%", 8, 1),
        ],
    )
    def test_limit_is_a_count_or_a_share_of_the_loaded(self, text: str, loaded: int, limit: int) -> None:
        assert prune_limit(text, loaded) == limit

    def test_more_than_the_limit_is_held_not_planned(self) -> None:
        observed = [BASE, lora("a", "s"), lora("b", "s"), lora("c", "s")]
        plan = make_plan(cfg([("a", "s")]), observed, PlanOptions(prune=True))
        assert plan.held == ("b", "c") and plan.held_limit == 1
        assert [x for x in plan.actions if x.op == Op.UNLOAD] == []

    def test_confirmed_prune_is_planned(self) -> None:
        observed = [BASE, lora("a", "s"), lora("b", "s"), lora("c", "s")]
        options = PlanOptions(prune=True, prune_confirmed=frozenset({"b", "c"}))
        plan = make_plan(cfg([("a", "s")]), observed, options)
        assert plan.held == ()
        assert sorted(x.adapter_id for x in plan.actions if x.op == Op.UNLOAD) == ["b", "c"]

    def test_a_larger_prune_than_confirmed_is_held_again(self) -> None:
        observed = [BASE, lora("a", "s"), lora("b", "s"), lora("c", "s")]
        options = PlanOptions(prune=True, prune_confirmed=frozenset({"b"}))
        plan = make_plan(cfg([]), observed, options)
        assert plan.held == ("a", "b", "c")

    def test_within_the_limit_is_planned_at_once(self) -> None:
        observed = [BASE, lora("a", "s"), lora("b", "s"), lora("c", "s")]
        plan = make_plan(cfg([("a", "s"), ("b", "s")]), observed, PlanOptions(prune=True))
        assert plan.held == () and [(x.op, x.adapter_id) for x in plan.actions] == [(Op.UNLOAD, "c")]

    def test_explicit_ensure_not_exist_is_never_held(self) -> None:
        observed = [BASE, lora("a", "s"), lora("b", "s")]
        plan = make_plan(cfg([], ["a", "b"]), observed, PlanOptions(prune=True, prune_max="0"))
        assert plan.held == () and len(plan.actions) == 2
