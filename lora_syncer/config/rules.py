"""The rules file: `InferenceModelRewrite` and `InferenceModel` documents, parsed and validated (pure).

One file (the `rules.yaml` key of a ConfigMap) holds any number of YAML documents, or a
`kind: List` as `kubectl get -o yaml` prints it, of either kind:

```yaml
kind: InferenceModelRewrite            # inference.networking.x-k8s.io/v1alpha2
metadata: {name: small-segment-lora-rewrite}
spec:
  poolRef: {group: inference.networking.k8s.io, name: vllm-qwen3-32b}
  rules:
  - matches: [{model: {type: Exact, value: small-segment-lora}}]   # none = every model
    targets:
    - {modelRewrite: small-segment-lora-v1, weight: 90}
    - {modelRewrite: small-segment-lora-v2, weight: 10}
---
kind: InferenceModel                   # inference.networking.x-k8s.io/v1alpha2
metadata: {name: food-review}
spec:
  modelName: food-review
  poolRef: {name: vllm-llama3-8b-instruct}
  targetModels: [{name: food-review-1, weight: 90}, {name: food-review-2, weight: 10}]
```

Semantics (those of the Gateway API Inference Extension): weights are relative, either every
target of a rule has one or none has (then shares are equal), a weight of 0 drains a target.
For one model name, an Exact match beats a catch-all rule; among equals the oldest
`metadata.creationTimestamp` wins (documents without one count as newest), then the earlier
document, then the earlier rule. A request is rewritten once: targets are never rewritten again,
so two aliases pointing at each other (a loop) are an error.

Unknown keys under `spec` are errors (a misspelt `weight` would silently change a split);
unknown top-level and `metadata` keys are ignored, as kubectl output carries many.

The file may also hold one Gateway API `HTTPRoute` whose rule's `backendRefs` split traffic
between pools (`{name, weight, port?, namespace?}`, `kind: InferencePool` or `Service`); the
standalone proxy routes by it (see `lora_syncer.proxy.pools`), a sidecar ignores it. A rule
whose `poolRef` names a pool applies only to that pool; a rule without `poolRef` applies to
every pool, and for one pool a rule naming it beats one that names none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from lora_syncer.config.errors import ConfigError, Issue, join_path, with_file
from lora_syncer.config.yamldoc import Document, YamlSyntaxError, decode_text, load_documents

Path = tuple[str | int, ...]

REWRITE_KIND = "InferenceModelRewrite"
MODEL_KIND = "InferenceModel"
ROUTE_KIND = "HTTPRoute"
RULE_KINDS = frozenset({REWRITE_KIND, MODEL_KIND})
DOCUMENT_KINDS = RULE_KINDS | {ROUTE_KIND}
LIST_KINDS = frozenset({"List", "InferenceModelRewriteList", "InferenceModelList", "HTTPRouteList"})
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


def _kind_of(data: dict[Any, Any]) -> str | None:
    """The document's `kind` when it is a string (anything else is no kind we know)."""
    kind = data.get("kind")
    return kind if isinstance(kind, str) else None


def is_rules_document(data: Any) -> bool:
    """Whether a parsed YAML document is (or is a List of) InferenceModelRewrite / InferenceModel / HTTPRoute."""
    if not isinstance(data, dict):
        return False
    kind = _kind_of(data)
    if kind in DOCUMENT_KINDS:
        return True
    if kind in ("InferenceModelRewriteList", "InferenceModelList", "HTTPRouteList"):
        return True
    if kind == "List":
        items = data.get("items")
        return isinstance(items, list) and any(
            isinstance(i, dict) and _kind_of(i) in DOCUMENT_KINDS for i in items
        )
    return False


# --- the document schema (pydantic), kept private: callers get the frozen dataclasses ---


class _Spec(BaseModel):
    # Inside `spec` an unknown key is an error: a misspelt `weight` must not silently change a split.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _PoolRef(_Spec):
    group: StrictStr | None = None
    kind: StrictStr | None = None
    name: StrictStr = Field(min_length=1)


class _ModelMatch(_Spec):
    type: Literal["Exact"] = "Exact"
    value: StrictStr = Field(min_length=1)


class _Match(_Spec):
    model: _ModelMatch


class _RewriteTarget(_Spec):
    modelRewrite: StrictStr = Field(min_length=1)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)


class _RewriteRule(_Spec):
    matches: list[_Match] | None = None
    targets: list[_RewriteTarget] | None = None


class _RewriteSpec(_Spec):
    poolRef: _PoolRef | None = None
    rules: list[_RewriteRule]


class _ModelTarget(_Spec):
    name: StrictStr = Field(min_length=1)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)


class _ModelSpec(_Spec):
    modelName: StrictStr = Field(min_length=1)
    criticality: Literal["Critical", "Standard", "Sheddable"] | None = None
    poolRef: _PoolRef | None = None
    targetModels: list[_ModelTarget] | None = None


class _BackendRef(_Spec):
    group: StrictStr | None = None
    kind: StrictStr | None = None
    name: StrictStr = Field(min_length=1)
    namespace: StrictStr | None = None
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    filters: list[Any] | None = None


class _RouteRule(_Spec):
    # Gateway API fields the proxy does not evaluate are accepted so a real HTTPRoute reads as is.
    name: StrictStr | None = None
    matches: list[Any] | None = None
    filters: list[Any] | None = None
    backendRefs: list[_BackendRef] | None = None
    timeouts: Any = None
    retry: Any = None
    sessionPersistence: Any = None


class _RouteSpec(_Spec):
    parentRefs: list[Any] | None = None
    hostnames: list[Any] | None = None
    rules: list[_RouteRule] | None = None


_HINTS: dict[str, str] = {
    "string_type": "must be a string (quote it if it looks like a number)",
    "int_type": "must be a whole number",
    "missing": "is required",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "extra_forbidden": "unknown key (check the spelling)",
}


def _message(err: Any) -> str:
    kind = str(err.get("type", ""))
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"is out of range: weights are whole numbers from 0 to {MAX_WEIGHT}"
    if kind == "literal_error":
        return str(err.get("msg", "is invalid"))
    return _HINTS.get(kind) or str(err.get("msg", "is invalid"))


class _Collector:
    """Issues of one file, each located by document path and line."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(
        self, doc: Document, path: Path, message: str, severity: Literal["error", "warning"] = "error"
    ) -> None:
        self.issues.append(
            Issue(path=join_path(path), message=message, line=doc.line_of(path), severity=severity)
        )

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        parsed = datetime.fromisoformat(value.strip())
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError("not a timestamp")


@dataclass
class _Item:
    """One resource to read: a document, or one item of a List document."""

    doc: Document
    base: Path
    data: Any
    index: int


def _items(docs: list[Document], out: _Collector) -> list[_Item]:
    items: list[_Item] = []
    for doc in docs:
        data = doc.data
        if data is None:
            continue  # an empty document, e.g. a trailing `---`
        if isinstance(data, dict) and _kind_of(data) in LIST_KINDS:
            raw_items = data.get("items")
            if raw_items is None:
                raw_items = []
            if not isinstance(raw_items, list):
                out.add(doc, ("items",), "must be a list")
                continue
            for i, item in enumerate(raw_items):
                items.append(_Item(doc, ("items", i), item, len(items)))
            continue
        items.append(_Item(doc, (), data, len(items)))
    return items


def _check_kind(item: _Item, out: _Collector) -> str | None:
    data = item.data
    if not isinstance(data, dict):
        out.add(item.doc, item.base, "must be a mapping with apiVersion, kind, metadata and spec")
        return None
    kind = _kind_of(data)
    if kind == ROUTE_KIND:
        api = data.get("apiVersion")
        if isinstance(api, str) and api and api.split("/")[0] != GATEWAY_GROUP:
            out.add(
                item.doc,
                (*item.base, "apiVersion"),
                f"unexpected API group in {api!r} (expected {GATEWAY_GROUP}); read anyway",
                "warning",
            )
        return ROUTE_KIND
    if kind in RULE_KINDS:
        api = data.get("apiVersion")
        if isinstance(api, str) and api and api.split("/")[0] not in KNOWN_GROUPS:
            out.add(
                item.doc,
                (*item.base, "apiVersion"),
                f"unexpected API group in {api!r} (expected {' or '.join(KNOWN_GROUPS)}); read anyway",
                "warning",
            )
        return str(kind)
    if "vLLMLoRAConfig" in data:
        message = "this is an adapters file (vLLMLoRAConfig); the rules file holds InferenceModelRewrite / InferenceModel documents"
    elif kind is None:
        message = f"missing `kind`: expected {REWRITE_KIND}, {MODEL_KIND} or {ROUTE_KIND}"
    else:
        message = (
            f"kind {kind!r} is not a rules document: expected {REWRITE_KIND}, {MODEL_KIND} or {ROUTE_KIND}"
        )
    out.add(item.doc, (*item.base, "kind") if kind is not None else item.base, message)
    return None


def _validate(model: type[BaseModel], value: Any, item: _Item, out: _Collector) -> BaseModel | None:
    base = (*item.base, "spec")
    if value is None:
        out.add(item.doc, base, "is required")
        return None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            out.add(item.doc, (*base, *loc), _message(err))
        return None


def _targets(
    raw: list[tuple[str, int | None]], item: _Item, path: Path, key: str, name_key: str, out: _Collector
) -> tuple[tuple[Target, ...], bool] | None:
    weights = [w for _, w in raw]
    weighted = any(w is not None for w in weights)
    ok = True
    if weighted and any(w is None for w in weights):
        missing = [i for i, w in enumerate(weights) if w is None]
        out.add(
            item.doc,
            (*path, key, missing[0]),
            "if one target has a weight every target must have one (targets without: "
            + ", ".join(f"{key}[{i}]" for i in missing)
            + ")",
        )
        ok = False
    seen: dict[str, int] = {}
    for i, (name, _) in enumerate(raw):
        if name in seen:
            out.add(
                item.doc,
                (*path, key, i, name_key),
                f"target {name!r} is listed twice (first at {key}[{seen[name]}]); list each target once",
            )
            ok = False
        else:
            seen[name] = i
    if not ok:
        return None
    targets = tuple(Target(name, w if w is not None else 1) for name, w in raw)
    return targets, weighted


def _metadata(item: _Item, out: _Collector) -> tuple[str, str | None, datetime | None]:
    data = item.data
    meta = data.get("metadata")
    fallback = f"document-{item.index + 1}"
    if meta is None:
        return fallback, None, None
    if not isinstance(meta, dict):
        out.add(item.doc, (*item.base, "metadata"), "must be a mapping")
        return fallback, None, None
    name = meta.get("name")
    namespace = meta.get("namespace")
    created: datetime | None = None
    if meta.get("creationTimestamp") is not None:
        try:
            created = _timestamp(meta["creationTimestamp"])
        except ValueError:
            out.add(
                item.doc,
                (*item.base, "metadata", "creationTimestamp"),
                "must be a timestamp such as 2025-12-03T18:22:38Z",
            )
    return (
        str(name) if isinstance(name, str) and name else fallback,
        namespace if isinstance(namespace, str) else None,
        created,
    )


def _check_pool(pool: _PoolRef | None, pool_name: str | None, item: _Item, out: _Collector) -> str | None:
    if pool is None:
        return None
    if pool_name is not None and pool.name != pool_name:
        out.add(
            item.doc,
            (*item.base, "spec", "poolRef", "name"),
            f"poolRef names pool {pool.name!r} but this proxy serves pool {pool_name!r} (--pool-name); "
            "fix the poolRef or the flag",
        )
    return pool.name


def _rules_of_item(
    item: _Item, kind: str, pool_name: str | None, out: _Collector
) -> tuple[list[Rule], SourceDocument]:
    name, namespace, created = _metadata(item, out)
    spec_path: Path = (*item.base, "spec")
    rules: list[Rule] = []
    pool: str | None = None
    if kind == REWRITE_KIND:
        spec = _validate(_RewriteSpec, item.data.get("spec"), item, out)
        if isinstance(spec, _RewriteSpec):
            pool = _check_pool(spec.poolRef, pool_name, item, out)
            if not spec.rules:
                out.add(item.doc, (*spec_path, "rules"), "has no rules: list at least one", "warning")
            for ri, raw_rule in enumerate(spec.rules):
                rule_path = (*spec_path, "rules", ri)
                if not raw_rule.targets:
                    out.add(
                        item.doc,
                        (*rule_path, "targets"),
                        "a rule needs at least one target (modelRewrite)",
                    )
                    continue
                picked = _targets(
                    [(t.modelRewrite, t.weight) for t in raw_rule.targets],
                    item,
                    rule_path,
                    "targets",
                    "modelRewrite",
                    out,
                )
                if picked is None:
                    continue
                matches = tuple(dict.fromkeys(m.model.value for m in raw_rule.matches or []))
                rules.append(
                    Rule(
                        id=f"{REWRITE_KIND}/{name}#{ri}",
                        kind=kind,
                        document=name,
                        doc_index=item.index,
                        rule_index=ri,
                        matches=matches,
                        targets=picked[0],
                        weighted=picked[1],
                        created=created,
                        line=item.doc.line_of(rule_path),
                        pool=pool,
                    )
                )
    else:
        mspec = _validate(_ModelSpec, item.data.get("spec"), item, out)
        if isinstance(mspec, _ModelSpec):
            pool = _check_pool(mspec.poolRef, pool_name, item, out)
            if mspec.targetModels is not None and not mspec.targetModels:
                out.add(
                    item.doc,
                    (*spec_path, "targetModels"),
                    "is empty: list the targets, or remove targetModels to serve modelName as it is",
                )
            else:
                # No targetModels: the API serves modelName itself (it only reserves the name).
                raw_targets = [(t.name, t.weight) for t in mspec.targetModels or []] or [
                    (mspec.modelName, None)
                ]
                picked = _targets(raw_targets, item, spec_path, "targetModels", "name", out)
                if picked is not None:
                    rules.append(
                        Rule(
                            id=f"{MODEL_KIND}/{name}",
                            kind=kind,
                            document=name,
                            doc_index=item.index,
                            rule_index=0,
                            matches=(mspec.modelName,),
                            targets=picked[0],
                            weighted=picked[1],
                            created=created,
                            line=item.doc.line_of(spec_path),
                            pool=pool,
                        )
                    )
    api = item.data.get("apiVersion")
    source = SourceDocument(
        kind=kind,
        name=name,
        index=item.index,
        line=item.doc.line_of(item.base) if item.base else item.doc.start_line,
        api_version=api if isinstance(api, str) else None,
        namespace=namespace,
        created=created,
        pool=pool,
        rules=len(rules),
    )
    return rules, source


def _backend(ref: _BackendRef, item: _Item, path: Path, out: _Collector) -> Backend | None:
    group = ref.group if ref.group is not None else ""
    kind = ref.kind if ref.kind is not None else "Service"  # the Gateway API defaults
    if kind == POOL_KIND and group in KNOWN_GROUPS:
        pass
    elif kind == "Service" and group == "":
        if ref.port is None:
            out.add(item.doc, (*path, "port"), "a Service backend needs a port (as in the Gateway API)")
            return None
    else:
        out.add(
            item.doc,
            (*path, "kind"),
            f"backend {group + '/' if group else ''}{kind} is not supported: use kind InferencePool "
            f"(group {KNOWN_GROUPS[1]}) or kind Service",
        )
        return None
    if ref.filters:
        out.add(item.doc, (*path, "filters"), "backend filters are not applied by the proxy", "warning")
    return Backend(
        name=ref.name,
        weight=ref.weight if ref.weight is not None else 1,  # the Gateway API default
        kind=kind,
        group=group,
        port=ref.port,
        namespace=ref.namespace,
    )


def _route_of_item(item: _Item, out: _Collector) -> tuple[PoolRoute | None, Path | None, SourceDocument]:
    """The backends of an HTTPRoute document (at most one of its rules may have backendRefs)."""
    name, namespace, created = _metadata(item, out)
    spec_path: Path = (*item.base, "spec")
    route: PoolRoute | None = None
    where: Path | None = None
    spec = _validate(_RouteSpec, item.data.get("spec"), item, out)
    count = 0
    if isinstance(spec, _RouteSpec):
        for ri, rule in enumerate(spec.rules or []):
            rule_path = (*spec_path, "rules", ri)
            if not rule.backendRefs:
                out.add(
                    item.doc, rule_path, "has no backendRefs: the proxy does not use this rule", "warning"
                )
                continue
            if route is not None:
                out.add(
                    item.doc,
                    (*rule_path, "backendRefs"),
                    "only one HTTPRoute rule may have backendRefs: the proxy splits every request by one "
                    "set of weights (merge the rules)",
                )
                continue
            if rule.matches and any(not _matches_everything(m) for m in rule.matches):
                out.add(
                    item.doc,
                    (*rule_path, "matches"),
                    "matches are not evaluated by the proxy: every request is split by this rule's weights",
                    "warning",
                )
            if rule.filters:
                out.add(item.doc, (*rule_path, "filters"), "filters are not applied by the proxy", "warning")
            backends: list[Backend] = []
            seen: dict[str, int] = {}
            for bi, ref in enumerate(rule.backendRefs):
                bpath = (*rule_path, "backendRefs", bi)
                if ref.name in seen:
                    out.add(
                        item.doc,
                        (*bpath, "name"),
                        f"backend {ref.name!r} is listed twice (first at backendRefs[{seen[ref.name]}]); "
                        "list each pool once",
                    )
                    continue
                seen[ref.name] = bi
                backend = _backend(ref, item, bpath, out)
                if backend is not None:
                    backends.append(backend)
            if backends and all(b.weight == 0 for b in backends):
                out.add(
                    item.doc,
                    (*rule_path, "backendRefs"),
                    "every backend has weight 0: requests get 503",
                    "warning",
                )
            route = PoolRoute(
                document=name,
                backends=tuple(backends),
                namespace=namespace,
                line=item.doc.line_of(rule_path),
            )
            where = (*rule_path, "backendRefs")
            count = len(backends)
        if route is None:
            out.add(
                item.doc, (*spec_path, "rules"), "no rule has backendRefs: name the pools to split between"
            )
    api = item.data.get("apiVersion")
    source = SourceDocument(
        kind=ROUTE_KIND,
        name=name,
        index=item.index,
        line=item.doc.line_of(item.base) if item.base else item.doc.start_line,
        api_version=api if isinstance(api, str) else None,
        namespace=namespace,
        created=created,
        rules=count,
    )
    return route, where, source


def _matches_everything(match: Any) -> bool:
    """An HTTPRoute match that every request meets: `{}` or path prefix `/`."""
    if not isinstance(match, dict):
        return False
    if set(match) - {"path"}:
        return False
    path = match.get("path")
    if path is None:
        return True
    return (
        isinstance(path, dict)
        and path.get("type", "PathPrefix") == "PathPrefix"
        and path.get("value", "/") == "/"
    )


def _cross_checks(rules: list[Rule], locate: dict[str, tuple[Document, Path]], out: _Collector) -> None:
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

        _cross_checks_view(view, pool, add)


def _cross_checks_view(
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


def rules_from_documents(docs: list[Document], *, pool_name: str | None = None) -> RuleSet:
    """Validate parsed YAML documents. Raises ConfigError (file unset) with every issue found."""
    out = _Collector()
    for doc in docs:
        out.issues.extend(doc.warnings)
    rules: list[Rule] = []
    sources: list[SourceDocument] = []
    locate: dict[str, tuple[Document, Path]] = {}
    ids: dict[str, Path] = {}
    route: PoolRoute | None = None
    for item in _items(docs, out):
        kind = _check_kind(item, out)
        if kind is None:
            continue
        if kind == ROUTE_KIND:
            found_route, where, route_source = _route_of_item(item, out)
            if found_route is not None and route is not None:
                out.add(
                    item.doc,
                    where or item.base,
                    f"a second HTTPRoute with backendRefs (the first is {route.document!r}); "
                    "a rules file holds one pool split",
                )
            elif found_route is not None:
                route = found_route
            sources.append(route_source)
            continue
        found, source = _rules_of_item(item, kind, pool_name, out)
        for rule in found:
            path: Path = (
                (*item.base, "spec", "rules", rule.rule_index)
                if kind == REWRITE_KIND
                else (*item.base, "spec")
            )
            if rule.id in ids:
                out.add(
                    item.doc,
                    (*item.base, "metadata", "name"),
                    f"two {kind} documents are named {source.name!r}; names must be unique",
                )
                continue
            ids[rule.id] = path
            locate[rule.id] = (item.doc, path)
            rules.append(rule)
        sources.append(source)
    if not out.has_errors:
        _cross_checks(rules, locate, out)
    if out.has_errors:
        raise ConfigError(None, out.issues)
    if not rules and route is None and not out.issues:
        out.issues.append(
            Issue(path="", message="no rules: requests pass through unchanged", line=1, severity="warning")
        )
    return RuleSet(rules=tuple(rules), documents=tuple(sources), warnings=tuple(out.issues), route=route)


def parse_rules_text(text: str, filename: str | None = None, *, pool_name: str | None = None) -> RuleSet:
    """Parse the text of a rules file. Raises ConfigError naming `filename`."""
    try:
        docs = load_documents(text)
    except YamlSyntaxError as exc:
        raise ConfigError(
            filename, [Issue(path="", message=exc.message, line=exc.line, file=filename)]
        ) from None
    try:
        ruleset = rules_from_documents(docs, pool_name=pool_name)
    except ConfigError as exc:
        raise ConfigError(filename, with_file(exc.issues, filename)) from None
    return RuleSet(
        rules=ruleset.rules,
        documents=ruleset.documents,
        warnings=tuple(with_file(ruleset.warnings, filename)),
        route=ruleset.route,
    )


def parse_rules(raw: bytes, filename: str, *, pool_name: str | None = None) -> RuleSet:
    """Parse the bytes of a rules file (the `WatchedFile` parser; `lora-syncer check` calls it too)."""
    try:
        text = decode_text(raw)
    except UnicodeDecodeError:
        raise ConfigError(
            filename, [Issue(path="", message="file is not UTF-8 text (binary content?)", file=filename)]
        ) from None
    return parse_rules_text(text, filename, pool_name=pool_name)
