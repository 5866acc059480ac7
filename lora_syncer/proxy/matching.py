"""The rules compiled for the hot path: one dict lookup per request, then a weighted pick (pure).

`RouteTable.build` turns a validated `RuleSet` into a table keyed by the client-facing name
(plus the catch-all route). Each alias keeps its own round-robin state; a reload that leaves an
alias's targets and weights unchanged keeps that state, so a rules edit elsewhere does not
restart its rotation.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Literal

from lora_syncer.config.rules import Rule, RuleSet
from lora_syncer.proxy.select import SmoothWeightedRoundRobin, pick_sticky

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
    mirror: Mirror | None = None  # a rollout's mirror step (see `lora_syncer.proxy.shadow`)


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
    if sticky_key is not None:
        index = pick_sticky(route.names, route.weights, sticky_key, loaded)
        reason: DecisionReason = "sticky"
    else:
        index = route.rr.pick(loaded)
        reason = "weighted"
    if index is not None:
        return Decision(route, route.names[index], reason)
    if route.first_live is None:
        return Decision(route, None, "drained")
    return Decision(route, route.first_live, "fallback")


class RouteTable:
    """Client-facing name -> Route, built once per rules generation."""

    __slots__ = ("catch_all", "exact", "ruleset")

    def __init__(self, exact: dict[str, Route], catch_all: Route | None, ruleset: RuleSet) -> None:
        self.exact = exact
        self.catch_all = catch_all
        self.ruleset = ruleset

    @classmethod
    def build(
        cls, ruleset: RuleSet, previous: RouteTable | None = None, pool: str | None = None
    ) -> RouteTable:
        """Compile `ruleset` (for one pool: see `RuleSet.winners`); reuse `previous`'s rotation where unchanged."""
        winners, catch_all_rule = ruleset.winners(pool)
        exact = {alias: _route(alias, rule, previous) for alias, rule in winners.items()}
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
