"""Checks across the rules of one file: shadowed rules, self-rewrites, loops, drained rules (pure).

Run once every document has parsed without error; each problem is reported at its rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from lora_syncer.config.parsing import Collector
from lora_syncer.config.rules.model import Rule, resolve_precedence, rules_for_pool
from lora_syncer.config.rules.rewrite import KIND as REWRITE_KIND
from lora_syncer.config.yamldoc import Document, Path


def check_consistency(rules: list[Rule], locate: dict[str, tuple[Document, Path]], out: Collector) -> None:
    # Rules naming different pools never compete: check each pool's view on its own (plus the
    # rules without poolRef, which belong to every view). One pool or none: one view, as before.
    named: list[str | None] = list(dict.fromkeys(r.pool for r in rules if r.pool is not None))
    views = named if len(named) > 1 else [None]
    seen: set[tuple[str, str]] = set()
    for pool in views:
        view = rules_for_pool(rules, pool)

        def add(rule: Rule, message: str, severity: Literal["error", "warning"]) -> None:
            if (rule.id, message) in seen:
                return
            seen.add((rule.id, message))
            doc, path = locate[rule.id]
            out.add(doc, path, message, severity)

        _check_view(view, pool, add)


def _check_view(
    rules: list[Rule], pool: str | None, add: Callable[[Rule, str, Literal["error", "warning"]], None]
) -> None:
    exact, _catch_all, shadowed = resolve_precedence(rules, pool)

    for loser, winner in shadowed:
        what = (
            "every model"
            if loser.catch_all
            else ", ".join(repr(m) for m in loser.matches if exact.get(m) is winner)
        )
        add(
            loser,
            f"{what} is also matched by {winner.id}, which takes precedence; this rule is not used for it",
            "warning",
        )

    for rule in {id(r): r for r in exact.values()}.values():
        names = {t.name for t in rule.targets}
        if names and names <= set(rule.matches) and len(rule.matches) == 1 and rule.kind == REWRITE_KIND:
            add(
                rule,
                f"sends {rule.matches[0]!r} only to itself: remove the rule or name another target",
                "error",
            )
        if rule.targets and all(t.weight == 0 for t in rule.targets):
            add(rule, "every target has weight 0 (drained): requests it matches get 503", "warning")

    # Rewrites apply once. Aliases that point at each other would route by accident of
    # evaluation order, so a cycle is an error; a target that is also an alias is only a warning.
    graph = {alias: [t.name for t in rule.targets if t.name != alias] for alias, rule in exact.items()}
    reported: set[frozenset[str]] = set()
    for start in graph:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, []):
                if nxt == start:
                    cycle = frozenset(trail)
                    if cycle not in reported:
                        reported.add(cycle)
                        add(
                            exact[start],
                            "rewrite loop: "
                            + " -> ".join([*trail, start])
                            + "; an alias must not be a target of "
                            "its own targets",
                            "error",
                        )
                elif nxt not in trail and nxt in graph:
                    stack.append((nxt, [*trail, nxt]))
    for alias, rule in exact.items():
        for t in rule.targets:
            if t.name != alias and t.name in exact and not any(t.name in c and alias in c for c in reported):
                add(
                    rule,
                    f"target {t.name!r} is itself an alias; rewrites are applied once, so requests this rule "
                    f"sends to {t.name!r} are not rewritten again",
                    "warning",
                )
