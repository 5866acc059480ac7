"""Gateway API `HTTPRoute`: how the standalone proxy splits traffic between pools (pure).

Read by `lora_syncer.proxy.pools`; a sidecar ignores it. Fields the proxy does not evaluate
are accepted so a real HTTPRoute reads as is, with a warning where that changes the meaning.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictInt, StrictStr

from lora_syncer.config.parsing import Collector
from lora_syncer.config.rules.document import (
    Context,
    Item,
    Parsed,
    Spec,
    metadata,
    source_document,
    validate_spec,
)
from lora_syncer.config.rules.model import KNOWN_GROUPS, MAX_WEIGHT, POOL_KIND, Backend, PoolRoute
from lora_syncer.config.yamldoc import Path

KIND = "HTTPRoute"


class _BackendRef(Spec):
    group: StrictStr | None = None
    kind: StrictStr | None = None
    name: StrictStr = Field(min_length=1)
    namespace: StrictStr | None = None
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    filters: list[Any] | None = None


class _RouteRule(Spec):
    name: StrictStr | None = None
    matches: list[Any] | None = None
    filters: list[Any] | None = None
    backendRefs: list[_BackendRef] | None = None
    timeouts: Any = None
    retry: Any = None
    sessionPersistence: Any = None


class _RouteSpec(Spec):
    parentRefs: list[Any] | None = None
    hostnames: list[Any] | None = None
    rules: list[_RouteRule] | None = None


def _backend(ref: _BackendRef, item: Item, path: Path, out: Collector) -> Backend | None:
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


def _backends(rule: _RouteRule, item: Item, rule_path: Path, out: Collector) -> list[Backend]:
    backends: list[Backend] = []
    seen: dict[str, int] = {}
    for bi, ref in enumerate(rule.backendRefs or []):
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
            item.doc, (*rule_path, "backendRefs"), "every backend has weight 0: requests get 503", "warning"
        )
    return backends


def parse(item: Item, ctx: Context) -> Parsed:
    """The backends of an HTTPRoute document (at most one of its rules may have backendRefs)."""
    out = ctx.out
    meta = metadata(item, out)
    spec_path = item.spec_path
    found: tuple[PoolRoute, Path] | None = None
    spec = validate_spec(_RouteSpec, item, out)
    if spec is not None:
        for ri, rule in enumerate(spec.rules or []):
            rule_path = (*spec_path, "rules", ri)
            if not rule.backendRefs:
                out.add(
                    item.doc, rule_path, "has no backendRefs: the proxy does not use this rule", "warning"
                )
                continue
            if found is not None:
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
            route = PoolRoute(
                document=meta.name,
                backends=tuple(_backends(rule, item, rule_path, out)),
                namespace=meta.namespace,
                line=item.doc.line_of(rule_path),
            )
            found = (route, (*rule_path, "backendRefs"))
        if found is None:
            out.add(
                item.doc, (*spec_path, "rules"), "no rule has backendRefs: name the pools to split between"
            )
    count = len(found[0].backends) if found is not None else 0
    return Parsed(source_document(item, KIND, meta, None, count), route=found)


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
