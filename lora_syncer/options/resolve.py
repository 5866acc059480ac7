"""From what argparse saw and the environment to typed values (pure: the environment is passed in).

Precedence: the flag, then `LORA_SYNCER_<FLAG>`, then legacy variables, then the default. An
empty variable counts as unset (Kubernetes manifests often carry `value: ""`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lora_syncer.options.setting import Setting
from lora_syncer.options.values import BOOL


class UsageError(ValueError):
    """A bad value; the message is one line naming the flag and the variable."""


def label(setting: Setting, variable: str | None = None) -> str:
    """`--flag / VARIABLE`: how an error names a setting (the variable that gave the value, if any)."""
    names = setting.variables
    var = variable or (names[0] if names else None)
    name = setting.flag if setting.action != "positional" else (setting.metavar or setting.dest.upper())
    return f"{name} / {var}" if var else name


def _env_items(text: str) -> list[str]:
    """A list from one variable: entries separated by commas or whitespace."""
    return [part for part in re.split(r"[,\s]+", text) if part]


def _convert(setting: Setting, raw: Any, where: str) -> Any:
    try:
        if setting.is_list:
            return [setting.type(item) for item in raw]
        if not setting.takes_value:
            return bool(raw)
        return setting.type(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def value_of(setting: Setting, given: Any, environ: Mapping[str, str]) -> Any:
    """The typed value of one setting: from the flag, else its variables, else the default."""
    if given is not None and given != []:
        if setting.is_list and setting.split_flags:
            given = [p.strip() for text in given for p in text.split(",") if p.strip()]
        return _convert(setting, given, label(setting))
    for variable in setting.variables:
        text = environ.get(variable, "")
        if text.strip() == "":
            continue
        where = label(setting, variable)
        if setting.is_list:
            return _convert(setting, _env_items(text), where)
        if not setting.takes_value:
            try:
                return BOOL(text)
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from None
        return _convert(setting, text, where)
    if setting.required:
        raise UsageError(f"{label(setting)}: is required")
    default = setting.default
    return list(default) if isinstance(default, list | tuple) and setting.is_list else default


def resolve(settings: Iterable[Setting], values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Replace each setting's entry in `values` (what argparse parsed) by its typed value."""
    for setting in settings:
        values[setting.dest] = value_of(setting, values.get(setting.dest), environ)
