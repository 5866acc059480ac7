"""Problems found in a user's file, located by file, document path and line.

Hierarchy::

    ValueError
     └── ConfigError          one or more error-severity Issues in one file
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Severity = Literal["error", "warning"]


def join_path(path: Sequence[str | int]) -> str:
    """`("vLLMLoRAConfig", "ensureExist", "models", 2, "source")` -> `vLLMLoRAConfig.ensureExist.models[2].source`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Issue:
    """One problem in a file: where it is and what to do about it."""

    path: str
    message: str
    line: int | None = None
    severity: Severity = "error"
    file: str | None = None

    def format(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        label = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {label}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class ConfigError(ValueError):
    """A file that cannot be used; `issues` holds every error (and warnings) found in it."""

    file: str | None
    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.summary())

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def summary(self) -> str:
        errors = self.errors
        if not errors:
            return f"{self.file or '<input>'}: invalid"
        first = errors[0].format()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return first + more

    def __str__(self) -> str:
        return "\n".join(i.format() for i in self.issues) or self.summary()


def with_file(issues: Iterable[Issue], file: str | None) -> list[Issue]:
    return [replace(i, file=file) for i in issues]
