"""The rules compiled for the hot path: one dict lookup per request, then a weighted pick (pure).

`RouteTable.build` turns a validated `RuleSet` into a table keyed by the client-facing name
(plus the catch-all route). Each alias keeps its own round-robin state; a reload that leaves an
alias's targets and weights unchanged keeps that state, so a rules edit elsewhere does not
restart its rotation.

Rollouts are an input of the build, not a patch on its result: `overrides` (from
`lora_syncer.rollout.weights.overrides`) replace the rule of each model a rollout owns, with
targets `[stable, canary]` in that order, so a rules reload rebuilds them as they are.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Literal

from lora_syncer.config.rules import Rule, RuleSet, Target
from lora_syncer.proxy.select import SmoothWeightedRoundRobin, pick_sticky
from lora_syncer.rollout.spec import KIND as ROLLOUT_KIND
from lora_syncer.rollout.weights import RolloutRoute

CATCH_ALL = "*"

DecisionReason = Literal["weighted", "sticky", "fallback", "drained"]


@dataclass(frozen=True, slots=True)
class Mirror:
    """Shadow traffic of a route: copies of `percent` % of its requests also go to `target` (answers discarded)."""

    target: str
    percent: float


@dataclass(frozen=True, slots=True)
class Route:
    """What to do with requests for one alias (or, with alias `*`, for any unmatched name)."""

    alias: str
    rule: Rule
    names: tuple[str, ...]
    weights: tuple[int, ...]
    rr: SmoothWeightedRoundRobin
    first_live: str | None  # first target with weight > 0: the fallback when none is loaded
    # Set when an AdapterRollout owns the alias: its canary, and a mirror step's shadow copies to it.
    canary: str | None = None
    mirror: Mirror | None = None  # see `lora_syncer.proxy.shadow`

    def target_named(self, wanted: str) -> str | None:
        """`stable`, `canary` or one of the targets' names -> that target; None when not one of them."""
        if self.canary is not None and wanted in ("stable", "canary"):
            return self.canary if wanted == "canary" else self.names[0]
        return wanted if wanted in self.names else None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one pick. `target` is None only when every target is drained."""

    route: Route
    target: str | None
    reason: DecisionReason


def decide(route: Route, sticky_key: str | None = None, loaded: Container[str] | None = None) -> Decision:
    """Pick a target for one request.

    `loaded=None` means every target is eligible. When none of the weighted targets is
    loaded the request still goes to the first one (vLLM then answers with its own error);
    when every target has weight 0 the target is None (the proxy answers 503).
    """
    index = _pick(route, sticky_key, loaded)
    if index is not None:
        return Decision(route, route.names[index], "sticky" if sticky_key is not None else "weighted")
    if route.first_live is None:
        return Decision(route, None, "drained")
    return Decision(route, route.first_live, "fallback")


def decide_target(
    route: Route, sticky_key: str | None = None, loaded: Container[str] | None = None
) -> str | None:
    """`decide(...).target` without building the `Decision` (the proxy calls this once per request)."""
    index = _pick(route, sticky_key, loaded)
    return route.names[index] if index is not None else route.first_live


def _pick(route: Route, sticky_key: str | None, loaded: Container[str] | None) -> int | None:
    if sticky_key is not None:
        return pick_sticky(route.names, route.weights, sticky_key, loaded)
    return route.rr.pick(loaded)


class RouteTable:
    """Client-facing name -> Route, built once per rules generation."""

    __slots__ = ("catch_all", "exact", "ruleset")

    def __init__(self, exact: dict[str, Route], catch_all: Route | None, ruleset: RuleSet) -> None:
        self.exact = exact
        self.catch_all = catch_all
        self.ruleset = ruleset

    @classmethod
    def build(
        cls,
        ruleset: RuleSet,
        previous: RouteTable | None = None,
        pool: str | None = None,
        overrides: Mapping[str, RolloutRoute] | None = None,
    ) -> RouteTable:
        """Compile `ruleset` (for one pool: see `RuleSet.winners`) with the rollouts' `overrides`
        (they win over any rule for their model); reuse `previous`'s rotation where unchanged."""
        winners, catch_all_rule = ruleset.winners(pool)
        exact = {alias: _route(alias, rule, previous) for alias, rule in winners.items()}
        for model, rollout in (overrides or {}).items():
            exact[model] = _rollout_route(model, rollout, previous)
        catch_all = _route(CATCH_ALL, catch_all_rule, previous) if catch_all_rule else None
        return cls(exact, catch_all, ruleset)

    def lookup(self, model: str) -> Route | None:
        """The route for a requested model name, or None (forward unchanged)."""
        route = self.exact.get(model)
        return route if route is not None else self.catch_all

    def route_for_alias(self, alias: str) -> Route | None:
        return self.catch_all if alias == CATCH_ALL else self.exact.get(alias)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Client-facing names with an Exact rule (what `GET /v1/models` adds)."""
        return tuple(self.exact)


def _route(alias: str, rule: Rule, previous: RouteTable | None) -> Route:
    names = tuple(t.name for t in rule.targets)
    weights = tuple(t.weight for t in rule.targets)
    old = previous.route_for_alias(alias) if previous is not None else None
    if old is not None and old.names == names and old.weights == weights:
        rr = old.rr
    else:
        rr = SmoothWeightedRoundRobin(names, weights)
    first_live = next((t.name for t in rule.targets if t.weight > 0), None)
    return Route(alias=alias, rule=rule, names=names, weights=weights, rr=rr, first_live=first_live)


def _rollout_route(model: str, rollout: RolloutRoute, previous: RouteTable | None) -> Route:
    stable, canary = rollout.targets
    rule = Rule(
        id=rollout.document,
        kind=ROLLOUT_KIND,
        document=rollout.document.partition("/")[2],
        doc_index=-1,
        rule_index=0,
        matches=(model,),
        targets=(Target(stable.name, stable.weight), Target(canary.name, canary.weight)),
        weighted=True,
    )
    route = _route(model, rule, previous)
    mirror = Mirror(rollout.mirror.name, rollout.mirror.weight) if rollout.mirror is not None else None
    return Route(
        alias=route.alias,
        rule=rule,
        names=route.names,
        weights=route.weights,
        rr=route.rr,
        first_live=route.first_live,
        canary=canary.name,
        mirror=mirror,
    )
