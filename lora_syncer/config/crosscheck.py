"""Checks across the adapters file and the rules file together (pure).

Each file can be valid alone and still disagree with the other: a rule sending traffic to an
adapter the syncer never loads, an alias hiding an adapter, weights that do not say what they
seem to. These are findings (warnings), never errors: the proxy copes with every one of them
(a target that is not loaded gets no traffic), but the split is not the one the author meant.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.errors import Issue
from lora_syncer.config.rules import Rule, RuleSet

FindingKind = Literal[
    "undeclared_target",
    "unloaded_target",
    "alias_is_adapter",
    "alias_is_base_model",
    "unknown_pool",
    "weights_not_100",
]


@dataclass(frozen=True)
class Finding:
    """One disagreement, located at the rule (in the rules file) it concerns."""

    kind: FindingKind
    subject: str  # the target, alias or pool concerned
    rule: str  # the rule's id
    line: int | None
    message: str

    def to_issue(self, file: str | None, line_offset: int = 0) -> Issue:
        line = self.line + line_offset if self.line is not None else None
        return Issue(path=self.rule, message=self.message, line=line, severity="warning", file=file)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "rule": self.rule,
            "line": self.line,
            "message": self.message,
        }


@dataclass(frozen=True)
class Share:
    target: str
    weight: int
    percent: int  # of the rule's traffic, whole percents adding up to 100


@dataclass(frozen=True)
class AliasShares:
    """How one rule splits the requests it matches, in effective whole percents."""

    rule: str
    matches: tuple[str, ...]  # empty: every model no other rule matches
    pool: str | None
    shares: tuple[Share, ...]

    def describe(self) -> str:
        alias = ", ".join(self.matches) or "* (every other model)"
        where = f" (pool {self.pool})" if self.pool else ""
        split = ", ".join(f"{s.target} {s.percent}%" for s in self.shares)
        return f"{alias}{where} -> {split}"

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "matches": list(self.matches) or "*",
            "pool": self.pool,
            "shares": [{"model": s.target, "weight": s.weight, "percent": s.percent} for s in self.shares],
        }


@dataclass(frozen=True)
class CrossCheck:
    findings: tuple[Finding, ...]
    shares: tuple[AliasShares, ...]


def percents(weights: Sequence[int]) -> list[int]:
    """Whole percents adding up to exactly 100 (largest remainder), or all 0 when every weight is."""
    total = sum(weights)
    if total <= 0:
        return [0 for _ in weights]
    exact = [w * 100 / total for w in weights]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in by_remainder[: 100 - sum(out)]:
        out[i] += 1
    return out


def _shares(rule: Rule) -> AliasShares:
    weights = [t.weight for t in rule.targets]
    return AliasShares(
        rule=rule.id,
        matches=rule.matches,
        pool=rule.pool,
        shares=tuple(
            Share(t.name, t.weight, p) for t, p in zip(rule.targets, percents(weights), strict=True)
        ),
    )


def cross_check(
    adapters: AdaptersConfig,
    rules: RuleSet,
    base_models: Collection[str] | None = None,
    pools: Collection[str] | None = None,
) -> CrossCheck:
    """Compare a rules file with the adapters file it is deployed with.

    `base_models` are the base models the server serves, when known (the adapters file's
    `defaultBaseModel` and `base-model` values count too); `pools` are pool names given
    outside the rules file (`--pool`), added to its HTTPRoute's backends.
    """
    declared = {a.id for a in adapters.ensure_exist} - adapters.conflicts
    removed = {a.id for a in adapters.ensure_not_exist} - adapters.conflicts
    bases = set(base_models or ())
    bases |= {a.base_model for a in adapters.ensure_exist if a.base_model}
    if adapters.default_base_model:
        bases.add(adapters.default_base_model)
    known_pools = set(pools or ())
    if rules.route is not None:
        known_pools |= {b.name for b in rules.route.backends}

    findings: list[Finding] = []

    def add(kind: FindingKind, subject: str, rule: Rule, message: str) -> None:
        findings.append(Finding(kind, subject, rule.id, rule.line, message))

    for rule in rules.rules:
        names = {t.name for t in rule.targets}
        for target in rule.targets:
            if rule.weighted and target.weight == 0:
                continue  # drained: whether it is loaded does not change the split
            if target.name in removed:
                add(
                    "unloaded_target",
                    target.name,
                    rule,
                    f"target {target.name!r} is in ensureNotExist: the syncer unloads it, so its share "
                    "goes to the other targets (or requests get 503)",
                )
            elif target.name not in declared and target.name not in bases:
                add(
                    "undeclared_target",
                    target.name,
                    rule,
                    f"target {target.name!r} is not declared in ensureExist: it gets no traffic unless the "
                    "server serves it otherwise",
                )
        for alias in rule.matches:
            if alias in names:
                continue  # the alias is also one of its own targets: it stays reachable
            if alias in declared:
                add(
                    "alias_is_adapter",
                    alias,
                    rule,
                    f"alias {alias!r} is also an adapter id in ensureExist: requests for that adapter are "
                    "rewritten to this rule's targets and never reach it",
                )
            if alias in bases:
                add(
                    "alias_is_base_model",
                    alias,
                    rule,
                    f"alias {alias!r} is also a served base model: requests for the base model are "
                    "rewritten to this rule's targets",
                )
        if rule.pool is not None and known_pools and rule.pool not in known_pools:
            add(
                "unknown_pool",
                rule.pool,
                rule,
                f"poolRef names pool {rule.pool!r}, but no pool or HTTPRoute backend has that name "
                f"({', '.join(sorted(known_pools))}): this rule applies to no pool",
            )
        weights = [t.weight for t in rule.targets]
        if rule.weighted and sum(weights) not in (0, 100):
            written = "/".join(str(w) for w in weights)
            effective = "/".join(str(p) for p in percents(weights))
            add(
                "weights_not_100",
                ", ".join(rule.matches) or "*",
                rule,
                f"weights {written} add up to {sum(weights)}, not 100: {written} is an effective {effective}",
            )
    return CrossCheck(findings=tuple(findings), shares=tuple(_shares(r) for r in rules.rules))
