"""One resource of a rules file, and the pieces every kind's parser reads from it (pure).

A kind's parser gets an `Item` (a document, or one item of a List) and returns `Parsed`:
the rules it declares, each with the path its problems are reported at, and/or the pool split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from lora_syncer.config.parsing import Collector, validate_at
from lora_syncer.config.rules.model import MAX_WEIGHT, PoolRoute, Rule, SourceDocument, Target
from lora_syncer.config.yamldoc import Document, Path
from lora_syncer.rollout.spec import RolloutSpec

M = TypeVar("M", bound=BaseModel)
_OUT_OF_RANGE = f"is out of range: weights are whole numbers from 0 to {MAX_WEIGHT}"


class Spec(BaseModel):
    # Inside `spec` an unknown key is an error: a misspelt `weight` must not silently change a split.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PoolRefSpec(Spec):
    group: StrictStr | None = None
    kind: StrictStr | None = None
    name: StrictStr = Field(min_length=1)


@dataclass
class Item:
    """One resource to read: a document, or one item of a List document."""

    doc: Document
    base: Path
    data: Any
    index: int

    @property
    def spec_path(self) -> Path:
        return (*self.base, "spec")


@dataclass(frozen=True)
class Context:
    """What every parser of one file shares: where issues go, and the proxy's --pool-name."""

    out: Collector
    pool_name: str | None = None


@dataclass(frozen=True)
class Parsed:
    """What one resource declares. `rules` pairs each rule with the path it is reported at."""

    source: SourceDocument
    rules: tuple[tuple[Rule, Path], ...] = ()
    route: tuple[PoolRoute, Path] | None = None
    rollout: RolloutSpec | None = None  # an AdapterRollout that validated


@dataclass(frozen=True)
class Metadata:
    name: str
    namespace: str | None
    created: datetime | None


def kind_of(data: dict[Any, Any]) -> str | None:
    """The document's `kind` when it is a string (anything else is no kind we know)."""
    kind = data.get("kind")
    return kind if isinstance(kind, str) else None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        parsed = datetime.fromisoformat(value.strip())
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError("not a timestamp")


def metadata(item: Item, out: Collector) -> Metadata:
    data = item.data
    meta = data.get("metadata")
    fallback = f"document-{item.index + 1}"
    if meta is None:
        return Metadata(fallback, None, None)
    if not isinstance(meta, dict):
        out.add(item.doc, (*item.base, "metadata"), "must be a mapping")
        return Metadata(fallback, None, None)
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
    return Metadata(
        str(name) if isinstance(name, str) and name else fallback,
        namespace if isinstance(namespace, str) else None,
        created,
    )


def source_document(item: Item, kind: str, meta: Metadata, pool: str | None, rules: int) -> SourceDocument:
    api = item.data.get("apiVersion")
    return SourceDocument(
        kind=kind,
        name=meta.name,
        index=item.index,
        line=item.doc.line_of(item.base) if item.base else item.doc.start_line,
        api_version=api if isinstance(api, str) else None,
        namespace=meta.namespace,
        created=meta.created,
        pool=pool,
        rules=rules,
    )


def validate_spec(model: type[M], item: Item, out: Collector) -> M | None:
    """The document's `spec` validated as `model`, or None after reporting why not."""
    value = item.data.get("spec")
    if value is None:
        out.add(item.doc, item.spec_path, "is required")
        return None
    return validate_at(model, value, item.doc, item.spec_path, out, out_of_range=_OUT_OF_RANGE)


def check_pool(pool: PoolRefSpec | None, item: Item, ctx: Context) -> str | None:
    if pool is None:
        return None
    if ctx.pool_name is not None and pool.name != ctx.pool_name:
        ctx.out.add(
            item.doc,
            (*item.spec_path, "poolRef", "name"),
            f"poolRef names pool {pool.name!r} but this proxy serves pool {ctx.pool_name!r} (--pool-name); "
            "fix the poolRef or the flag",
        )
    return pool.name


def targets(
    raw: list[tuple[str, int | None]], item: Item, path: Path, key: str, name_key: str, out: Collector
) -> tuple[tuple[Target, ...], bool] | None:
    """A rule's weighted targets, or None after reporting mixed weights or a target listed twice."""
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
    return tuple(Target(name, w if w is not None else 1) for name, w in raw), weighted


def rule_at(
    item: Item,
    kind: str,
    meta: Metadata,
    rule_id: str,
    index: int,
    matches: tuple[str, ...],
    picked: tuple[tuple[Target, ...], bool],
    path: Path,
    pool: str | None,
) -> tuple[Rule, Path]:
    """A rule read from `item`, paired with the path its problems are reported at."""
    rule = Rule(
        id=rule_id,
        kind=kind,
        document=meta.name,
        doc_index=item.index,
        rule_index=index,
        matches=matches,
        targets=picked[0],
        weighted=picked[1],
        created=meta.created,
        line=item.doc.line_of(path),
        pool=pool,
    )
    return rule, path
