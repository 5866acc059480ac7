"""Types shared by the security tier's fixtures and tests (conftest modules are not imported by name)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recorder:
    """The raw request targets (path and query, as sent on the wire) an upstream received."""

    url: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)
