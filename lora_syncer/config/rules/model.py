"""What a rules file means once read: targets, rules, the pool split, and which rule wins (pure).

Shared by every document kind: a kind's parser builds these, the proxy reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lora_syncer.config.errors import Issue
from lora_syncer.rollout.spec import RolloutSpec

KNOWN_GROUPS = ("inference.networking.x-k8s.io", "inference.networking.k8s.io")
GATEWAY_GROUP = "gateway.networking.k8s.io"
POOL_KIND = "InferencePool"
MAX_WEIGHT = 1_000_000


@dataclass(frozen=True)
class Target:
    """One destination of a rule: the model name vLLM serves, and its relative weight."""

    name: str
    weight: int


@dataclass(frozen=True)
class Rule:
    """One rule: the names it matches (empty = every name) and its weighted targets.

    `id` is stable across reloads (`<kind>/<document name>#<rule index>`) and is the `rule`
    label of the decision metric.
    """

    id: str
    kind: str
    document: str
    doc_index: int
    rule_index: int
    matches: tuple[str, ...]
    targets: tuple[Target, ...]
    weighted: bool
    created: datetime | None = None
    line: int | None = None
    pool: str | None = None

    @property
    def catch_all(self) -> bool:
        return not self.matches

    @property
    def precedence_key(self) -> tuple[bool, datetime, int, int]:
        """Smaller wins: oldest creationTimestamp (missing = newest), then document, then rule order."""
        created = self.created or datetime.max.replace(tzinfo=UTC)
        return (self.created is None, created, self.doc_index, self.rule_index)

    def to_dict(self) -> dict[str, Any]:
        total = sum(t.weight for t in self.targets)
        return {
            "id": self.id,
            "kind": self.kind,
            "document": self.document,
            "matches": list(self.matches) or "*",
            "targets": [
                {
                    "model": t.name,
                    "weight": t.weight,
                    "share": round(t.weight / total, 4) if total else 0.0,
                }
                for t in self.targets
            ],
            "weighted": self.weighted,
            "creationTimestamp": self.created.isoformat() if self.created else None,
            "line": self.line,
        }


@dataclass(frozen=True)
class SourceDocument:
    """Where rules came from: one document of the file (an item of a List counts as one)."""

    kind: str
    name: str
    index: int
    line: int | None
    api_version: str | None = None
    namespace: str | None = None
    created: datetime | None = None
    pool: str | None = None
    rules: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "apiVersion": self.api_version,
            "namespace": self.namespace,
            "creationTimestamp": self.created.isoformat() if self.created else None,
            "poolRef": self.pool,
            "rules": self.rules,
            "line": self.line,
        }


@dataclass(frozen=True)
class Backend:
    """One `backendRefs` entry of an HTTPRoute: a pool (InferencePool or Service) and its weight."""

    name: str
    weight: int
    kind: str = POOL_KIND
    group: str = KNOWN_GROUPS[1]
    port: int | None = None
    namespace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "kind": self.kind,
            "group": self.group,
            "port": self.port,
            "namespace": self.namespace,
        }


@dataclass(frozen=True)
class PoolRoute:
    """The HTTPRoute of a rules file: how traffic is split between pools, in file order."""

    document: str
    backends: tuple[Backend, ...]
    namespace: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "namespace": self.namespace,
            "line": self.line,
            "backendRefs": [b.to_dict() for b in self.backends],
        }


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file: every rule in file order, with the winner for each name resolved."""

    rules: tuple[Rule, ...] = ()
    documents: tuple[SourceDocument, ...] = ()
    warnings: tuple[Issue, ...] = field(default=(), compare=False)
    route: PoolRoute | None = None
    rollouts: tuple[RolloutSpec, ...] = ()  # AdapterRollout documents, in file order

    def winners(self, pool: str | None = None) -> tuple[dict[str, Rule], Rule | None]:
        """The rule in force for each Exact name, and the catch-all rule in force (if any).

        With `pool`, only rules without a poolRef or naming that pool count, and a rule naming
        the pool beats one naming none (it is the more specific). Without it every rule counts
        (one upstream: the poolRef is informational).
        """
        exact, catch_all, _ = resolve_precedence(rules_for_pool(self.rules, pool), pool)
        return exact, catch_all

    @property
    def pools_named(self) -> tuple[str, ...]:
        """Pools that some rule's poolRef names, in file order."""
        return tuple(dict.fromkeys(r.pool for r in self.rules if r.pool is not None))

    def rule_for(self, model: str) -> Rule | None:
        """The rule that applies to a request for `model` (reference implementation; the proxy precompiles)."""
        exact, catch_all = self.winners()
        return exact.get(model, catch_all)

    def to_dict(self) -> dict[str, Any]:
        exact, catch_all = self.winners()
        in_force = {r.id for r in exact.values()} | ({catch_all.id} if catch_all else set())
        body: dict[str, Any] = {
            "rules": [{**r.to_dict(), "inForce": r.id in in_force} for r in self.rules],
            "documents": [d.to_dict() for d in self.documents],
            "warnings": [w.to_dict() for w in self.warnings],
        }
        if self.route is not None:
            body["httpRoute"] = self.route.to_dict()
        if self.rollouts:
            body["adapterRollouts"] = [rollout_summary(r) for r in self.rollouts]
        return body


def rules_for_pool(rules: Iterable[Rule], pool: str | None) -> list[Rule]:
    """The rules that apply to `pool`: those without a poolRef and those naming it (all when pool is None)."""
    if pool is None:
        return list(rules)
    return [r for r in rules if r.pool is None or r.pool == pool]


def resolve_precedence(
    rules: Iterable[Rule], pool: str | None = None
) -> tuple[dict[str, Rule], Rule | None, list[tuple[Rule, Rule]]]:
    """Pick, for each Exact name and for "any name", the rule that wins.

    With `pool`, a rule whose poolRef names it comes before rules without a poolRef.
    Returns `(exact, catch_all, shadowed)`; `shadowed` pairs each losing rule with its winner.
    """
    exact: dict[str, Rule] = {}
    catch_all: Rule | None = None
    shadowed: list[tuple[Rule, Rule]] = []

    def key(r: Rule) -> tuple[bool, tuple[bool, datetime, int, int]]:
        return (pool is not None and r.pool != pool, r.precedence_key)

    for rule in sorted(rules, key=key):
        if rule.catch_all:
            if catch_all is None:
                catch_all = rule
            else:
                shadowed.append((rule, catch_all))
            continue
        for name in rule.matches:
            winner = exact.get(name)
            if winner is None:
                exact[name] = rule
            elif winner is not rule:
                shadowed.append((rule, winner))
    return exact, catch_all, shadowed


def rollout_summary(spec: RolloutSpec) -> dict[str, Any]:
    """An AdapterRollout as `check --json` and `/status` show it (camelCase keys)."""
    from lora_syncer.rollout.spec import Mirror, Pause, SetWeight, format_duration

    steps: list[dict[str, Any]] = []
    for step in spec.steps:
        if isinstance(step, SetWeight):
            steps.append({"setWeight": step.weight})
        elif isinstance(step, Pause):
            steps.append({"pause": {"duration": format_duration(step.duration)} if step.duration else {}})
        elif isinstance(step, Mirror):
            steps.append({"mirror": {"percent": step.percent, "duration": format_duration(step.duration)}})
    a = spec.analysis
    return {
        "name": spec.name,
        "model": spec.model,
        "stable": spec.stable,
        "canary": spec.canary,
        "steps": steps,
        "startTime": datetime.fromtimestamp(spec.start_time, UTC).isoformat() if spec.start_time else None,
        "progressDeadline": format_duration(spec.progress_deadline) if spec.progress_deadline else None,
        "analysis": None
        if a is None
        else {
            "interval": format_duration(a.interval),
            "minRequests": a.min_requests,
            "failureLimit": a.failure_limit,
            "maxErrorRate": a.max_error_rate,
            "maxLatencyRatio": a.max_latency_ratio,
            "maxEmptyRate": a.max_empty_rate,
            "maxLengthRatio": a.max_length_ratio,
            "prometheus": a.prometheus is not None,
            "webhook": a.webhook is not None,
        },
        "promotedStep": spec.promoted_step,
        "paused": spec.paused,
        "abort": spec.abort,
        "line": spec.line,
    }
