"""The `lora-syncer` command line.

Each subcommand lives in its own module under `lora_syncer.commands` and exposes
`run(args) -> int`; its flags are declared in `lora_syncer.options`, which builds the parser
and reads the environment. Command modules are imported only when their command runs, so
`lora-syncer check` does not pay for the proxy or the emulator.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from lora_syncer import __version__
from lora_syncer.build import proxy_build
from lora_syncer.options.parser import SettingsParser, add_command_settings

# name -> (module, one-line help). Order is the order `--help` shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "lora_syncer.commands.run",
        "run the sidecar: syncer, health/metrics server and (with --rules) the proxy",
    ),
    "proxy": ("lora_syncer.commands.proxy", "run only the weighted rewrite proxy"),
    "check": ("lora_syncer.commands.check", "validate adapters files, rules files or ConfigMap manifests"),
    "plan": ("lora_syncer.commands.plan", "print what one reconcile pass would do, changing nothing"),
    "emulator": ("lora_syncer.commands.emulator", "run a vLLM-compatible emulator with fault injection"),
    "split-test": ("lora_syncer.commands.split_test", "send N chat requests and count the served model"),
    "demo": ("lora_syncer.commands.demo", "walk a whole LoRA canary rollout against an emulator"),
    "rollout": (
        "lora_syncer.commands.rollout",
        "`rollout status URL...`: the AdapterRollouts of one or many pods, side by side",
    ),
    "digest": (
        "lora_syncer.commands.digest",
        "print the sha256: checksum of an adapter directory or archive",
    ),
}


class CommandModule(Protocol):
    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> CommandModule:
    return cast(CommandModule, importlib.import_module(COMMANDS[name][0]))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = SettingsParser(
        prog="lora-syncer",
        description="Keep vLLM's LoRA adapters in line with a ConfigMap, and split traffic across them.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lora-syncer {__version__} (proxy: {proxy_build()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SettingsParser)
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            add_command_settings(sp, name)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    for token in argv:
        if token in COMMANDS:
            return token
        if not token.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen_command(args_list)
    if chosen is None and not args_list:
        # The old upstream image ran the syncer with no arguments at all: keep that working.
        args_list = ["run"]
        chosen = "run"
    elif (
        chosen is None and args_list[0].startswith("--") and args_list[0] not in ("--help", "-h", "--version")
    ):
        # Upstream flags without a subcommand (`--config X --reconcile-trigger 5`) mean `run`.
        args_list = ["run", *args_list]
        chosen = "run"
    parser = build_parser(only=chosen or "__none__")
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # usage errors (already printed, one line) and --help
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _load(args.command).run(args)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # a usage error found after parsing (printed already, one line)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code or 0
