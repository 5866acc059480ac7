"""Settings of `lora-syncer run`, validated once at the edge (flags and environment)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lora_syncer.cliutil import env_default, env_flag, env_name

DEFAULT_CONFIG = "/config/configmap.yaml"


class SyncerSettings(BaseModel):
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
    base_model_policy: Literal["ignore", "warn", "enforce"] = "warn"
    allowed_sources: tuple[str, ...] = ()
    api_key: str | None = Field(default=None, repr=False)
    ready_when: Literal["started", "synced"] = "synced"
    watch: Literal["auto", "inotify", "poll"] = "auto"
    poll_interval: float = Field(1.0, gt=0)
    backoff_initial: float = Field(5.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    call_timeout: float = Field(15.0, gt=0)
    load_timeout: float = Field(120.0, gt=0)
    shutdown_grace: float = Field(10.0, ge=0)
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


def _num(flag: str, default: str) -> str:
    return env_default(flag, default) or default


def add_syncer_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the syncer side of `run` (and of `plan` where they apply)."""
    g = parser.add_argument_group("adapters file and server")
    g.add_argument(
        "--config",
        default=env_default("--config", DEFAULT_CONFIG, "DYNAMIC_LORA_ROLLOUT_CONFIG"),
        help=f"adapters file (vLLMLoRAConfig); env {env_name('--config')} or DYNAMIC_LORA_ROLLOUT_CONFIG "
        f"(default: {DEFAULT_CONFIG})",
    )
    g.add_argument(
        "--server",
        default=env_default("--server"),
        help="vLLM base URL, overriding the file's host/port (e.g. http://127.0.0.1:8000)",
    )
    g.add_argument(
        "--api-key",
        default=env_default("--api-key", None, "VLLM_API_KEY"),
        help="sent to vLLM as 'Authorization: Bearer'; env VLLM_API_KEY also works. Never logged",
    )
    s = parser.add_argument_group("reconciling")
    s.add_argument("--reconcile-trigger", type=float, default=float(_num("--reconcile-trigger", "5")),
                   help="seconds between periodic resync passes (default: 5)")  # fmt: skip
    s.add_argument("--health-check-timeout", type=float, default=float(_num("--health-check-timeout", "300")),
                   help="seconds to wait for vLLM's /health at start-up before retrying with backoff (default: 300)")  # fmt: skip
    s.add_argument("--health-check-interval", type=float, default=float(_num("--health-check-interval", "2")),
                   help="seconds between /health probes while waiting (default: 2)")  # fmt: skip
    s.add_argument(
        "--config-validation",
        action=argparse.BooleanOptionalAction,
        default=env_flag("--config-validation", True),
        help="accepted for compatibility with the old sidecar; the file is always validated",
    )
    s.add_argument("--max-concurrency", type=int, default=int(_num("--max-concurrency", "4")),
                   help="load/unload calls in flight at once (default: 4)")  # fmt: skip
    s.add_argument("--prune", action=argparse.BooleanOptionalAction, default=env_flag("--prune", False),
                   help="also unload adapters the server has that ensureExist does not declare")  # fmt: skip
    s.add_argument("--base-model-policy", choices=["ignore", "warn", "enforce"],
                   default=env_default("--base-model-policy", "warn"),
                   help="adapters whose base model this server does not serve: load anyway (ignore), "
                   "load and warn (warn, default), or skip (enforce)")  # fmt: skip
    s.add_argument("--allowed-sources", action="append", default=None,
                   help="allowed adapter sources: a prefix (a hub org like 'myorg/' or a directory like "
                   "'/adapters/'), or 're:<regex>'; repeat or comma-separate. Others are refused")  # fmt: skip
    s.add_argument("--backoff-initial", type=float, default=float(_num("--backoff-initial", "5")),
                   help="first retry delay for a failing adapter, doubling per failure (default: 5)")  # fmt: skip
    s.add_argument("--backoff-max", type=float, default=float(_num("--backoff-max", "300")),
                   help="longest retry delay for a failing adapter (default: 300)")  # fmt: skip
    s.add_argument("--call-timeout", type=float, default=float(_num("--call-timeout", "15")),
                   help="seconds to wait for vLLM to answer a call (default: 15)")  # fmt: skip
    s.add_argument("--load-timeout", type=float, default=float(_num("--load-timeout", "120")),
                   help="seconds to wait for one adapter load (default: 120)")  # fmt: skip
    s.add_argument("--watch", choices=["auto", "inotify", "poll"], default=env_default("--watch", "auto"),
                   help="how to notice file changes (default: auto = inotify, polling where unavailable)")  # fmt: skip
    s.add_argument("--poll-interval", type=float, default=float(_num("--poll-interval", "1")),
                   help="seconds between file checks when polling (default: 1)")  # fmt: skip


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("health, metrics and process")
    g.add_argument("--metrics-port", type=int, default=int(_num("--metrics-port", "8080")),
                   help="port of /healthz, /readyz, /status and /metrics (default: 8080)")  # fmt: skip
    g.add_argument("--metrics-host", default=env_default("--metrics-host", "0.0.0.0"),
                   help="address the health/metrics server binds (default: 0.0.0.0)")  # fmt: skip
    g.add_argument("--ready-when", choices=["started", "synced"], default=env_default("--ready-when", "synced"),
                   help="/readyz: 200 once started, or once every loadable declared adapter is loaded (default)")  # fmt: skip
    g.add_argument("--shutdown-grace", type=float, default=float(_num("--shutdown-grace", "10")),
                   help="seconds in-flight calls and requests get to finish on SIGTERM (default: 10)")  # fmt: skip
    g.add_argument("--log-format", choices=["auto", "json", "console"], default=env_default("--log-format", "auto"),
                   help="auto: JSON lines unless stderr is a terminal")  # fmt: skip
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   default=env_default("--log-level", "info"))  # fmt: skip


def syncer_settings_from_args(args: argparse.Namespace) -> SyncerSettings:
    """Validate once; a bad value is a clean exit with the flag named, not a traceback."""
    sources = args.allowed_sources
    if sources is None:
        env = env_default("--allowed-sources")
        sources = [env] if env else []
    values = {
        "config": args.config,
        "server": args.server,
        "metrics_host": args.metrics_host,
        "metrics_port": args.metrics_port,
        "health_check_timeout": args.health_check_timeout,
        "health_check_interval": args.health_check_interval,
        "reconcile_trigger": args.reconcile_trigger,
        "config_validation": args.config_validation,
        "max_concurrency": args.max_concurrency,
        "prune": args.prune,
        "base_model_policy": args.base_model_policy,
        "allowed_sources": sources,
        "api_key": args.api_key or None,
        "ready_when": args.ready_when,
        "watch": args.watch,
        "poll_interval": args.poll_interval,
        "backoff_initial": args.backoff_initial,
        "backoff_max": args.backoff_max,
        "call_timeout": args.call_timeout,
        "load_timeout": args.load_timeout,
        "shutdown_grace": args.shutdown_grace,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    try:
        return SyncerSettings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "settings"
            lines.append(f"{flag}: {err['msg']}")
        raise SystemExit("lora-syncer: invalid settings:\n  " + "\n  ".join(lines)) from None
