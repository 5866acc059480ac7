"""`InferenceModelRewrite` (inference.networking.x-k8s.io/v1alpha2): weighted rewrite rules (pure)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt, StrictStr

from lora_syncer.config.rules.document import (
    Context,
    Item,
    Parsed,
    PoolRefSpec,
    Spec,
    check_pool,
    metadata,
    rule_at,
    source_document,
    targets,
    validate_spec,
)
from lora_syncer.config.rules.model import MAX_WEIGHT, Rule
from lora_syncer.config.yamldoc import Path

KIND = "InferenceModelRewrite"


class _ModelMatch(Spec):
    type: Literal["Exact"] = "Exact"
    value: StrictStr = Field(min_length=1)


class _Match(Spec):
    model: _ModelMatch


class _RewriteTarget(Spec):
    modelRewrite: StrictStr = Field(min_length=1)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)


class _RewriteRule(Spec):
    matches: list[_Match] | None = None
    targets: list[_RewriteTarget] | None = None


class _RewriteSpec(Spec):
    poolRef: PoolRefSpec | None = None
    rules: list[_RewriteRule]


def parse(item: Item, ctx: Context) -> Parsed:
    out = ctx.out
    meta = metadata(item, out)
    spec_path = item.spec_path
    rules: list[tuple[Rule, Path]] = []
    pool: str | None = None
    spec = validate_spec(_RewriteSpec, item, out)
    if spec is not None:
        pool = check_pool(spec.poolRef, item, ctx)
        if not spec.rules:
            out.add(item.doc, (*spec_path, "rules"), "has no rules: list at least one", "warning")
        for ri, raw_rule in enumerate(spec.rules):
            rule_path = (*spec_path, "rules", ri)
            if not raw_rule.targets:
                out.add(item.doc, (*rule_path, "targets"), "a rule needs at least one target (modelRewrite)")
                continue
            picked = targets(
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
            found = rule_at(
                item, KIND, meta, f"{KIND}/{meta.name}#{ri}", ri, matches, picked, rule_path, pool
            )
            rules.append(found)
    return Parsed(source_document(item, KIND, meta, pool, len(rules)), rules=tuple(rules))
