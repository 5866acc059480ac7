"""`lora-syncer emulator`: run the vLLM emulator until SIGTERM/SIGINT.

Every flag also reads `LORA_SYNCER_<FLAG>`; list flags take a comma-separated value there
(`LORA_SYNCER_LATENCY="chat=0.05,models=0.01"`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from lora_syncer.cliutil import env_name
from lora_syncer.emulator import Emulator, EmulatorConfig, parse_lora_modules
from lora_syncer.emulator.faults import Faults, parse_pairs
from lora_syncer.emulator.model_faults import parse_model_fault_flags
from lora_syncer.logs import configure_logging


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the emulator configuration from parsed flags; raises `ValueError` with a readable message."""
    faults = Faults(
        latency=parse_pairs(args.latency, "--latency"),
        failure_rate=parse_pairs(args.failure_rate, "--failure-rate"),
        failure_mode=args.failure_mode,
        load_delay=args.load_delay,
        unload_delay=args.unload_delay,
        token_delay=args.token_delay,
        models=parse_model_fault_flags(args.model_fault),
    )
    # Reuse the control API's validation (ranges, non-negative delays).
    Faults().update(faults.to_dict())
    names: list[str] = args.served_model_name
    return EmulatorConfig(
        served_model_name=names[0],
        served_model_aliases=tuple(names[1:]),
        model=args.model,
        version=args.version,
        max_lora_rank=args.max_lora_rank,
        max_loras=args.max_loras,
        max_model_len=args.max_model_len,
        runtime_lora_updating=args.runtime_lora_updating,
        allow_hub_ids=not args.no_hub_ids,
        require_weights=args.require_weights,
        enable_embeddings=args.embeddings,
        lora_modules=parse_lora_modules(args.lora_modules),
        seed=args.seed,
        access_log=args.access_log,
        faults=faults,
    )


async def serve(config: EmulatorConfig, host: str, port: int) -> int:
    """Run the emulator until SIGTERM or SIGINT; 0 on a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emulator = Emulator(config)
    try:
        await emulator.start(host, port)
        print(f"vLLM emulator listening on {emulator.url}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await emulator.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `lora-syncer emulator`."""
    configure_logging(args.log_format, args.log_level)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"lora-syncer emulator: {exc}", file=sys.stderr)
        return 2
    runner: contextlib.AbstractContextManager[asyncio.Runner]
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is optional (the `fast` extra)
        runner = asyncio.Runner()
    try:
        with runner as r:
            return r.run(serve(config, args.host, args.port))
    except ValueError as exc:  # a bad --lora-modules entry
        print(f"lora-syncer emulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lora-syncer emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        print(f"(set another port with --port or {env_name('--port')})", file=sys.stderr)
        return 1
