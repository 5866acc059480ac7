"""One setting, declared once: its flag, environment variable, type, default and help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lora_syncer.options.values import TEXT, ValueType

ENV_PREFIX = "LORA_SYNCER_"

# value: `--flag VALUE`; switch: `--flag` / `--no-flag`; flag: `--flag` alone (store true);
# append: `--flag VALUE` repeatable; extend: `--flag V [V ...]` repeatable; positional: `VALUE...`.
Action = Literal["value", "switch", "flag", "append", "extend", "positional"]
LIST_ACTIONS = ("append", "extend", "positional")


def env_name(flag: str) -> str:
    """`--metrics-port` -> `LORA_SYNCER_METRICS_PORT`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


@dataclass(frozen=True)
class Setting:
    """A flag of one or more commands, and the environment variables that stand in for it.

    `env` is the variable: "" (the default) means `LORA_SYNCER_<FLAG>`, None means none.
    `legacy_env` are older names read after it. `field` is the attribute of the object the
    command hands on (SyncerSettings, ProxyOptions) when it differs from the flag's name.
    `default_text` documents a default computed elsewhere (e.g. "the file's host/port").
    """

    flag: str
    type: ValueType = TEXT
    default: Any = None
    help: str = ""
    action: Action = "value"
    env: str | None = ""
    legacy_env: tuple[str, ...] = ()
    short: str | None = None
    metavar: str | None = None
    field: str | None = None
    required: bool = False
    hidden: bool = False
    split_flags: bool = False  # also split each flag value at commas
    default_text: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def target(self) -> str:
        """The consumer's attribute this setting fills."""
        return self.field or self.dest

    @property
    def variables(self) -> tuple[str, ...]:
        """Environment variables read, in order of precedence."""
        if self.env is None:
            return self.legacy_env
        return (self.env or env_name(self.flag), *self.legacy_env)

    @property
    def takes_value(self) -> bool:
        return self.action not in ("switch", "flag")

    @property
    def is_list(self) -> bool:
        return self.action in LIST_ACTIONS

    def but(self, **changes: Any) -> Setting:
        """The same setting for another command, with (say) another default or help."""
        return dataclasses.replace(self, **changes)
