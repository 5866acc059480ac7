"""`lora-syncer demo`: the LoRA Adapter Rollout guide, end to end, on this machine.

`--rollout` shows automated AdapterRollouts instead (`lora_syncer.demo.rollout`).

Exit codes: 0 every step held; 1 a step did not hold (the message names it); 2 usage errors,
including `--real-vllm` without the real-vLLM environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

from lora_syncer.demo.render import ColorMode, TerminalReporter, use_color
from lora_syncer.demo.rollout import RolloutDemoResult, rollout_walk
from lora_syncer.demo.walkthrough import DemoOptions, DemoResult, walk
from lora_syncer.logs import configure_logging
from lora_syncer.realvllm.launcher import SETUP_HINT, default_venv, find_venv

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    value: float | None = args.converge_timeout  # positive when given (checked at parsing)
    if value is None:
        return 180.0 if args.real_vllm else 10.0
    return value


async def demo_main(
    options: DemoOptions, out: TextIO, *, color: ColorMode = "auto", animate: bool | None = None
) -> tuple[int, DemoResult]:
    """Run the walk writing to `out`; returns the exit code and the result (what tests call)."""
    reporter = TerminalReporter(out, color=use_color(out, color), animate=animate)
    result = await walk(reporter, options)
    return (EXIT_OK if result.ok else EXIT_FAILED), result


async def rollout_demo_main(
    options: DemoOptions, out: TextIO, *, color: ColorMode = "auto", animate: bool | None = None
) -> tuple[int, RolloutDemoResult]:
    """`demo --rollout` writing to `out`; returns the exit code and the result (what tests call)."""
    reporter = TerminalReporter(out, color=use_color(out, color), animate=animate)
    result = await rollout_walk(reporter, options)
    return (EXIT_OK if result.ok else EXIT_FAILED), result


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.rollout and (args.real_vllm or args.step or args.inject_fault is not None):
        print(
            "lora-syncer demo: --rollout runs against the emulator on its own; "
            "drop --real-vllm, --step and --inject-fault",
            file=sys.stderr,
        )
        return EXIT_USAGE
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
    if args.rollout:
        code, _ = asyncio.run(rollout_demo_main(options, out, color=args.color))
        with contextlib.suppress(BrokenPipeError):
            out.flush()
        return code
    try:
        code, _ = asyncio.run(demo_main(options, out, color=args.color))
    except KeyError as exc:
        print(f"lora-syncer demo: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(BrokenPipeError):
        out.flush()
    return code
