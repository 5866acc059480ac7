"""`lora-syncer run`: the sidecar (syncer + health/metrics, and the proxy with --rules)."""

from __future__ import annotations

import argparse
from typing import Any

from lora_syncer.logs import configure_logging
from lora_syncer.settings import add_serving_arguments, add_syncer_arguments, syncer_settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_syncer_arguments(parser)
    add_serving_arguments(parser)
    from lora_syncer.proxy.service import add_proxy_arguments

    add_proxy_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = syncer_settings_from_args(args)
    configure_logging(settings.log_format, settings.log_level)
    proxy_options: Any = None
    if getattr(args, "rules", None):
        from lora_syncer.proxy.service import proxy_options_from_args

        upstream = settings.server or "http://localhost:8000"
        proxy_options = proxy_options_from_args(args, upstream)
    from lora_syncer.app import run_sidecar
    from lora_syncer.runtime import run_async

    return run_async(run_sidecar(settings, proxy_options))
