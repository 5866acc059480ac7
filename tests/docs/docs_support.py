"""Helpers for the documentation tests (imported by test_docs.py): the docs this suite covers and their fenced blocks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The user documentation these tests keep honest (other docs/ files are owned and tested elsewhere).
DOCS = sorted(
    [
        ROOT / "docs" / "configuration.md",
        ROOT / "docs" / "operations.md",
        ROOT / "docs" / "http-and-metrics.md",
        *(ROOT / "docs" / "guides").glob("*.md"),
    ]
)
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced blocks of `language` in a markdown file."""
    return [body for lang, body in _FENCE.findall(path.read_text(encoding="utf-8")) if lang == language]


def shell_commands(path: Path) -> list[str]:
    """The `$ ...` lines of the console blocks, without the prompt."""
    return [
        line[2:].strip()
        for body in blocks(path, "console")
        for line in body.splitlines()
        if line.startswith("$ ")
    ]
