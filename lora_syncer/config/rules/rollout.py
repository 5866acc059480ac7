"""`AdapterRollout` (lora-syncer.io/v1alpha1) as a kind of the rules file (pure).

The document itself is parsed by `lora_syncer.rollout.document`; this module hands it an item
of the rules file and collects the result. In the rules file an invalid AdapterRollout is an
error like any other (so `lora-syncer check` fails and the reloaded rules keep the last good
file); the rollout controller reads every AdapterRollout document on its own as well, so one
broken document never stops another's `abort: true` from being honoured.
"""

from __future__ import annotations

from lora_syncer.config.rules.document import Context, Item, Parsed, metadata, source_document
from lora_syncer.rollout.document import parse_adapter_rollout
from lora_syncer.rollout.spec import API_GROUP, KIND

__all__ = ["API_GROUP", "KIND", "parse"]


def parse(item: Item, ctx: Context) -> Parsed:
    meta = metadata(item, ctx.out)
    result = parse_adapter_rollout(item.doc, item.base, item.data, item.index)
    for issue in result.issues:
        if issue.path.endswith("apiVersion"):
            continue  # the dispatcher already warned about the API group
        ctx.out.issues.append(issue)
    return Parsed(source_document(item, KIND, meta, None, 0), rollout=result.spec)
