"""Small helpers shared by the subcommands: environment-variable defaults for flags."""

from __future__ import annotations

import os

ENV_PREFIX = "LORA_SYNCER_"


def env_name(flag: str) -> str:
    """`--metrics-port` -> `LORA_SYNCER_METRICS_PORT`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_default(flag: str, default: str | None = None, *aliases: str) -> str | None:
    """The flag's default: `LORA_SYNCER_<FLAG>`, then any legacy variable names, then `default`."""
    for name in (env_name(flag), *aliases):
        value = os.environ.get(name)
        if value is not None and value != "":
            return value
    return default


def env_flag(flag: str, default: bool = False) -> bool:
    """A boolean flag's default from the environment (`1/true/yes/on` and `0/false/no/off`)."""
    raw = env_default(flag)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SystemExit(f"{env_name(flag)}={raw!r} is not a boolean: use true or false")
