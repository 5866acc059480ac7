"""The adapters file: the upstream `vLLMLoRAConfig` format, parsed and validated (pure).

```yaml
vLLMLoRAConfig:
  name: vllm-qwen3-32b-adapters     # optional
  host: localhost                   # optional, default localhost
  port: 8000                        # optional, default 8000
  defaultBaseModel: Qwen/Qwen3-32B  # optional
  ensureExist:    {models: [{id, source, base-model?}, ...]}
  ensureNotExist: {models: [{id, source?, base-model?}, ...]}
```

Every error names the file, the path inside the document and the line. An id in both lists
is a conflict: reported, and that adapter is left alone (the upstream sidecar's behaviour).
Unknown keys are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from lora_syncer.config.errors import ConfigError, Issue, join_path, with_file
from lora_syncer.config.parsing import Collector, decode, in_file, load_text, validate_at
from lora_syncer.config.yamldoc import Document

ROOT_KEY = "vLLMLoRAConfig"


@dataclass(frozen=True)
class DesiredAdapter:
    """One adapter as declared: the name vLLM will serve it under and where to load it from."""

    id: str
    source: str
    base_model: str | None = None


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


# --- the document schema (pydantic), kept private: callers get the frozen dataclasses ---


class _NonEmpty(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, str_strip_whitespace=True)


class _Adapter(_NonEmpty):
    id: StrictStr = Field(min_length=1)
    source: StrictStr = Field(min_length=1)
    base_model: StrictStr | None = Field(default=None, alias="base-model", min_length=1)


class _RemovedAdapter(_NonEmpty):
    # ensureNotExist only needs the name; upstream files carry the source too, so accept it.
    id: StrictStr = Field(min_length=1)
    source: StrictStr | None = None
    base_model: StrictStr | None = Field(default=None, alias="base-model")


class _ExistList(_NonEmpty):
    models: list[_Adapter] | None = None


class _NotExistList(_NonEmpty):
    models: list[_RemovedAdapter] | None = None


class _Config(_NonEmpty):
    name: StrictStr | None = None
    host: StrictStr = Field(default="localhost", min_length=1)
    port: StrictInt = Field(default=8000, ge=1, le=65535)
    defaultBaseModel: StrictStr | None = None
    ensureExist: _ExistList | None = None
    ensureNotExist: _NotExistList | None = None

    @field_validator("port", mode="before")
    @classmethod
    def _port_from_string(cls, value: Any) -> Any:
        # `port: "8000"` is a common way to write it in a ConfigMap; accept digits.
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value


def _unknown_key_warnings(model: BaseModel, path: tuple[str | int, ...], doc: Document) -> list[Issue]:
    out: list[Issue] = []
    for key in model.model_extra or {}:
        child = (*path, key)
        out.append(
            Issue(
                path=join_path(child),
                message="unknown key, ignored",
                line=doc.line_of(child),
                severity="warning",
            )
        )
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        alias = info.alias or name
        if isinstance(value, BaseModel):
            out.extend(_unknown_key_warnings(value, (*path, alias), doc))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.extend(_unknown_key_warnings(item, (*path, alias, i), doc))
    return out


def _duplicates(models: list[Any], list_name: str, doc: Document) -> list[Issue]:
    seen: dict[str, int] = {}
    issues: list[Issue] = []
    for i, m in enumerate(models):
        if m.id in seen:
            path = (ROOT_KEY, list_name, "models", i, "id")
            issues.append(
                Issue(
                    path=join_path(path),
                    message=f"duplicate id {m.id!r} (first at models[{seen[m.id]}]); each id may appear once per list",
                    line=doc.line_of(path),
                )
            )
        else:
            seen[m.id] = i
    return issues


def config_from_document(doc: Document) -> AdaptersConfig:
    """Validate one parsed YAML document. Raises ConfigError (file unset) on any error."""
    data = doc.data
    if not isinstance(data, dict) or ROOT_KEY not in data:
        found = (
            f"found keys: {', '.join(map(str, data))}" if isinstance(data, dict) and data else "file is empty"
        )
        raise ConfigError(
            None,
            [Issue(path="", message=f"missing top-level key {ROOT_KEY!r} ({found})", line=doc.start_line)],
        )
    issues: list[Issue] = list(doc.warnings)
    for key in data:
        if key != ROOT_KEY:
            issues.append(
                Issue(
                    path=str(key),
                    message="unknown top-level key, ignored",
                    line=doc.line_of((key,)),
                    severity="warning",
                )
            )
    body = data[ROOT_KEY]
    if body is None:
        body = {}
    out = Collector()
    parsed = validate_at(_Config, body, doc, (ROOT_KEY,), out)
    if parsed is None:
        raise ConfigError(None, issues + out.issues)

    exist = parsed.ensureExist.models if parsed.ensureExist and parsed.ensureExist.models else []
    not_exist = parsed.ensureNotExist.models if parsed.ensureNotExist and parsed.ensureNotExist.models else []
    errors = _duplicates(exist, "ensureExist", doc) + _duplicates(not_exist, "ensureNotExist", doc)
    issues.extend(_unknown_key_warnings(parsed, (ROOT_KEY,), doc))
    if errors:
        raise ConfigError(None, issues + errors)

    exist_ids = {m.id for m in exist}
    conflicts = frozenset(m.id for m in not_exist if m.id in exist_ids)
    for i, m in enumerate(not_exist):
        if m.id in conflicts:
            path = (ROOT_KEY, "ensureNotExist", "models", i, "id")
            issues.append(
                Issue(
                    path=join_path(path),
                    message=f"{m.id!r} is in both ensureExist and ensureNotExist; it is left alone until one list drops it",
                    line=doc.line_of(path),
                    severity="warning",
                )
            )
    default_base = parsed.defaultBaseModel or None
    return AdaptersConfig(
        name=parsed.name,
        host=parsed.host,
        port=parsed.port,
        default_base_model=default_base,
        ensure_exist=tuple(DesiredAdapter(m.id, m.source, m.base_model or default_base) for m in exist),
        ensure_not_exist=tuple(
            DesiredAdapter(m.id, m.source or "", m.base_model or default_base) for m in not_exist
        ),
        conflicts=conflicts,
        warnings=tuple(issues),
    )


def parse_adapters_text(text: str, filename: str | None = None) -> AdaptersConfig:
    """Parse the text of an adapters file. Raises ConfigError naming `filename`."""
    docs = [d for d in load_text(text, filename) if d.data is not None]
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
