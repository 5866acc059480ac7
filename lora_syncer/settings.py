"""Settings of `lora-syncer run`'s syncer, typed and validated (flags and variables: `lora_syncer.options`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from lora_syncer.options.commands import RUN
from lora_syncer.options.parser import fail
from lora_syncer.options.shared import DEFAULT_CONFIG
from lora_syncer.sync.vllm_client import v1_suffix_problem

__all__ = ["DEFAULT_CONFIG", "SyncerSettings", "syncer_settings_from_args"]

# (lowest, highest, lowest excluded) of each bounded number. The flags are checked one by one
# when parsed (`lora_syncer.options`); these hold for settings built in code (tests, the demo).
# A frozen dataclass, not a pydantic model: `lora-syncer run` then never imports pydantic.
_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "metrics_port": (0, 65535, False),
    "health_check_timeout": (0, None, False),
    "health_check_interval": (0, None, True),
    "reconcile_trigger": (0, None, True),
    "max_concurrency": (1, 256, False),
    "poll_interval": (0, None, True),
    "max_cpu_loras": (1, None, False),
    "backoff_initial": (0, None, True),
    "backoff_max": (0, None, True),
    "call_timeout": (0, None, True),
    "load_timeout": (0, None, True),
    "shutdown_grace": (0, None, False),
    "adapter_cache_max_bytes": (1, None, False),
    "adapter_cache_gc_grace": (0, None, True),
    "download_concurrency": (1, 64, False),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "base_model_policy": ("ignore", "warn", "enforce"),
    "ready_when": ("started", "synced"),
    "watch": ("auto", "inotify", "poll"),
    "log_format": ("auto", "json", "console"),
    "log_level": ("debug", "info", "warning", "error"),
}


@dataclass(frozen=True, kw_only=True)
class SyncerSettings:
    """What the syncer and its health server need. Defaults equal the declarations' (a test checks)."""

    config: Path
    server: str | None = None
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    health_check_timeout: float = 300.0
    health_check_interval: float = 2.0
    reconcile_trigger: float = 5.0
    config_validation: bool = True
    max_concurrency: int = 4
    prune: bool = False
    prune_max: str = "50%"
    base_model_policy: Literal["ignore", "warn", "enforce"] = "warn"
    allowed_sources: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    ready_when: Literal["started", "synced"] = "synced"
    watch: Literal["auto", "inotify", "poll"] = "auto"
    poll_interval: float = 1.0
    warmup: bool = False
    max_cpu_loras: int | None = None
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    call_timeout: float = 15.0
    load_timeout: float = 120.0
    shutdown_grace: float = 10.0
    adapter_cache: Path | None = None
    adapter_cache_max_bytes: int | None = None
    adapter_cache_gc_grace: float = 900.0
    download_concurrency: int = 4
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "config", Path(self.config))
        if self.adapter_cache is not None:
            set_(self, "adapter_cache", Path(self.adapter_cache))
        set_(self, "server", _server_url(self.server))
        set_(self, "allowed_sources", _split_sources(self.allowed_sources))
        for name, (low, high, open_low) in _BOUNDS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if low is not None and (value <= low if open_low else value < low):
                relation = "greater than" if open_low else "greater than or equal to"
                raise ValueError(f"{name}: Input should be {relation} {low:g}")
            if high is not None and value > high:
                raise ValueError(f"{name}: Input should be less than or equal to {high:g}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: Input should be {' or '.join(map(repr, allowed))}")


def _server_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server: {value!r} is not an http(s) URL like http://localhost:8000")
    problem = v1_suffix_problem(value)
    if problem is not None:
        raise ValueError(f"server: {problem}")
    return value.rstrip("/")


def _split_sources(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for item in value:  # type: ignore[attr-defined]
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return tuple(out)


# The proxy's section of `run` builds ProxyOptions, not these settings.
SYNCER_SECTIONS = tuple(section for section in RUN if section[0] != "rewrite proxy")


def syncer_settings_from_args(args: argparse.Namespace) -> SyncerSettings:
    """SyncerSettings from `run`'s resolved flags (already typed and checked one by one)."""
    values = {s.target: getattr(args, s.dest) for _, settings in SYNCER_SECTIONS for s in settings}
    values["api_key"] = values["api_key"] or None  # `--api-key ""` means none, as an empty variable does
    try:
        return SyncerSettings(**values)
    except ValueError as exc:  # only reachable if a declaration is laxer than the dataclass
        name, _, message = str(exc).partition(": ")
        fail(f"--{name.replace('_', '-')}: {message}")
