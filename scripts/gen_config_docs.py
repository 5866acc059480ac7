#!/usr/bin/env python3
"""Regenerate the flag tables of docs/configuration.md from the settings' declarations.

Usage: .venv/bin/python scripts/gen_config_docs.py          # rewrite the generated block
       .venv/bin/python scripts/gen_config_docs.py --check  # exit 1 if the docs are stale

The declarations (`lora_syncer.options`) are what the parsers and the environment handling are
generated from too, so the tables cannot say something the command line does not do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED FLAG TABLES (scripts/gen_config_docs.py) -->"
END = "<!-- END GENERATED FLAG TABLES -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def command_table(command: str) -> list[str]:
    """The markdown table of one command's flags."""
    from lora_syncer.options.commands import command_settings
    from lora_syncer.options.parser import default_text

    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for s in command_settings(command):
        if s.hidden:
            continue
        if s.action == "positional":
            flag = f"`{s.metavar or s.dest.upper()}`"
        else:
            names = [n for n in (s.short, s.flag) if n]
            if s.action == "switch":
                names.append("--no-" + s.flag[2:])
            flag = ", ".join(f"`{n}`" for n in names)
        env = " or ".join(f"`{v}`" for v in s.variables) or "—"
        shown = default_text(s)
        if shown is None:
            default = "—"
        elif s.default_text is not None or s.action in ("switch", "flag"):
            default = shown  # words ("on", "the file's host/port"), not a value to type
        else:
            default = f"`{shown}`"
        meaning = s.help
        if s.type.choices:
            meaning += f" (one of: {', '.join(s.type.choices)})"
        rows.append(f"| {flag} | {env} | {_cell(default)} | {_cell(meaning)} |")
    return rows


def generate() -> str:
    """The whole generated block, markers included."""
    from lora_syncer.cli import COMMANDS

    lines = [BEGIN, ""]
    for command, (_, help_text) in COMMANDS.items():
        lines += [f"### `lora-syncer {command}`", "", f"{help_text[0].upper()}{help_text[1:]}.", ""]
        lines += command_table(command)
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def updated(text: str) -> str:
    """`text` with its generated block replaced by a fresh one."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + generate() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    fresh = updated(current)
    if args.check:
        if fresh != current:
            print(
                f"{DOC.relative_to(ROOT)} is stale: run .venv/bin/python scripts/gen_config_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
