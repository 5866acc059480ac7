"""Settings of `lora-syncer run`'s syncer, typed and validated (flags and variables: `lora_syncer.options`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lora_syncer.options.commands import RUN
from lora_syncer.options.parser import fail
from lora_syncer.options.shared import DEFAULT_CONFIG
from lora_syncer.sync.vllm_client import v1_suffix_problem

__all__ = ["DEFAULT_CONFIG", "SyncerSettings", "syncer_settings_from_args"]


class SyncerSettings(BaseModel):
    """What the syncer and its health server need. Defaults equal the declarations' (a test checks)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: Path
    server: str | None = None
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(8080, ge=0, le=65535)
    health_check_timeout: float = Field(300.0, ge=0)
    health_check_interval: float = Field(2.0, gt=0)
    reconcile_trigger: float = Field(5.0, gt=0)
    config_validation: bool = True
    max_concurrency: int = Field(4, ge=1, le=256)
    prune: bool = False
    prune_max: str = "50%"
    base_model_policy: Literal["ignore", "warn", "enforce"] = "warn"
    allowed_sources: tuple[str, ...] = ()
    api_key: str | None = Field(default=None, repr=False)
    ready_when: Literal["started", "synced"] = "synced"
    watch: Literal["auto", "inotify", "poll"] = "auto"
    poll_interval: float = Field(1.0, gt=0)
    warmup: bool = False
    max_cpu_loras: int | None = Field(None, ge=1)
    backoff_initial: float = Field(5.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    call_timeout: float = Field(15.0, gt=0)
    load_timeout: float = Field(120.0, gt=0)
    shutdown_grace: float = Field(10.0, ge=0)
    adapter_cache: Path | None = None
    adapter_cache_max_bytes: int | None = Field(default=None, ge=1)
    adapter_cache_gc_grace: float = Field(900.0, gt=0)
    download_concurrency: int = Field(4, ge=1, le=64)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("server")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "://" not in value:
            value = "http://" + value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL like http://localhost:8000")
        problem = v1_suffix_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("allowed_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            out: list[str] = []
            for item in value:
                out.extend(p.strip() for p in str(item).split(",") if p.strip())
            return tuple(out)
        return value


# The proxy's section of `run` builds ProxyOptions, not these settings.
SYNCER_SECTIONS = tuple(section for section in RUN if section[0] != "rewrite proxy")


def syncer_settings_from_args(args: argparse.Namespace) -> SyncerSettings:
    """SyncerSettings from `run`'s resolved flags (already typed and checked one by one)."""
    values = {s.target: getattr(args, s.dest) for _, settings in SYNCER_SECTIONS for s in settings}
    values["api_key"] = values["api_key"] or None  # `--api-key ""` means none, as an empty variable does
    try:
        return SyncerSettings.model_validate(values)
    except ValidationError as exc:  # only reachable if a declaration is laxer than the model
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "settings"
        fail(f"{flag}: {err['msg']}")
