"""The adapters file: the upstream `vLLMLoRAConfig` format, parsed and validated (pure).

```yaml
vLLMLoRAConfig:
  name: vllm-qwen3-32b-adapters     # optional
  host: localhost                   # optional, default localhost
  port: 8000                        # optional, default 8000
  defaultBaseModel: Qwen/Qwen3-32B  # optional
  ensureExist:    {models: [{id, source, base-model?, checksum?}, ...]}
  ensureNotExist: {models: [{id, source?, base-model?}, ...]}
```

Every error names the file, the path inside the document and the line, and every problem of
a file is reported at once. An id in both lists is a conflict: reported, and that adapter is
left alone (the upstream sidecar's behaviour). An unknown key inside `vLLMLoRAConfig` is an
error naming the key probably meant (the old sidecar ignored it, so a typo such as
`ensureExists:` declared nothing); keys beside `vLLMLoRAConfig` are ignored with a warning.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from lora_syncer.config.errors import ConfigError, Issue, with_file
from lora_syncer.config.keys import closest
from lora_syncer.config.parsing import Collector, check_at, decode, in_file, load_text
from lora_syncer.config.schema import Int, Key, ListOf, Obj, Str
from lora_syncer.config.yamldoc import Document

ROOT_KEY = "vLLMLoRAConfig"


@dataclass(frozen=True, slots=True)
class DesiredAdapter:
    """One adapter as declared: the name vLLM will serve it under and where to load it from."""

    id: str
    source: str
    base_model: str | None = None
    # `sha256:<64 lower-case hex>` pinning a remote source's content (see docs/adapter-sources.md).
    checksum: str | None = None


@dataclass(frozen=True)
class AdaptersConfig:
    """A validated adapters file. `conflicts` are ids found in both lists (left alone)."""

    name: str | None = None
    host: str = "localhost"
    port: int = 8000
    default_base_model: str | None = None
    ensure_exist: tuple[DesiredAdapter, ...] = ()
    ensure_not_exist: tuple[DesiredAdapter, ...] = ()
    conflicts: frozenset[str] = frozenset()
    warnings: tuple[Issue, ...] = field(default=(), compare=False)

    @property
    def server_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"


# --- the document schema, kept private: callers get the frozen dataclasses ---
#
# These mappings are the one list of known keys: a key they do not declare is an error, with a
# "did you mean" computed from them. To accept a new key (an adapter's `checksum`, say), add it
# to `_ADAPTER` (and `_REMOVED_ADAPTER` if ensureNotExist may carry it); it is then accepted, and
# suggested for its misspellings, with nothing else to change. (`config.schema`, not pydantic:
# `lora-syncer run` with only this file then never imports pydantic.)

_CHECKSUM = re.compile(r"sha256:[0-9a-fA-F]{64}")


def _checksum_format(value: str) -> str:
    if not _CHECKSUM.fullmatch(value):
        raise ValueError("expected 'sha256:<64 hex digits>' (print it with `lora-syncer digest SOURCE`)")
    return value.lower()


def _port_from_string(value: Any) -> Any:
    # `port: "8000"` is a common way to write it in a ConfigMap; accept digits.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


# An unknown key is an error: `ensureExists:` would otherwise declare nothing, and with
# --prune unload every adapter.
_ADAPTER = Obj(
    "_Adapter",
    {
        "id": Key(Str(min_length=1), required=True, nullable=False),
        "source": Key(Str(min_length=1), required=True, nullable=False),
        "base_model": Key(Str(min_length=1), alias="base-model"),
        # Known since 0.2.0; older versions ignore the key with a warning.
        "checksum": Key(Str(check=_checksum_format)),
    },
)

# ensureNotExist only needs the name; upstream files carry the source too, so accept it
# (and a checksum, so moving an entry from one list to the other is a cut and paste).
_REMOVED_ADAPTER = Obj(
    "_RemovedAdapter",
    {
        "id": Key(Str(min_length=1), required=True, nullable=False),
        "source": Key(Str()),
        "base_model": Key(Str(), alias="base-model"),
        "checksum": Key(Str()),
    },
)

_CONFIG = Obj(
    "_Config",
    {
        "name": Key(Str()),
        "host": Key(Str(min_length=1), default="localhost", nullable=False),
        "port": Key(Int(ge=1, le=65535, before=_port_from_string), default=8000, nullable=False),
        "defaultBaseModel": Key(Str()),
        "ensureExist": Key(Obj("_ExistList", {"models": Key(ListOf(_ADAPTER))})),
        "ensureNotExist": Key(Obj("_NotExistList", {"models": Key(ListOf(_REMOVED_ADAPTER))})),
    },
)


def _declared_ids(body: Any, list_name: str) -> list[tuple[int, str]]:
    """(index, id) of each entry of a list that names an id, read from the raw data.

    Read before validation so duplicates and conflicts are reported with every other problem
    of the file, not after those are fixed.
    """
    lst = body.get(list_name) if isinstance(body, dict) else None
    models = lst.get("models") if isinstance(lst, dict) else None
    if not isinstance(models, list):
        return []
    return [
        (i, m["id"].strip())
        for i, m in enumerate(models)
        if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"].strip()
    ]


def _duplicates(ids: list[tuple[int, str]], list_name: str, doc: Document, out: Collector) -> None:
    seen: dict[str, int] = {}
    for i, adapter_id in ids:
        if adapter_id in seen:
            out.add(
                doc,
                (ROOT_KEY, list_name, "models", i, "id"),
                f"duplicate id {adapter_id!r} (first at models[{seen[adapter_id]}]); each id may appear once per list",
            )
        else:
            seen[adapter_id] = i


def _top_level(data: dict[Any, Any], doc: Document, out: Collector) -> None:
    """Keys beside vLLMLoRAConfig: ignored, unless they are its own keys indented wrongly."""
    own = set(_CONFIG.written_keys())
    for key in data:
        if key == ROOT_KEY:
            continue
        if key in own:
            out.add(doc, (key,), f"belongs under {ROOT_KEY} (check the indentation)")
        else:
            out.add(doc, (key,), "unknown top-level key, ignored", "warning")


def _missing_root(data: Any) -> str:
    if not isinstance(data, dict) or not data:
        return "file is empty"
    found = f"found keys: {', '.join(map(str, data))}"
    guess = closest(str(next(iter(data))), [ROOT_KEY]) if len(data) == 1 else None
    return f"{found}; did you mean {ROOT_KEY!r}?" if guess else found


def _shared(text: Any) -> Any:
    """One string object per distinct id, source or base model in the whole process (interned):
    the server's answers name the same adapters every resync, and 10,000 declared adapters would
    otherwise keep each name twice or three times (the file's, `/v1/models`', the status')."""
    return sys.intern(text) if type(text) is str else text


def config_from_document(doc: Document) -> AdaptersConfig:
    """Validate one parsed YAML document. Raises ConfigError (file unset) with every issue found."""
    data = doc.data
    if not isinstance(data, dict) or ROOT_KEY not in data:
        raise ConfigError(
            None,
            [
                Issue(
                    path="",
                    message=f"missing top-level key {ROOT_KEY!r} ({_missing_root(data)})",
                    line=doc.start_line,
                )
            ],
        )
    out = Collector()
    out.issues.extend(doc.warnings)
    _top_level(data, doc, out)
    body = data[ROOT_KEY]
    if body is None:
        body = {}
    parsed = check_at(_CONFIG, body, doc, (ROOT_KEY,), out)
    exist_ids = _declared_ids(body, "ensureExist")
    not_exist_ids = _declared_ids(body, "ensureNotExist")
    _duplicates(exist_ids, "ensureExist", doc, out)
    _duplicates(not_exist_ids, "ensureNotExist", doc, out)
    declared = {adapter_id for _, adapter_id in exist_ids}
    conflicts = frozenset(adapter_id for _, adapter_id in not_exist_ids if adapter_id in declared)
    for i, adapter_id in not_exist_ids:
        if adapter_id in conflicts:
            out.add(
                doc,
                (ROOT_KEY, "ensureNotExist", "models", i, "id"),
                f"{adapter_id!r} is in both ensureExist and ensureNotExist; it is left alone until one list drops it",
                "warning",
            )
    # In file order, whichever check found them: the file is read top to bottom when fixing it.
    issues = sorted(out.issues, key=lambda i: i.line if i.line is not None else 0)
    if parsed is None or out.has_errors:
        raise ConfigError(None, issues)
    exist = (parsed["ensureExist"] or {}).get("models") or []
    not_exist = (parsed["ensureNotExist"] or {}).get("models") or []
    default_base = _shared(parsed["defaultBaseModel"] or None)
    return AdaptersConfig(
        name=parsed["name"],
        host=parsed["host"],
        port=parsed["port"],
        default_base_model=default_base,
        ensure_exist=tuple(
            DesiredAdapter(m["id"], m["source"], m["base_model"] or default_base, m["checksum"])
            for m in exist
        ),
        ensure_not_exist=tuple(
            DesiredAdapter(m["id"], m["source"] or "", m["base_model"] or default_base) for m in not_exist
        ),
        conflicts=conflicts,
        warnings=tuple(issues),
    )


def parse_adapters_text(text: str, filename: str | None = None) -> AdaptersConfig:
    """Parse the text of an adapters file. Raises ConfigError naming `filename`."""
    return adapters_from_documents(load_text(text, filename), filename)


def adapters_from_documents(documents: list[Document], filename: str | None = None) -> AdaptersConfig:
    """The adapters file made of these YAML documents. Raises ConfigError naming `filename`."""
    docs = [d for d in documents if d.data is not None]
    if not docs:
        raise ConfigError(
            filename,
            [
                Issue(
                    path="", message=f"file is empty; expected a {ROOT_KEY!r} document", line=1, file=filename
                )
            ],
        )
    if len(docs) > 1:
        raise ConfigError(
            filename,
            [
                Issue(
                    path="",
                    message=f"expected one YAML document, found {len(docs)}",
                    line=docs[1].start_line,
                    file=filename,
                )
            ],
        )
    config = in_file(filename, lambda: config_from_document(docs[0]))
    return replace(config, warnings=tuple(with_file(config.warnings, filename)))


def parse_adapters(raw: bytes, filename: str | None = None) -> AdaptersConfig:
    """Parse the bytes of an adapters file (the `WatchedFile` parser)."""
    return parse_adapters_text(decode(raw, filename), filename)
