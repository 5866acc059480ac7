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

from lora_syncer.cliutil import env_default, env_flag, env_name
from lora_syncer.emulator import DEFAULT_SERVED_MODEL_NAME, Emulator, EmulatorConfig, parse_lora_modules
from lora_syncer.emulator.faults import ENDPOINTS, FAILURE_MODES, Faults, parse_pairs
from lora_syncer.logs import configure_logging


def _env_list(flag: str) -> list[str]:
    raw = env_default(flag)
    return [item for item in (raw or "").replace(",", " ").split() if item]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean: use true or false")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lora-syncer emulator`."""
    endpoints = ", ".join(["*", *ENDPOINTS])
    parser.add_argument("--host", default=env_default("--host", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--port", type=int, default=int(env_default("--port", "8000") or 8000), help="port")
    parser.add_argument(
        "--served-model-name",
        nargs="+",
        default=_env_list("--served-model-name") or [DEFAULT_SERVED_MODEL_NAME],
        metavar="NAME",
        help="base model name(s); the first is the one answers carry and adapters' parent",
    )
    parser.add_argument(
        "--model", default=env_default("--model"), help="base model `root` (default: the name)"
    )
    parser.add_argument(
        "--version", default=env_default("--version", "0.32.0"), help="vLLM version to report"
    )
    parser.add_argument(
        "--max-lora-rank",
        type=int,
        default=int(env_default("--max-lora-rank", "16") or 16),
        help="highest rank",
    )
    parser.add_argument(
        "--max-loras",
        type=int,
        default=int(env_default("--max-loras", "1") or 1),
        help="as vLLM's --max-loras; reported in /metrics (vllm:lora_requests_info max_lora)",
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=int(env_default("--max-model-len", "4096") or 4096),
        help="context",
    )
    parser.add_argument(
        "--lora-modules",
        nargs="+",
        action="extend",
        default=_env_list("--lora-modules"),
        metavar="NAME=PATH",
        help="adapters present at start and after every restart",
    )
    parser.add_argument(
        "--latency",
        action="append",
        default=_env_list("--latency"),
        metavar="ENDPOINT=SECONDS",
        help=f"added latency per endpoint ({endpoints} or a route path)",
    )
    parser.add_argument(
        "--failure-rate",
        action="append",
        default=_env_list("--failure-rate"),
        metavar="ENDPOINT=RATE",
        help="probability (0..1) that a request to the endpoint fails",
    )
    parser.add_argument(
        "--failure-mode",
        choices=FAILURE_MODES,
        default=env_default("--failure-mode", "500"),
        help="500: InternalServerError JSON; drop: close the connection; drop_after: act, then close",
    )
    parser.add_argument(
        "--load-delay",
        type=float,
        default=float(env_default("--load-delay", "0") or 0),
        help="seconds per load",
    )
    parser.add_argument(
        "--unload-delay",
        type=float,
        default=float(env_default("--unload-delay", "0") or 0),
        help="per unload",
    )
    parser.add_argument(
        "--token-delay",
        type=float,
        default=float(env_default("--token-delay", "0") or 0),
        help="per SSE chunk",
    )
    parser.add_argument(
        "--runtime-lora-updating",
        type=_bool,
        default=_bool(
            env_default("--runtime-lora-updating", "true", "VLLM_ALLOW_RUNTIME_LORA_UPDATING") or "true"
        ),
        metavar="true|false",
        help="false: the load/unload routes answer 404 like a vLLM started without runtime updating",
    )
    parser.add_argument(
        "--no-hub-ids",
        action="store_true",
        default=env_flag("--no-hub-ids"),
        help="refuse org/name sources that do not exist locally (404), as an offline vLLM does",
    )
    parser.add_argument(
        "--require-weights",
        action="store_true",
        default=env_flag("--require-weights"),
        help="local adapters also need adapter_model.safetensors (or .bin)",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        default=env_flag("--embeddings"),
        help="serve POST /v1/embeddings",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the failure-rate dice")
    parser.add_argument(
        "--access-log", action="store_true", default=env_flag("--access-log"), help="log every request"
    )
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], default=env_default("--log-format", "auto")
    )
    parser.add_argument("--log-level", default=env_default("--log-level", "info"))


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the emulator configuration from parsed flags; raises `ValueError` with a readable message."""
    faults = Faults(
        latency=parse_pairs(args.latency, "--latency"),
        failure_rate=parse_pairs(args.failure_rate, "--failure-rate"),
        failure_mode=args.failure_mode,
        load_delay=args.load_delay,
        unload_delay=args.unload_delay,
        token_delay=args.token_delay,
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
