"""Find the user's files inside whatever `lora-syncer check` is given (pure).

A file may be an adapters file, a rules file, or a Kubernetes manifest (a ConfigMap, or a
`kind: List` of them as `kubectl get -o yaml` prints) that carries those files under `data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lora_syncer.config.adapters import ROOT_KEY
from lora_syncer.config.rules import is_rules_document
from lora_syncer.config.yamldoc import Document

FileKind = Literal["adapters", "rules", "unknown"]


@dataclass(frozen=True)
class Embedded:
    """A file carried in a ConfigMap's `data`: its text and the line its first line sits on."""

    configmap: str
    key: str
    text: str
    line_offset: int  # add to a line number inside `text` to get the manifest's line


def classify(data: Any) -> FileKind:
    if isinstance(data, dict) and ROOT_KEY in data:
        return "adapters"
    if is_rules_document(data):
        return "rules"
    return "unknown"


def configmaps_in(docs: list[Document]) -> list[Embedded] | None:
    """The data entries of every ConfigMap in `docs`; None when no document is a ConfigMap."""
    found: list[Embedded] = []
    any_configmap = False
    for doc in docs:
        items: list[tuple[Any, tuple[str | int, ...]]] = []
        data = doc.data
        if isinstance(data, dict) and data.get("kind") == "List":
            items = [(item, ("items", i)) for i, item in enumerate(data.get("items") or [])]
        else:
            items = [(data, ())]
        for obj, prefix in items:
            if not isinstance(obj, dict) or obj.get("kind") != "ConfigMap":
                continue
            any_configmap = True
            name = str((obj.get("metadata") or {}).get("name", "<unnamed>"))
            for key, value in (obj.get("data") or {}).items():
                if isinstance(value, str):
                    # A block scalar's text starts on the line after its key.
                    key_line = doc.line_of((*prefix, "data", key)) or 1
                    found.append(Embedded(name, str(key), value, key_line))
    return found if any_configmap else None
