"""argparse parsers generated from the declarations, reading the environment at parse time.

argparse only collects text (every default is None, so "not given" is visible); the values
are typed and validated afterwards by `resolve`, which also reads the environment. Every
usage error is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from lora_syncer.options.commands import COMMAND_SECTIONS
from lora_syncer.options.resolve import UsageError, resolve
from lora_syncer.options.setting import Setting

PROG = "lora-syncer"


class SettingsParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, and which resolves its declared settings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: tuple[Setting, ...] = ()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {' '.join(message.split())}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if self.settings:
            try:
                resolve(self.settings, vars(parsed), os.environ)
            except UsageError as exc:
                self.error(str(exc))
        return parsed, extras


def default_text(setting: Setting) -> str | None:
    """The default as people read it (None: no default worth showing)."""
    if setting.default_text is not None:
        return setting.default_text
    value = setting.default
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _help(setting: Setting) -> str:
    if setting.hidden:
        return argparse.SUPPRESS
    notes = []
    shown = default_text(setting)
    if shown is not None:
        notes.append(f"default: {shown}")
    if setting.variables:
        notes.append("env " + " or ".join(setting.variables))
    text = setting.help + (f" ({'; '.join(notes)})" if notes else "")
    return text.replace("%", "%%")  # argparse formats help with %


def add_setting(group: Any, setting: Setting) -> None:
    """One argparse argument for one setting (no type, no default: `resolve` does both)."""
    metavar = setting.metavar or setting.type.metavar
    kwargs: dict[str, Any] = {"help": _help(setting)}
    if setting.action == "positional":
        group.add_argument(setting.dest, nargs="+", metavar=metavar, **kwargs)
        return
    names = [n for n in (setting.short, setting.flag) if n]
    if setting.action == "switch":
        kwargs.update(action=argparse.BooleanOptionalAction)
    elif setting.action == "flag":
        kwargs.update(action="store_true")
    elif setting.action == "append":
        kwargs.update(action="append", metavar=metavar)
    elif setting.action == "extend":
        kwargs.update(action="extend", nargs="+", metavar=metavar)
    else:
        kwargs.update(metavar=metavar)
    group.add_argument(*names, dest=setting.dest, default=None, **kwargs)


def add_command_settings(parser: SettingsParser, command: str) -> None:
    """All of one command's settings, grouped as declared."""
    for title, settings in COMMAND_SECTIONS[command]:
        group = parser.add_argument_group(title)
        for setting in settings:
            add_setting(group, setting)
    parser.settings = tuple(s for _, settings in COMMAND_SECTIONS[command] for s in settings)


def command_parser(command: str) -> SettingsParser:
    """A stand-alone parser of one command's settings (for tests and tools)."""
    parser = SettingsParser(prog=f"{PROG} {command}")
    add_command_settings(parser, command)
    return parser


def fail(message: str) -> NoReturn:
    """A usage error found after parsing (settings that contradict each other): one line, exit 2."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)
