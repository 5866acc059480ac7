"""Helpers every file parser shares: located issues, validation errors in plain words, text loading.

The adapters file and the rules file report problems the same way (`file:line: severity: path:
message`); the wording of a validation error and the handling of unreadable text live here
once, so both files say the same thing about the same mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from lora_syncer.config.errors import ConfigError, Issue, Severity, join_path, with_file
from lora_syncer.config.keys import unknown_key_message
from lora_syncer.config.schema import Invalid, Obj, validate
from lora_syncer.config.yamldoc import Document, Path, YamlSyntaxError, decode_text, load_documents

if TYPE_CHECKING:  # pydantic is imported only by the parsers that use it (the rules file's)
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")
T = TypeVar("T")

_HINTS: dict[str, str] = {
    "string_type": "must be a string (quote it if it looks like a number)",
    "int_type": "must be a whole number",
    "missing": "is required",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
}
_RANGE = ("greater_than_equal", "less_than_equal")


def pydantic_message(err: Any, out_of_range: str | None = None) -> str:
    """One pydantic error in plain words; `out_of_range` replaces pydantic's own bound message."""
    kind = str(err.get("type", ""))
    if kind in _RANGE:
        return out_of_range or f"is out of range: {err.get('msg', '')}"
    if kind == "value_error":  # our own validators: their message without pydantic's prefix
        return str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return _HINTS.get(kind) or str(err.get("msg", "is invalid"))


class Collector:
    """Issues of one file, each located by document path and line."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, doc: Document, path: Path, message: str, severity: Severity = "error") -> None:
        self.issues.append(
            Issue(path=join_path(path), message=message, line=doc.line_of(path), severity=severity)
        )

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def validate_at(
    model: type[M],
    value: Any,
    doc: Document,
    base: Path,
    out: Collector,
    *,
    out_of_range: str | None = None,
) -> M | None:
    """Validate `value` (found at `base` in `doc`) as `model`; every error goes to `out`, located.

    An unknown key (the model forbids extras) names the closest key the model knows.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(value)
    except ValidationError as exc:
        _report(model, exc.errors(), doc, base, out, out_of_range)
        return None


def check_at(schema: Obj, value: Any, doc: Document, base: Path, out: Collector) -> dict[str, Any] | None:
    """`validate_at` for a `config.schema` mapping: plain dicts back, the same messages."""
    try:
        return validate(schema, value)
    except Invalid as exc:
        _report(schema, exc.errors, doc, base, out, None)
        return None


def _report(
    model: Any, errors: Iterable[Any], doc: Document, base: Path, out: Collector, out_of_range: str | None
) -> None:
    for err in errors:
        loc = tuple(p for p in err.get("loc") if isinstance(p, str | int))
        if err.get("type") == "extra_forbidden":
            message = unknown_key_message(model, loc)
        else:
            message = pydantic_message(err, out_of_range)
        out.add(doc, (*base, *loc), message)


def load_text(text: str, filename: str | None) -> list[Document]:
    """Every YAML document of a file's text; a syntax error becomes a ConfigError naming the file."""
    try:
        return load_documents(text)
    except YamlSyntaxError as exc:
        raise ConfigError(
            filename, [Issue(path="", message=exc.message, line=exc.line, file=filename)]
        ) from None


def decode(raw: bytes, filename: str | None) -> str:
    """A file's bytes as text; binary content becomes a ConfigError naming the file."""
    try:
        return decode_text(raw)
    except UnicodeDecodeError:
        raise ConfigError(
            filename, [Issue(path="", message="file is not UTF-8 text (binary content?)", file=filename)]
        ) from None


def in_file(filename: str | None, parse: Callable[[], T]) -> T:
    """Run a parser whose issues carry no file name; a ConfigError it raises names `filename`."""
    try:
        return parse()
    except ConfigError as exc:
        raise ConfigError(filename, with_file(exc.issues, filename)) from None
