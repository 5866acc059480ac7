"""Pools of the standalone proxy (pure): flags, the HTTPRoute in the rules file, per-pool rules, the circuit breaker, the pick."""

from __future__ import annotations

from collections import Counter

import pytest

from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import Backend, PoolRoute, is_rules_document, parse_rules_text
from lora_syncer.proxy.pools import CircuitBreaker, PoolSpec, convention_url, parse_pool_flag, route_pools
from lora_syncer.proxy.poolset import PoolSet

ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm-route, namespace: models}
spec:
  parentRefs: [{name: inference-gateway}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - {group: inference.networking.k8s.io, kind: InferencePool, name: llm, weight: 90}
    - {group: inference.networking.k8s.io, kind: InferencePool, name: llm-new, weight: 10, port: 9000}
    - {kind: Service, name: spare, port: 8000, namespace: other, weight: 0}
"""

PER_POOL = """kind: InferenceModelRewrite
metadata: {name: generic}
spec:
  rules:
  - matches: [{model: {value: food-review}}]
    targets: [{modelRewrite: food-review-1}]
---
kind: InferenceModelRewrite
metadata: {name: for-new}
spec:
  poolRef: {name: llm-new}
  rules:
  - matches: [{model: {value: food-review}}]
    targets: [{modelRewrite: food-review-new}]
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_rules_text(text, "rules.yaml")
    return [f"{i.path}: {i.message}" for i in info.value.issues if i.severity == "error"]


class TestPoolFlag:
    @pytest.mark.parametrize(
        ("text", "spec"),
        [
            ("a=http://a:8000", PoolSpec("a", "http://a:8000", 1)),
            ("a=http://a:8000/@25", PoolSpec("a", "http://a:8000", 25)),
            (" b = https://user@b.svc:443@0", PoolSpec("b", "https://user@b.svc:443", 0)),
        ],
    )
    def test_parses(self, text: str, spec: PoolSpec) -> None:
        """NAME=URL[@WEIGHT]: the weight defaults to 1 and an `@` inside the URL is kept."""
        assert parse_pool_flag(text) == spec

    @pytest.mark.parametrize("text", ["a", "=http://a", "a=", "a=ftp://x", "a=http://", "a=http://x@2000000"])
    def test_rejects(self, text: str) -> None:
        """A flag without a name, a URL with a host, or with a weight out of range is refused."""
        with pytest.raises(ValueError):
            parse_pool_flag(text)


class TestHTTPRoute:
    def test_backends_read_with_gateway_defaults(self) -> None:
        """backendRefs are read in order; the Gateway API's defaults apply (kind Service, weight 1)."""
        rs = parse_rules_text(ROUTE, "rules.yaml")
        assert rs.rules == ()
        assert rs.route is not None and rs.route.namespace == "models"
        assert [(b.name, b.weight, b.kind, b.port) for b in rs.route.backends] == [
            ("llm", 90, "InferencePool", None),
            ("llm-new", 10, "InferencePool", 9000),
            ("spare", 0, "Service", 8000),
        ]
        assert is_rules_document({"kind": "HTTPRoute"})

    def test_names_map_to_flags_then_convention(self) -> None:
        """A --pool flag gives a backend's URL; otherwise http://NAME.NAMESPACE.svc:PORT (port 8000 by default)."""
        rs = parse_rules_text(ROUTE, "rules.yaml")
        assert rs.route is not None
        pools = route_pools(rs.route, {"llm": "http://10.0.0.1:8000"})
        assert pools == (
            PoolSpec("llm", "http://10.0.0.1:8000", 90),
            PoolSpec("llm-new", "http://llm-new.models.svc:9000", 10),
            PoolSpec("spare", "http://spare.other.svc:8000", 0),
        )
        assert convention_url(Backend("x", 1), None) == "http://x:8000"

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (("name: llm-new, weight: 10", "name: llm, weight: 10"), "listed twice"),
            (("kind: Service, name: spare, port: 8000,", "kind: Service, name: spare,"), "needs a port"),
            (("kind: Service, name: spare", "kind: Pod, name: spare"), "is not supported"),
            (("weight: 90}", "wieght: 90}"), "unknown key"),
            (("backendRefs:", "backendRef:"), "unknown key"),
        ],
    )
    def test_mistakes_are_errors(self, change: tuple[str, str], expected: str) -> None:
        """Repeated pools, unsupported backends and misspelt keys are errors naming the place."""
        found = errors(ROUTE.replace(*change))
        assert any(expected in e for e in found), found

    def test_one_split_per_file(self) -> None:
        """Two rules (or two HTTPRoutes) with backendRefs are an error: the proxy splits by one set of weights."""
        rule = "  - backendRefs: [{kind: InferencePool, group: inference.networking.k8s.io, name: z}]\n"
        assert any("only one HTTPRoute rule" in e for e in errors(ROUTE + rule))
        second = ROUTE.replace("name: llm-route", "name: other")
        assert any("second HTTPRoute" in e for e in errors(ROUTE + "---\n" + second))

    def test_matches_other_than_everything_are_a_warning(self) -> None:
        """Matches the proxy does not evaluate are a warning, not an error."""
        rs = parse_rules_text(ROUTE.replace("value: /}", "value: /v1}"), "rules.yaml")
        assert any("not evaluated" in w.message for w in rs.warnings)


class TestPerPoolRules:
    def test_pool_specific_rule_wins_for_its_pool_only(self) -> None:
        """A rule naming a pool applies to that pool and beats a rule naming none; other pools get the generic one."""
        rs = parse_rules_text(PER_POOL, "rules.yaml")
        assert rs.winners("llm-new")[0]["food-review"].targets[0].name == "food-review-new"
        assert rs.winners("llm")[0]["food-review"].targets[0].name == "food-review-1"
        assert rs.pools_named == ("llm-new",)

    def test_rules_for_different_pools_do_not_shadow_each_other(self) -> None:
        """The same alias rewritten differently in two pools is not reported as shadowed."""
        text = PER_POOL.replace("name: generic}\nspec:\n", "name: generic}\nspec:\n  poolRef: {name: llm}\n")
        rs = parse_rules_text(text, "rules.yaml")
        assert [w.message for w in rs.warnings if "precedence" in w.message] == []


class TestCircuitBreaker:
    def test_opens_after_failures_in_a_row_and_backs_off(self) -> None:
        """N failures in a row open it; failed probes double the backoff up to the cap; a passing probe closes it."""
        b = CircuitBreaker(failure_threshold=2, backoff_initial=1.0, backoff_max=3.0)
        assert not b.record_failure(0.0, "x")
        b.record_success()
        assert not b.record_failure(0.0, "x")
        assert b.record_failure(0.0, "y")
        assert (b.state(0.5), b.available(0.5), b.wants_probe(0.5)) == ("open", False, False)
        assert (b.state(1.0), b.available(1.0), b.wants_probe(1.0)) == ("half-open", False, True)
        b.probe_failed(1.0, "z")
        assert b.backoff == 2.0
        b.probe_failed(3.0, "z")
        assert b.backoff == 3.0
        assert b.probe_succeeded()
        assert (b.state(3.0), b.available(3.0), b.backoff, b.opens) == ("closed", True, 0.0, 1)

    def test_passing_probe_does_not_forgive_failed_requests_while_closed(self) -> None:
        """A server that answers /health but fails every request still leaves the rotation."""
        b = CircuitBreaker(failure_threshold=2)
        assert not b.record_failure(0.0, "HTTP 500")
        assert not b.probe_succeeded()  # /health passes between the two failures
        assert b.record_failure(0.1, "HTTP 500")
        assert b.state(0.1) == "open"

    def test_failed_probe_opens_at_once(self) -> None:
        """One failed health probe takes a pool out (the server said it is not healthy)."""
        b = CircuitBreaker(failure_threshold=5)
        assert b.probe_failed(0.0, "health probe: HTTP 503")
        assert not b.available(0.0)


class TestPoolSet:
    def _set(self) -> PoolSet:
        route = PoolRoute("r", (Backend("a", 3), Backend("b", 1)))
        specs = route_pools(route, {"a": "http://a:1", "b": "http://b:1"})
        return PoolSet.build(specs, "httproute", parse_rules_text(PER_POOL, "r"), None, CircuitBreaker)

    def test_exact_weighted_and_share_of_a_down_pool_goes_to_the_others(self) -> None:
        """3/1 gives exactly 3 and 1 of every 4 picks; with `a` out every pick is `b`; a retry never repeats a pool."""
        ps = self._set()
        picks = [ps.choose(0.0) for _ in range(8)]
        assert Counter(p.name for p in picks if p) == {"a": 6, "b": 2}
        ps.pools["a"].breaker.probe_failed(0.0, "down")
        assert {p.name for p in (ps.choose(0.0) for _ in range(5)) if p} == {"b"}
        assert ps.choose(0.0, exclude=["b"]) is None  # `a` is out, `b` was tried
        ps.pools["b"].breaker.probe_failed(0.0, "down")
        first = ps.choose(0.0)
        assert first is not None  # none in rotation: still try one rather than refuse

    def test_reload_keeps_breakers_of_unchanged_pools(self) -> None:
        """A weights edit keeps each pool's health; a pool whose URL changed starts afresh."""
        ps = self._set()
        ps.pools["a"].breaker.probe_failed(0.0, "down")
        again = PoolSet.build(
            [PoolSpec("a", "http://a:1", 1), PoolSpec("b", "http://b:2", 1)],
            "httproute",
            parse_rules_text(PER_POOL, "r"),
            ps,
            CircuitBreaker,
        )
        assert again.pools["a"].breaker is ps.pools["a"].breaker
        assert again.pools["b"].breaker is not ps.pools["b"].breaker
