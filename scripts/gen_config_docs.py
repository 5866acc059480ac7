#!/usr/bin/env python3
"""Regenerate the flag tables of docs/configuration.md from the real argparse parsers.

Usage: .venv/bin/python scripts/gen_config_docs.py          # rewrite the generated block
       .venv/bin/python scripts/gen_config_docs.py --check  # exit 1 if the docs are stale

Each command's parser is built with a clean environment so defaults are the built-in ones.
Whether a flag really reads `LORA_SYNCER_<FLAG>` (or a legacy variable) is found out, not
assumed: the parser is rebuilt with the variable set and the default must change.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED FLAG TABLES (scripts/gen_config_docs.py) -->"
END = "<!-- END GENERATED FLAG TABLES -->"
LEGACY_VARIABLES = ("DYNAMIC_LORA_ROLLOUT_CONFIG", "VLLM_API_KEY")
_PROBE = object()
# Variables read when settings are validated rather than as a parser default (the probe cannot see them).
READ_AT_RUN_TIME = {("run", "allowed_sources"): "LORA_SYNCER_ALLOWED_SOURCES"}


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("LORA_SYNCER_") or name in LEGACY_VARIABLES or name == "NO_COLOR":
            del os.environ[name]
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _subparser(command: str) -> argparse.ArgumentParser:
    from lora_syncer.cli import build_parser

    parser = build_parser(only=command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise LookupError(command)


def _actions(command: str) -> list[argparse.Action]:
    return [
        a
        for a in _subparser(command)._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


def _probe_value(action: argparse.Action) -> str:
    if action.choices:
        others = [str(c) for c in action.choices if c != action.default]
        return others[0] if others else "probe"
    if isinstance(action, argparse.BooleanOptionalAction) or isinstance(action.default, bool):
        return "false" if action.default else "true"
    if action.type in (int, float) or isinstance(action.default, int | float):
        return "7"
    return "/probe/value"


def _reads(command: str, dest: str, variable: str, value: str, baseline: object) -> bool:
    with _environment({variable: value}):
        try:
            probed = {a.dest: a.default for a in _actions(command)}.get(dest, _PROBE)
        except BaseException:  # the variable was read and rejected: it is read
            return True
    return probed != baseline


def _flag(action: argparse.Action) -> str:
    return (
        ", ".join(f"`{s}`" for s in action.option_strings)
        if action.option_strings
        else f"`{action.metavar or action.dest}`"
    )


def _default(action: argparse.Action) -> str:
    value = action.default
    if value is None or value == []:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _text(action: argparse.Action) -> str:
    help_text = (action.help or "").replace("|", "\\|").replace("\n", " ")
    if action.choices and "{" not in help_text:
        help_text = f"{help_text} (one of: {', '.join(str(c) for c in action.choices)})".strip()
    return help_text


def command_table(command: str) -> list[str]:
    """The markdown table of one command's flags."""
    from lora_syncer.cliutil import env_name

    with _environment({}):
        actions = _actions(command)
    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for action in actions:
        env = "—"
        if action.option_strings:
            longs = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
            long = longs[0] if longs else max(action.option_strings, key=len)
            variables = [env_name(long), *LEGACY_VARIABLES]
            value = _probe_value(action)
            found = [v for v in variables if _reads(command, action.dest, v, value, action.default)]
            if (command, action.dest) in READ_AT_RUN_TIME:
                found.insert(0, READ_AT_RUN_TIME[command, action.dest])
            if found:
                env = " or ".join(f"`{v}`" for v in found)
        rows.append(f"| {_flag(action)} | {env} | {_default(action)} | {_text(action)} |")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
