"""Read a rules file: split it into resources, hand each to its kind's parser, assemble a RuleSet (pure)."""

from __future__ import annotations

from typing import Any

from lora_syncer.config.adapters import ROOT_KEY
from lora_syncer.config.errors import ConfigError, Issue, with_file
from lora_syncer.config.parsing import Collector, decode, in_file, load_text
from lora_syncer.config.rules.consistency import check_consistency
from lora_syncer.config.rules.document import Context, Item, kind_of
from lora_syncer.config.rules.kinds import DOCUMENT_KINDS, KINDS, LIST_KINDS, Kind, expected_kinds
from lora_syncer.config.rules.model import PoolRoute, Rule, RuleSet, SourceDocument, resolve_precedence
from lora_syncer.config.yamldoc import Document, Path
from lora_syncer.rollout.schedule import Phase, RolloutPosition
from lora_syncer.rollout.spec import RolloutSpec
from lora_syncer.rollout.weights import overrides


def is_rules_document(data: Any) -> bool:
    """Whether a parsed YAML document is (or is a List of) a rules file's kinds (InferenceModelRewrite, …)."""
    if not isinstance(data, dict):
        return False
    kind = kind_of(data)
    if kind in DOCUMENT_KINDS or (kind in LIST_KINDS and kind != "List"):
        return True
    if kind == "List":
        items = data.get("items")
        return isinstance(items, list) and any(
            isinstance(i, dict) and kind_of(i) in DOCUMENT_KINDS for i in items
        )
    return False


def _items(docs: list[Document], out: Collector) -> list[Item]:
    items: list[Item] = []
    for doc in docs:
        data = doc.data
        if data is None:
            continue  # an empty document, e.g. a trailing `---`
        if isinstance(data, dict) and kind_of(data) in LIST_KINDS:
            raw_items = data.get("items")
            if raw_items is None:
                raw_items = []
            if not isinstance(raw_items, list):
                out.add(doc, ("items",), "must be a list")
                continue
            for i, item in enumerate(raw_items):
                items.append(Item(doc, ("items", i), item, len(items)))
            continue
        items.append(Item(doc, (), data, len(items)))
    return items


def _kind(item: Item, out: Collector) -> Kind | None:
    """The registered kind of `item`, or None after saying what it is instead."""
    data = item.data
    if not isinstance(data, dict):
        out.add(item.doc, item.base, "must be a mapping with apiVersion, kind, metadata and spec")
        return None
    name = kind_of(data)
    kind = KINDS.get(name) if name is not None else None
    if kind is not None:
        api = data.get("apiVersion")
        if isinstance(api, str) and api and api.split("/")[0] not in kind.groups:
            out.add(
                item.doc,
                (*item.base, "apiVersion"),
                f"unexpected API group in {api!r} (expected {' or '.join(kind.groups)}); read anyway",
                "warning",
            )
        return kind
    if ROOT_KEY in data:
        message = "this is an adapters file (vLLMLoRAConfig); the rules file holds InferenceModelRewrite / InferenceModel documents"
    elif name is None:
        message = f"missing `kind`: expected {expected_kinds()}"
    else:
        message = f"kind {name!r} is not a rules document: expected {expected_kinds()}"
    out.add(item.doc, (*item.base, "kind") if name is not None else item.base, message)
    return None


def rules_from_documents(docs: list[Document], *, pool_name: str | None = None) -> RuleSet:
    """Validate parsed YAML documents. Raises ConfigError (file unset) with every issue found."""
    out = Collector()
    for doc in docs:
        out.issues.extend(doc.warnings)
    ctx = Context(out, pool_name)
    rules: list[Rule] = []
    sources: list[SourceDocument] = []
    locate: dict[str, tuple[Document, Path]] = {}
    route: PoolRoute | None = None
    rollouts: list[RolloutSpec] = []
    for item in _items(docs, out):
        kind = _kind(item, out)
        if kind is None:
            continue
        parsed = kind.parse(item, ctx)
        if parsed.route is not None:
            found, where = parsed.route
            if route is not None:
                out.add(
                    item.doc,
                    where,
                    f"a second HTTPRoute with backendRefs (the first is {route.document!r}); "
                    "a rules file holds one pool split",
                )
            else:
                route = found
        if parsed.rollout is not None:
            if any(r.name == parsed.rollout.name for r in rollouts):
                out.add(
                    item.doc,
                    (*item.base, "metadata", "name"),
                    f"two AdapterRollout documents are named {parsed.rollout.name!r}; names must be unique",
                )
            else:
                rollouts.append(parsed.rollout)
        for rule, path in parsed.rules:
            if rule.id in locate:
                out.add(
                    item.doc,
                    (*item.base, "metadata", "name"),
                    f"two {kind.name} documents are named {parsed.source.name!r}; names must be unique",
                )
                continue
            locate[rule.id] = (item.doc, path)
            rules.append(rule)
        sources.append(parsed.source)
    if not out.has_errors:
        check_consistency(rules, locate, out)
        out.issues.extend(rollout_conflicts(rollouts, rules))
    if out.has_errors:
        raise ConfigError(None, out.issues)
    if not rules and route is None and not rollouts and not out.issues:
        out.issues.append(
            Issue(path="", message="no rules: requests pass through unchanged", line=1, severity="warning")
        )
    return RuleSet(
        rules=tuple(rules),
        documents=tuple(sources),
        warnings=tuple(out.issues),
        route=route,
        rollouts=tuple(rollouts),
    )


def alias_owners(rules: list[Rule] | tuple[Rule, ...]) -> dict[str, str]:
    """Each Exact name of the rules -> the id of the rule in force for it (every pool counted)."""
    exact, _, _ = resolve_precedence(rules)
    return {name: rule.id for name, rule in exact.items()}


def rollout_conflicts(rollouts: list[RolloutSpec], rules: list[Rule]) -> list[Issue]:
    """Warnings naming both documents when a rollout and a rule own the same model (the rollout wins)."""
    if not rollouts:
        return []
    # The position does not matter for the warnings: only who owns which name.
    idle = RolloutPosition(Phase.PROGRESSING, 0, 0, 0, "", 0.0)
    _, issues = overrides([(spec, idle) for spec in rollouts], alias_owners(rules))
    exact, _, _ = resolve_precedence(rules)
    for spec in rollouts:
        rule = exact.get(spec.model)
        if rule is None:
            continue
        total = sum(t.weight for t in rule.targets)
        share = sum(t.weight for t in rule.targets if t.name == spec.canary) / total if total else 0.0
        if share < 1.0:
            # The rollout wins while it exists; deleting it after completion hands the name back.
            issues.append(
                Issue(
                    path="spec.model",
                    message=f"removing AdapterRollout/{spec.name} restores {rule.id}, which sends "
                    f"{share:.0%} of {spec.model!r} to the canary {spec.canary!r}: once the rollout has "
                    f"completed, set that rule to 100% {spec.canary} before removing the rollout, or "
                    "traffic moves off the completed canary",
                    line=spec.line,
                    severity="warning",
                )
            )
    return issues


def parse_rules_text(text: str, filename: str | None = None, *, pool_name: str | None = None) -> RuleSet:
    """Parse the text of a rules file. Raises ConfigError naming `filename`."""
    docs = load_text(text, filename)
    ruleset = in_file(filename, lambda: rules_from_documents(docs, pool_name=pool_name))
    return RuleSet(
        rules=ruleset.rules,
        documents=ruleset.documents,
        warnings=tuple(with_file(ruleset.warnings, filename)),
        route=ruleset.route,
        rollouts=ruleset.rollouts,
    )


def parse_rules(raw: bytes, filename: str, *, pool_name: str | None = None) -> RuleSet:
    """Parse the bytes of a rules file (the `WatchedFile` parser; `lora-syncer check` calls it too)."""
    return parse_rules_text(decode(raw, filename), filename, pool_name=pool_name)
