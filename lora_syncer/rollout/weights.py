"""The route table's input from rollouts: weighted targets per model, and who owns each name (pure).

Targets are always `[stable, canary]`, in that order and both present even at weight 0: the
proxy's sticky hashing lays targets out along the weight space in list order, so as the canary's
share grows the boundary only moves toward the stable's side, and a user already on the canary
is never moved back.

Precedence: a rollout owns its `spec.model`'s weights and wins over any InferenceModelRewrite or
InferenceModel rule for that name, whatever its phase (completed: canary 100; aborted: stable
100). Each conflict is a warning naming both documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lora_syncer.config.errors import Issue
from lora_syncer.rollout.schedule import RolloutPosition
from lora_syncer.rollout.spec import KIND, RolloutSpec


@dataclass(frozen=True)
class WeightedTarget:
    name: str
    weight: int


@dataclass(frozen=True)
class RolloutRoute:
    """How requests for `model` are split while the rollout owns it; `mirror` shadows a share to the canary."""

    model: str
    document: str
    targets: tuple[WeightedTarget, WeightedTarget]
    mirror: WeightedTarget | None = None


def document_id(spec: RolloutSpec) -> str:
    return f"{KIND}/{spec.name}"


def route_for(spec: RolloutSpec, position: RolloutPosition) -> RolloutRoute:
    """The split for `spec.model` at `position`: [stable, canary] with weights summing to 100."""
    canary = max(0, min(100, position.canary_weight))
    mirror = WeightedTarget(spec.canary, position.mirror_percent) if position.mirror_percent > 0 else None
    return RolloutRoute(
        model=spec.model,
        document=document_id(spec),
        targets=(WeightedTarget(spec.stable, 100 - canary), WeightedTarget(spec.canary, canary)),
        mirror=mirror,
    )


def _warning(spec: RolloutSpec, path: str, message: str) -> Issue:
    return Issue(path=path, message=message, line=spec.line, severity="warning")


def overrides(
    rollouts: Sequence[tuple[RolloutSpec, RolloutPosition]], aliases: Mapping[str, str]
) -> tuple[dict[str, RolloutRoute], list[Issue]]:
    """The routes rollouts impose, by model name, and the conflicts found.

    `aliases` maps each Exact model name of the rule set to the id of the rule in force for it
    (e.g. `InferenceModelRewrite/small-segment-lora-rewrite#0`). Of two rollouts for one model
    the earlier document wins.
    """
    routes: dict[str, RolloutRoute] = {}
    issues: list[Issue] = []
    for spec, pos in rollouts:
        doc = document_id(spec)
        owner = routes.get(spec.model)
        if owner is not None:
            issues.append(
                _warning(
                    spec,
                    "spec.model",
                    f"{spec.model!r} is also rolled out by {owner.document}, which comes first and owns it; "
                    f"{doc} is not used",
                )
            )
            continue
        rule = aliases.get(spec.model)
        if rule is not None:
            issues.append(
                _warning(
                    spec,
                    "spec.model",
                    f"{spec.model!r} is also matched by {rule}; {doc} owns its weights and that rule is not used for it",
                )
            )
        for key, name in (("spec.stable", spec.stable), ("spec.canary", spec.canary)):
            if name in aliases:
                issues.append(
                    _warning(
                        spec,
                        key,
                        f"{name!r} is itself an alias ({aliases[name]}); rewrites are applied once, so requests "
                        f"{doc} sends to it are not rewritten again",
                    )
                )
        routes[spec.model] = route_for(spec, pos)
    return routes, issues
