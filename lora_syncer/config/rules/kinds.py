"""The document kinds a rules file may hold: `kind` -> its parser and expected API groups.

Adding a kind is one module with a `parse(item, ctx) -> Parsed` function and one entry in
`KINDS`; `is_rules_document`, the List kinds and the "expected ..." messages follow from it.
A kind that declares something other than rules or a pool split also adds a field to `Parsed`
and to `RuleSet`, and the line in `parse.rules_from_documents` that collects it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lora_syncer.config.rules import httproute, inference_model, rewrite, rollout
from lora_syncer.config.rules.document import Context, Item, Parsed
from lora_syncer.config.rules.model import GATEWAY_GROUP, KNOWN_GROUPS


@dataclass(frozen=True)
class Kind:
    name: str
    groups: tuple[str, ...]  # an apiVersion in another group is read, with a warning
    parse: Callable[[Item, Context], Parsed]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(rewrite.KIND, KNOWN_GROUPS, rewrite.parse),
        Kind(inference_model.KIND, KNOWN_GROUPS, inference_model.parse),
        Kind(httproute.KIND, (GATEWAY_GROUP,), httproute.parse),
        Kind(rollout.KIND, (rollout.API_GROUP,), rollout.parse),
    )
}

DOCUMENT_KINDS = frozenset(KINDS)
# `kubectl get -o yaml` prints a `List`, or `<Kind>List` for one resource type.
LIST_KINDS = frozenset({"List", *(f"{name}List" for name in KINDS)})


def expected_kinds() -> str:
    """`A, B or C`: the kinds a rules file may hold, for messages."""
    names = list(KINDS)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
