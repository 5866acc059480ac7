"""AdapterRollouts checked against the adapters file (pure): what `lora-syncer check` warns about.

A rollout routes to two adapters the syncer must keep loaded until it is over: removing the
stable (moving it to ensureNotExist) takes away the version an abort falls back to, removing the
canary holds (or aborts) the rollout, and an adapter declared nowhere is never loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from lora_syncer.config.errors import Issue
from lora_syncer.rollout.spec import KIND, RolloutSpec


def adapter_warnings(
    rollouts: Iterable[RolloutSpec], ensure_exist: Iterable[str], ensure_not_exist: Iterable[str]
) -> list[Issue]:
    present, removed = set(ensure_exist), set(ensure_not_exist)
    issues: list[Issue] = []
    for spec in rollouts:
        doc = f"{KIND}/{spec.name}"
        for role, name in (("stable", spec.stable), ("canary", spec.canary)):
            if name in removed:
                why = (
                    "an abort would fall back to an adapter that is gone"
                    if role == "stable"
                    else "the rollout cannot send it traffic and holds, or aborts once it is unloaded"
                )
                message = (
                    f"the adapters file removes {name!r} (ensureNotExist) while {doc} routes to it as its {role}: "
                    f"{why}; remove it only after the rollout completed and its document is gone"
                )
            elif name not in present:
                message = (
                    f"{name!r} ({doc}'s {role}) is not declared in the adapters file's ensureExist: "
                    "the syncer never loads it, so the rollout waits for it"
                )
            else:
                continue
            issues.append(Issue(path=f"spec.{role}", message=message, line=spec.line, severity="warning"))
    return issues
