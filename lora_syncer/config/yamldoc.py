"""YAML documents that remember where each value came from.

PyYAML's composed node tree knows the line of every key and item; the plain data does not.
`load_documents` builds the data and a map from document path to line in one walk, so a
validation error can say `configmap.yaml:14: vLLMLoRAConfig.ensureExist.models[2].source`.
Pure: takes text, returns data.

Two walks give the same documents. The usual file (no anchors, aliases or merge keys) is built
straight from the parser's events: a 10,000-adapter file never exists as a node tree, which
would take ~25 MiB for a moment and leave the sidecar's heap pinned by the few values kept
from it. Anything else (an anchor, an alias, a merge key, a complex key, any error) goes
through the node tree, which is the reference: the event walk only ever answers what it
would.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from lora_syncer.config.errors import Issue, join_path

Path = tuple[str | int, ...]

# libyaml is several times faster on big files; the pure loader behaves the same.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """One YAML document: its data, the line of each path in it, and where it starts."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    start_line: int = 1
    index: int = 0
    warnings: list[Issue] = field(default_factory=list)
    # Fills `lines` on first use: a valid file's 10,000 entries never need their lines mapped.
    deferred_lines: Callable[[], dict[Path, int]] | None = field(default=None, repr=False, compare=False)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        if self.deferred_lines is not None:
            self.lines, self.deferred_lines = self.deferred_lines(), None
        probe = tuple(path)
        while probe:
            line = self.lines.get(probe)
            if line is not None:
                return line
            probe = probe[:-1]
        return self.start_line


class YamlSyntaxError(ValueError):
    """The text is not YAML; `line` and `column` are 1-based where PyYAML knows them."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


# A ConfigMap is shallow and rarely uses aliases; these bounds refuse YAML built to exhaust the
# sidecar (deep nesting, self-referencing aliases, "billion laughs" alias expansion).
MAX_DEPTH = 64
MAX_ALIAS_EXPANSIONS = 10_000


class _Budget:
    __slots__ = ("expansions", "seen")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.expansions = 0


def _duplicate_key(doc: Document, path: Path, line: int) -> None:
    doc.warnings.append(
        Issue(
            path=join_path(path), message="duplicate key: the later value wins", line=line, severity="warning"
        )
    )


def _walk(node: yaml.Node, loader: Any, path: Path, doc: Document, budget: _Budget) -> Any:
    if len(path) > MAX_DEPTH:
        raise YamlSyntaxError(
            f"document nested more than {MAX_DEPTH} levels deep (or an alias refers to itself)",
            node.start_mark.line + 1,
            node.start_mark.column + 1,
        )
    if isinstance(node, yaml.CollectionNode):
        if id(node) in budget.seen:
            budget.expansions += 1
            if budget.expansions > MAX_ALIAS_EXPANSIONS:
                raise YamlSyntaxError(
                    f"more than {MAX_ALIAS_EXPANSIONS} alias expansions: refusing a file built to expand without bound",
                    node.start_mark.line + 1,
                    node.start_mark.column + 1,
                )
        else:
            budget.seen.add(id(node))
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<` merge keys the way PyYAML does
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child = (*path, key if isinstance(key, str | int) else str(key))
            if key in out:
                _duplicate_key(doc, child, key_node.start_mark.line + 1)
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, loader, child, doc, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, loader, (*path, i), doc, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class _Unusual(Exception):
    """The event walk met what only the node walk handles exactly: start over with it."""


_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_STR_TAG = "tag:yaml.org,2002:str"


def _scalar(loader: Any, event: Any, tag: str | None = None) -> Any:
    """The value of a scalar event, resolved and constructed as the node walk would."""
    if tag is None:
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
    value = loader.construct_object(node, deep=True)
    del loader.constructed_objects[node]  # the node is gone after this call: keep no cache of it
    return value


def _from_events(loader: Any, event: Any, path: Path, doc: Document, lines: bool) -> Any:
    """The data of the node starting with `event` (already taken); mirrors `_walk` for plain YAML.

    Without `lines` the map from path to line is not built (`load_documents` defers it).
    """
    if len(path) > MAX_DEPTH or getattr(event, "anchor", None) is not None:
        raise _Unusual
    if lines:
        doc.lines.setdefault(path, event.start_mark.line + 1)
    if isinstance(event, yaml.ScalarEvent):
        return _scalar(loader, event)
    if isinstance(event, yaml.MappingStartEvent):
        out: dict[Any, Any] = {}
        while not isinstance(key_event := loader.get_event(), yaml.MappingEndEvent):
            if not isinstance(key_event, yaml.ScalarEvent) or key_event.anchor is not None:
                raise _Unusual  # an alias, an anchor or a complex key
            key_line: int = key_event.start_mark.line + 1  # type: ignore[union-attr]  # the parser marks every event
            tag = key_event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, key_event.value, key_event.implicit)
            if tag == _MERGE_TAG:
                raise _Unusual
            key = _scalar(loader, key_event, _STR_TAG if tag == _VALUE_TAG else tag)
            if isinstance(key, str):
                key = sys.intern(key)  # `id:` and `source:` 10,000 times are one string each
            elif not isinstance(key, int | float | bool) and key is not None:
                key = str(key)
            child = (*path, key if isinstance(key, str | int) else str(key))
            if key in out:
                _duplicate_key(doc, child, key_line)
            if lines:
                doc.lines[child] = key_line
            out[key] = _from_events(loader, loader.get_event(), child, doc, lines)
        return out
    if isinstance(event, yaml.SequenceStartEvent):
        items: list[Any] = []
        while not isinstance(item := loader.get_event(), yaml.SequenceEndEvent):
            items.append(_from_events(loader, item, (*path, len(items)), doc, lines))
        return items
    raise _Unusual  # an alias


def _documents_from_events(text: str, lines: bool = True) -> list[Document]:
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        loader.get_event()  # stream start
        while not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # document start
            root = loader.get_event()
            doc = Document(data=None, start_line=root.start_mark.line + 1, index=len(docs))
            doc.data = _from_events(loader, root, (), doc, lines)
            loader.get_event()  # document end
            docs.append(doc)
    except _Unusual:
        raise
    except Exception:  # a YAML error, or anything else: the node walk says it as it always has
        raise _Unusual from None
    finally:
        loader.dispose()
    return docs


def load_documents(text: str) -> list[Document]:
    """Parse every document in `text`. Raises `YamlSyntaxError` when the text is not YAML."""
    try:
        docs = _documents_from_events(text, lines=False)
    except _Unusual:
        return _documents_from_nodes(text)
    deferred = _DeferredLines(text)
    for doc in docs:
        doc.deferred_lines = functools.partial(deferred.of, doc.index)
    return docs


class _DeferredLines:
    """The line maps of every document of one text, made by one more event walk when first asked
    (a rules file of many documents asks once per document: the text is walked once, not each time)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._maps: list[dict[Path, int]] | None = None

    def of(self, index: int) -> dict[Path, int]:
        if self._maps is None:
            self._maps = [d.lines for d in _documents_from_events(self._text)]
            self._text = ""
        return self._maps[index]


def _documents_from_nodes(text: str) -> list[Document]:
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            doc = Document(data=None, start_line=node.start_mark.line + 1, index=len(docs))
            doc.data = _walk(node, loader, (), doc, _Budget())
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"YAML syntax error: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", None, None) from None
    except RecursionError:
        # PyYAML's composer recurses once per nesting level, before our own depth check can run.
        raise YamlSyntaxError(f"document nested more than {MAX_DEPTH} levels deep", None, None) from None
    finally:
        loader.dispose()
    return docs


def decode_text(raw: bytes) -> str:
    """Bytes of a user's file as text; a clear error for binary or non-UTF-8 content."""
    if b"\x00" in raw:
        raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "binary content")
    return raw.decode("utf-8-sig")
