"""`lora-syncer run`: the sidecar (syncer + health/metrics, and the proxy with --rules)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lora_syncer.logs import configure_logging
from lora_syncer.options.parser import fail
from lora_syncer.settings import syncer_settings_from_args


def _server_from_file(path: Path) -> str:
    """Without --server the proxy forwards where the adapters file points (host/port), as the syncer does."""
    from lora_syncer.config.adapters import parse_adapters
    from lora_syncer.config.errors import ConfigError
    from lora_syncer.config.source import read_file

    try:
        return parse_adapters(read_file(path), str(path)).server_url
    except (ConfigError, OSError):
        return "http://localhost:8000"  # the file's defaults; the syncer reports the file's problem


def run(args: argparse.Namespace) -> int:
    settings = syncer_settings_from_args(args)
    if settings.adapter_cache is not None and settings.adapter_cache_gc_grace < args.upstream_timeout:
        # A request queued through the proxy may still read a version vLLM no longer lists.
        fail(
            f"--adapter-cache-gc-grace {settings.adapter_cache_gc_grace:g} is shorter than --upstream-timeout "
            f"{args.upstream_timeout:g}: queued requests may still read an unlisted version; raise the grace"
        )
    proxy_options: Any = None
    if args.rules:
        from lora_syncer.proxy.options import proxy_options_from_args

        try:
            proxy_options = proxy_options_from_args(
                args, settings.server or _server_from_file(settings.config)
            )
        except ValueError as exc:  # settings that contradict each other
            fail(str(exc))
    configure_logging(settings.log_format, settings.log_level)  # after the checks: a usage error logs nothing
    from lora_syncer.app import run_sidecar
    from lora_syncer.runtime import run_async

    # uvloop only when this process serves the proxy (see run_async).
    return run_async(run_sidecar(settings, proxy_options), fast_loop=proxy_options is not None)
