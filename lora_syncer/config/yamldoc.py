"""YAML documents that remember where each value came from.

PyYAML's composed node tree knows the line of every key and item; the plain data does not.
`load_documents` builds the data and a map from document path to line in one walk, so a
validation error can say `configmap.yaml:14: vLLMLoRAConfig.ensureExist.models[2].source`.
Pure: takes text, returns data.
"""

from __future__ import annotations

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

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
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
                doc.warnings.append(
                    Issue(
                        path=join_path(child),
                        message="duplicate key: the later value wins",
                        line=key_node.start_mark.line + 1,
                        severity="warning",
                    )
                )
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, loader, child, doc, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, loader, (*path, i), doc, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_documents(text: str) -> list[Document]:
    """Parse every document in `text`. Raises `YamlSyntaxError` when the text is not YAML."""
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
