"""`InferenceModel` (inference.networking.x-k8s.io/v1alpha2): one model name, weighted targets (pure)."""

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

KIND = "InferenceModel"


class _ModelTarget(Spec):
    name: StrictStr = Field(min_length=1)
    weight: StrictInt | None = Field(default=None, ge=0, le=MAX_WEIGHT)


class _ModelSpec(Spec):
    modelName: StrictStr = Field(min_length=1)
    criticality: Literal["Critical", "Standard", "Sheddable"] | None = None
    poolRef: PoolRefSpec | None = None
    targetModels: list[_ModelTarget] | None = None


def parse(item: Item, ctx: Context) -> Parsed:
    out = ctx.out
    meta = metadata(item, out)
    spec_path = item.spec_path
    pool: str | None = None
    found: tuple[tuple[Rule, Path], ...] = ()
    spec = validate_spec(_ModelSpec, item, out)
    if spec is not None:
        pool = check_pool(spec.poolRef, item, ctx)
        if spec.targetModels is not None and not spec.targetModels:
            out.add(
                item.doc,
                (*spec_path, "targetModels"),
                "is empty: list the targets, or remove targetModels to serve modelName as it is",
            )
        else:
            # No targetModels: the API serves modelName itself (it only reserves the name).
            raw = [(t.name, t.weight) for t in spec.targetModels or []] or [(spec.modelName, None)]
            picked = targets(raw, item, spec_path, "targetModels", "name", out)
            if picked is not None:
                found = (
                    rule_at(
                        item, KIND, meta, f"{KIND}/{meta.name}", 0, (spec.modelName,), picked, spec_path, pool
                    ),
                )

    return Parsed(source_document(item, KIND, meta, pool, len(found)), rules=found)
