"""`lora-syncer demo`: the LoRA Adapter Rollout guide, end to end, on this machine.

Exit codes: 0 every step held; 1 a step did not hold (the message names it); 2 usage errors,
including `--real-vllm` without the real-vLLM environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

from lora_syncer.cliutil import env_default, env_flag
from lora_syncer.demo.render import ColorMode, TerminalReporter, use_color
from lora_syncer.demo.walkthrough import DemoOptions, DemoResult, walk
from lora_syncer.logs import configure_logging
from lora_syncer.realvllm.launcher import SETUP_HINT, default_venv, find_venv

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lora-syncer demo`."""
    parser.add_argument(
        "--real-vllm",
        action=argparse.BooleanOptionalAction,
        default=env_flag("--real-vllm", False),
        help=f"walk against a real CPU vLLM (needs the environment from {SETUP_HINT}) instead of the emulator",
    )
    parser.add_argument(
        "--step",
        action=argparse.BooleanOptionalAction,
        default=env_flag("--step", False),
        help="pause before each step until Enter is pressed (no pause without a terminal on stdin)",
    )
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default=env_default("--color", "auto"),
        help="colour output: auto = on a terminal unless NO_COLOR is set (default: auto)",
    )
    parser.add_argument(
        "--converge-timeout",
        type=float,
        default=env_default("--converge-timeout"),  # argparse applies `type` to a string default
        help="seconds each step may take to be acted on (default: 10, or 180 with --real-vllm)",
    )
    parser.add_argument(
        "--verbose",
        action=argparse.BooleanOptionalAction,
        default=env_flag("--verbose", False),
        help="also print the sidecar's own log lines (to stderr)",
    )
    # Tests only: make the model server fail every call during the named step.
    parser.add_argument("--inject-fault", metavar="STEP", default=None, help=argparse.SUPPRESS)


async def _press_enter(out: TextIO) -> None:
    """Wait for Enter on a terminal; without one (CI, pipes) carry on at once."""
    stdin = sys.stdin
    try:
        interactive = stdin is not None and stdin.isatty()
    except ValueError:
        interactive = False
    if not interactive:
        return
    out.write("\n  -- press Enter for the next step (Ctrl-C stops) --")
    out.flush()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        stdin.readline()
        if not done.done():
            done.set_result(None)

    try:
        loop.add_reader(stdin.fileno(), readable)
    except (NotImplementedError, OSError, ValueError):
        await asyncio.to_thread(stdin.readline)
        return
    try:
        await done
    finally:
        loop.remove_reader(stdin.fileno())


def _converge_timeout(args: argparse.Namespace) -> float:
    value: float | None = args.converge_timeout
    if value is None:
        return 180.0 if args.real_vllm else 10.0
    if value <= 0:
        raise SystemExit("lora-syncer demo: --converge-timeout must be positive")
    return value


async def demo_main(
    options: DemoOptions, out: TextIO, *, color: ColorMode = "auto", animate: bool | None = None
) -> tuple[int, DemoResult]:
    """Run the walk writing to `out`; returns the exit code and the result (what tests call)."""
    reporter = TerminalReporter(out, color=use_color(out, color), animate=animate)
    result = await walk(reporter, options)
    return (EXIT_OK if result.ok else EXIT_FAILED), result


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.real_vllm and find_venv() is None:
        print(
            f"lora-syncer demo --real-vllm: the real vLLM environment is not ready at {default_venv()}.\n"
            f"Create it with: {SETUP_HINT}   (or set LORA_SYNCER_VLLM_VENV to an existing one),\n"
            "or run `lora-syncer demo` without --real-vllm to use the emulator.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.inject_fault is not None and args.real_vllm:
        print("lora-syncer demo: --inject-fault works with the emulator only", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("console" if args.verbose else "auto", "info" if args.verbose else "error")
    options = DemoOptions(
        real_vllm=args.real_vllm,
        converge_timeout=_converge_timeout(args),
        request_timeout=120.0 if args.real_vllm else 30.0,
        fault_step=args.inject_fault,
        pause=(lambda: _press_enter(out)) if args.step else None,
    )
    try:
        code, _ = asyncio.run(demo_main(options, out, color=args.color))
    except KeyError as exc:
        print(f"lora-syncer demo: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(BrokenPipeError):
        out.flush()
    return code
