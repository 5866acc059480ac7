"""What the documentation tests check, discovered from the files and from the code.

From the Markdown files (every one in the repository; of CHANGELOG.md only the Unreleased
section, released sections being history): fenced code blocks, `lora-syncer` command lines,
`LORA_SYNCER_*` variables, `lora_syncer_*` metric names, relative links and repository paths,
each with the line it is on. From the code: the CLI's subcommands and flags (its real parsers),
the variables it reads (its `env_default`/`env_flag`/`env_name` calls and the names it spells
out) and the metrics it declares. Nothing here is a hand-kept list of names.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import io
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

from lora_syncer.cli import COMMANDS, build_parser
from lora_syncer.cliutil import ENV_PREFIX, env_name
from lora_syncer.options.commands import COMMAND_SECTIONS, command_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lora_syncer"
# Directories that are not the repository's own files (tool caches, environments, builds).
_NOT_OURS = {".git", "node_modules"}


def _ignored_patterns() -> list[str]:
    gitignore = ROOT / ".gitignore"
    if not gitignore.exists():
        return []
    lines = gitignore.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ours(path: Path) -> bool:
    patterns = _ignored_patterns()
    for part in path.relative_to(ROOT).parts:
        if part in _NOT_OURS or any(fnmatch.fnmatch(part, p) for p in patterns):
            return False
    return True


def markdown_files() -> list[Path]:
    """Every Markdown file of the repository."""
    return sorted(p for p in ROOT.rglob("*.md") if _ours(p))


def top_level_names() -> frozenset[str]:
    """The repository's top-level files and directories (what a repository path starts with)."""
    return frozenset(p.name for p in ROOT.iterdir() if _ours(p))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the text of a doc, line by line ---------------------------------------------------------


def checked_lines(doc: Path) -> list[tuple[int, str]]:
    """(line number, line) of the part of `doc` that must be true today.

    CHANGELOG.md: only its Unreleased section (from `## [Unreleased]` to the next `## `).
    """
    lines = list(enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1))
    if doc.name != "CHANGELOG.md":
        return lines
    out: list[tuple[int, str]] = []
    inside = False
    for number, line in lines:
        if line.startswith("## "):
            inside = line.lower().startswith("## [unreleased]")
            continue
        if inside:
            out.append((number, line))
    return out


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language (first word of the info string), first body line, body."""

    doc: Path
    line: int
    language: str
    body: str

    @property
    def id(self) -> str:
        return f"{rel(self.doc)}:{self.line}"


_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def fenced_blocks(doc: Path) -> list[Block]:
    """Every fenced code block of the checked part of `doc` (indented ones too, e.g. in lists)."""
    out: list[Block] = []
    lines = checked_lines(doc)
    i = 0
    while i < len(lines):
        number, line = lines[i]
        opening = _OPEN.match(line)
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        body: list[str] = []
        i += 1
        while i < len(lines):
            text = lines[i][1]
            stripped = text.strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            i += 1
        i += 1
        language = info.split()[0].lower() if info else ""
        out.append(Block(doc, number + 1, language, "\n".join(body) + ("\n" if body else "")))
    return out


def prose_lines(doc: Path) -> list[tuple[int, str]]:
    """The checked lines of `doc` outside fenced code blocks."""
    inside: set[int] = set()
    for block in fenced_blocks(doc):
        inside.update(range(block.line - 1, block.line + block.body.count("\n") + 1))
    return [(n, line) for n, line in checked_lines(doc) if n not in inside]


_SPAN = re.compile(r"(`+)(.+?)\1")


def code_spans(doc: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    return [(n, m.group(2).strip()) for n, line in prose_lines(doc) for m in _SPAN.finditer(line)]


# --- shell command lines ----------------------------------------------------------------------

SHELL_LANGUAGES = frozenset({"", "bash", "sh", "shell", "console", "shell-session", "zsh"})


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """The logical command lines of a shell block (continuations joined, `$ ` prompts removed).

    In a `console` block, and in a block with no language (often a diagram or output), only the
    `$ ` lines are commands.
    """
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(block.body.splitlines()):
        number = block.line + offset
        line = raw.rstrip()
        if pending is None:
            if block.language in ("console", ""):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif line.startswith("$ "):
                line = line[2:]
            pending = (number, "")
        text = pending[1] + line
        if text.endswith("\\"):
            pending = (pending[0], text[:-1] + " ")
            continue
        out.append((pending[0], text.strip()))
        pending = None
    if pending is not None:
        out.append((pending[0], pending[1].strip()))
    return out


_SEPARATORS = frozenset({"&&", "||", "|", ";", "&"})


def _words(command: str) -> list[list[str]] | None:
    """The simple commands of a shell line (comments dropped, split at `&&`, `|`, `;`)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return None
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _program(word: str) -> bool:
    """`lora-syncer`, or the installed script by its path (`.venv/bin/lora-syncer`)."""
    return word == "lora-syncer" or word.endswith("bin/lora-syncer")


def lora_syncer_invocation(words: list[str]) -> list[str] | None:
    """The arguments after `lora-syncer` (or `python -m lora_syncer`) in a simple command, if it runs it.

    Finds the program anywhere in the command (`kubectl exec ... -- lora-syncer plan ...`,
    `VAR=x lora-syncer run`), but not as an argument of a flag (`-c lora-syncer`).
    """
    for i, word in enumerate(words):
        if i > 0 and words[i - 1].startswith("-") and words[i - 1] not in ("--",):
            continue  # the value of a flag of another program
        if _program(word):
            return words[i + 1 :]
        if word == "-m" and i + 1 < len(words) and words[i + 1] == "lora_syncer":
            return words[i + 2 :]
    return None


@dataclass(frozen=True)
class Command:
    """A `lora-syncer` command line of a doc: where it is, its arguments, and whether it is complete."""

    doc: Path
    line: int
    args: tuple[str, ...]
    complete: bool  # from a code block (a line to run), not an inline span (a fragment)

    @property
    def id(self) -> str:
        return f"{rel(self.doc)}:{self.line}:{' '.join(self.args)[:60]}"


def commands(doc: Path) -> list[Command]:
    """Every `lora-syncer ...` command line of `doc`: in shell code blocks and in inline code spans."""
    out: list[Command] = []
    for block in fenced_blocks(doc):
        if block.language not in SHELL_LANGUAGES:
            continue
        for number, line in shell_lines(block):
            for words in _words(line) or []:
                args = lora_syncer_invocation(words)
                if args is not None:
                    out.append(Command(doc, number, tuple(args), True))
    for number, span in code_spans(doc):
        words = span.split()
        if len(words) >= 2 and _program(words[0]):
            out.append(Command(doc, number, tuple(words[1:]), False))
    return out


# --- what the code offers ---------------------------------------------------------------------


@cache
def command_parser(name: str) -> argparse.ArgumentParser:
    """The real parser of subcommand `name` (the one `lora-syncer NAME` parses with)."""
    for action in build_parser(only=name)._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError(f"no subparser {name!r}")


def subcommand_of(args: tuple[str, ...]) -> str:
    """The subcommand a `lora-syncer ARGS` line runs (flags with no subcommand mean `run`, as in cli.main)."""
    if args and args[0].startswith("--") and args[0] not in ("--help", "-h", "--version"):
        return "run"
    return args[0] if args else ""


def command_problem(command: Command) -> str | None:
    """Why the CLI would not accept `command` (None if it would).

    A complete line must parse with the subcommand's real parser; a fragment (an inline span
    such as `lora-syncer plan --config FILE [--server URL]`) must name a real subcommand and only
    flags that subcommand has.
    """
    name = subcommand_of(command.args)
    if name not in COMMANDS:
        return f"no subcommand {name!r}"
    args = list(command.args[1:]) if command.args[0] == name else list(command.args)
    if command.complete:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                command_parser(name).parse_args(args)
        except SystemExit as exc:
            return f"the CLI refuses it (exit {exc.code}): {stderr.getvalue().strip()}"
        return None
    known = options_of(name)
    flags = [w.strip("[]()|,.`").split("=", 1)[0] for w in args if w.lstrip("[(").startswith("-")]
    unknown = [f for f in flags if f and f != "--" and f not in known]
    return f"{name} has no {', '.join(unknown)}" if unknown else None


def options_of(name: str) -> frozenset[str]:
    """Every option string (`--config`, `-n`, ...) subcommand `name` accepts."""
    return frozenset(o for action in command_parser(name)._actions for o in action.option_strings)


def _python_files() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


_ENV_HELPERS = frozenset({"env_default", "env_flag", "env_name"})
_VARIABLE = re.compile(rf"{ENV_PREFIX}[A-Z0-9_]+")


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


class _RecordingEnviron(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False


def _looked_up_by_the_parsers() -> set[str]:
    """The variables the settings' declarations read, for every subcommand, plus any a parser
    looks up while it is built."""
    names = {v for command in COMMAND_SECTIONS for s in command_settings(command) for v in s.variables}
    recording = _RecordingEnviron()
    with mock.patch.object(os, "environ", recording):
        for name in COMMANDS:
            build_parser(only=name)
    return names | {n for n in recording.asked if n.startswith(ENV_PREFIX)}


@cache
def variables_read() -> frozenset[str]:
    """The `LORA_SYNCER_*` variables the code reads.

    Those the CLI's parsers look up while they are built (every flag default read from the
    environment), the package's `env_default`/`env_flag`/`env_name` calls on a constant flag
    (variables read later, when settings are validated), every string constant that is exactly
    such a name (variables the package reads by name), and the `${LORA_SYNCER_...}` the
    repository's scripts expand, and those setup.py reads.
    """
    names: set[str] = _looked_up_by_the_parsers()
    for _, tree in _python_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) in _ENV_HELPERS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(env_name(first.value))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _VARIABLE.fullmatch(node.value)
            ):
                names.add(node.value)
    for script in sorted((ROOT / "scripts").glob("*")):
        if script.is_file():
            text = script.read_text(encoding="utf-8", errors="replace")
            names.update(re.findall(rf"\$\{{?({ENV_PREFIX}[A-Z0-9_]+)", text))
    # setup.py reads the build's own variable (LORA_SYNCER_COMPILE) by name.
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _VARIABLE.fullmatch(node.value):
            names.add(node.value)
    return frozenset(names)


# prometheus_client's metric classes and the samples each exposes besides its own name.
_METRIC_SUFFIXES: dict[str, tuple[str, ...]] = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total", "_created"),
    "Gauge": (),
    "GaugeMetricFamily": (),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count", "_created"),
    # The proxy's lock-free per-request series (lora_syncer/proxy/metrics.py), same exposition.
    "HotCounter": ("_total", "_created"),
    "HotHistogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
    "SummaryMetricFamily": ("_sum", "_count", "_created"),
    "Info": ("_info",),
    "InfoMetricFamily": ("_info",),
    "Enum": (),
    "StateSetMetricFamily": (),
}


@cache
def declared_metrics() -> dict[str, str]:
    """Metric family name -> its class, from every metric the package declares (first argument a name)."""
    out: dict[str, str] = {}
    for _, tree in _python_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) in _METRIC_SUFFIXES and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    out[first.value] = _callee(node)
    return out


def metric_names() -> frozenset[str]:
    """Every sample name the declared metrics expose (`x`, `x_total`, `x_bucket`, ...)."""
    names: set[str] = set()
    for family, kind in declared_metrics().items():
        names.add(family)
        names.update(family + suffix for suffix in _METRIC_SUFFIXES[kind])
    return frozenset(names)
