"""Find the user's files inside whatever a command is given (pure).

A file may be an adapters file, a rules file, or a Kubernetes manifest (a ConfigMap, or a
`kind: List` of them as `kubectl get -o yaml` prints) that carries those files under `data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lora_syncer.config.adapters import (
    ROOT_KEY,
    AdaptersConfig,
    adapters_from_documents,
    parse_adapters_text,
)
from lora_syncer.config.errors import ConfigError, Issue
from lora_syncer.config.parsing import decode, load_text
from lora_syncer.config.yamldoc import Document, YamlSyntaxError, decode_text, load_documents

# The rules parser (and pydantic with it) is imported only when a rules file is looked for:
# `lora-syncer run` without --rules reads the adapters file alone.
if TYPE_CHECKING:
    from lora_syncer.config.rules import RuleSet

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
    from lora_syncer.config.rules import is_rules_document

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


def _kind_of(text: str) -> FileKind:
    try:
        docs = [d for d in load_documents(text) if d.data is not None]
    except YamlSyntaxError:
        return "unknown"
    return classify(docs[0].data) if docs else "unknown"


def entry_of_kind(raw: bytes, name: str, kind: FileKind) -> tuple[str, str] | None:
    """`(text, name)` of the `kind` entry when `raw` is a ConfigMap manifest; None for a plain file.

    The one input story: every command that reads an adapters or rules file also takes the
    ConfigMap manifest carrying it (`kubectl apply -f` input) and picks the entry by content,
    whatever its key. A manifest without such an entry is a ConfigError naming its keys.
    """
    try:
        docs = load_documents(decode_text(raw))
    except (YamlSyntaxError, UnicodeDecodeError):
        return None  # not a manifest we can read: the plain parser reports the problem
    return _entry_in(docs, name, kind)


def _entry_in(documents: list[Document], name: str, kind: FileKind) -> tuple[str, str] | None:
    entries = configmaps_in([d for d in documents if d.data is not None])
    if entries is None:
        return None
    for entry in entries:
        if _kind_of(entry.text) == kind:
            return entry.text, f"{name}[{entry.configmap}/{entry.key}]"
    keys = ", ".join(f"{e.configmap}/{e.key}" for e in entries) or "none"
    what = "an adapters file (vLLMLoRAConfig)" if kind == "adapters" else "a rules file"
    raise ConfigError(
        name,
        [Issue("", f"this ConfigMap manifest carries no {what} under data (entries: {keys})")],
    )


def parse_adapters_or_manifest(raw: bytes, name: str) -> AdaptersConfig:
    """An adapters file, or the one carried by a ConfigMap manifest.

    The file is decoded and its YAML loaded once: a plain adapters file of 10,000 entries is
    not parsed twice (once to see it is no manifest) on every change.
    """
    documents = load_text(decode(raw, name), name)
    found = _entry_in(documents, name, "adapters")
    return adapters_from_documents(documents, name) if found is None else parse_adapters_text(*found)


def parse_rules_or_manifest(raw: bytes, name: str, *, pool_name: str | None = None) -> RuleSet:
    """A rules file, or the one carried by a ConfigMap manifest."""
    from lora_syncer.config.rules import parse_rules, parse_rules_text

    found = entry_of_kind(raw, name, "rules")
    if found is None:
        return parse_rules(raw, name, pool_name=pool_name)
    return parse_rules_text(found[0], found[1], pool_name=pool_name)
