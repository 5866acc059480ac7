"""How the demo looks on a terminal: colour and a spinner on a TTY, plain text otherwise.

The walkthrough calls a `Reporter`; `TerminalReporter` draws it. The table and diff formatters
are pure functions of their input, so tests check the text without a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal, Protocol, TextIO

from lora_syncer.demo.checks import Split
from lora_syncer.demo.steps import Step

ColorMode = Literal["auto", "always", "never"]

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
BAR_WIDTH = 20


def use_color(stream: TextIO, mode: ColorMode = "auto", env: Mapping[str, str] | None = None) -> bool:
    """Colour on a TTY unless NO_COLOR is set (https://no-color.org) or TERM=dumb; `always`/`never` win."""
    if mode != "auto":
        return mode == "always"
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Style:
    """ANSI styling that turns into plain text when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def format_diff(lines: Sequence[str], style: Style) -> list[str]:
    """Colour a unified diff: additions green, removals red, hunk headers cyan."""
    out: list[str] = []
    for line in lines:
        if line.startswith(("+++", "---")):
            out.append(style(line, "bold"))
        elif line.startswith("@@"):
            out.append(style(line, "cyan"))
        elif line.startswith("+"):
            out.append(style(line, "green"))
        elif line.startswith("-"):
            out.append(style(line, "red"))
        else:
            out.append(line)
    return out


def bar(count: int, total: int, width: int = BAR_WIDTH, *, unicode: bool = True) -> str:
    """A bar of `width` cells filled in proportion to count/total (`#`/`.` in plain text)."""
    filled = round(width * count / total) if total else 0
    full, empty = ("█", "░") if unicode else ("#", ".")
    return full * filled + empty * (width - filled)


def format_split_table(
    split: Split, expected: Mapping[str, int], style: Style, *, unicode: bool = True
) -> list[str]:
    """The split as a table: one row per model (expected ones first), count, share, bar, verdict."""
    names = list(expected) + [n for n in split.counts if n not in expected]
    width = max([len(n) for n in names] + [len("model")])
    rows = [style(f"{'model':<{width}}  {'requests':>8}  {'share':>5}  {'':<{BAR_WIDTH}}  expected", "dim")]
    for name in names:
        got = split.counts.get(name, 0)
        share = f"{100 * got / split.total:.0f}%" if split.total else "-"
        want = expected.get(name)
        ok = want is not None and got == want
        verdict = style("✓" if unicode else "ok", "green") if ok else style("✗" if unicode else "NO", "red")
        colour = "green" if ok else "red"
        rows.append(
            f"{name:<{width}}  {got:>8}  {share:>5}  {style(bar(got, split.total, unicode=unicode), colour)}"
            f"  {'-' if want is None else want:>8} {verdict}"
        )
    for reason, n in split.errors.items():
        rows.append(style(f"{'failed: ' + reason:<{width}}  {n:>8}", "red"))
    return rows


class Progress(Protocol):
    """A line that says what is being waited for; on a TTY it spins and can be updated."""

    def update(self, text: str) -> None: ...


class Reporter(Protocol):
    """What the walkthrough tells the user; `TerminalReporter` draws it."""

    def title(self, text: str) -> None: ...

    def header(self, facts: Sequence[tuple[str, str]]) -> None: ...

    def step(self, index: int, total: int, step: Step) -> None: ...

    def edit(self, command: str, path: str, diff: Sequence[str]) -> None: ...

    def waiting(self, label: str) -> contextlib.AbstractAsyncContextManager[Progress]: ...

    def adapters(
        self, rows: Sequence[tuple[str, str, Sequence[str], str | None]], served: Sequence[str]
    ) -> None: ...

    def rules(self, alias: str, targets: Mapping[str, int]) -> None: ...

    def split(self, alias: str, split: Split, expected: Mapping[str, int]) -> None: ...

    def verdict(self, failures: Sequence[str], what: str) -> None: ...

    def note(self, text: str) -> None: ...

    def summary(
        self,
        ok: bool,
        failed_step: Step | None,
        failures: Sequence[str],
        seconds: float,
        *,
        where: str | None = None,
    ) -> None: ...


class _Line:
    """The progress line: spins on a TTY, prints once (when done) otherwise."""

    def __init__(self, reporter: TerminalReporter, label: str) -> None:
        self.reporter = reporter
        self.label = label
        self.text = ""

    def update(self, text: str) -> None:
        self.text = text


class TerminalReporter:
    """Writes the walkthrough to `stream`: colour/spinner on a TTY, plain lines elsewhere."""

    def __init__(self, stream: TextIO, *, color: bool, animate: bool | None = None) -> None:
        self.stream = stream
        self.style = Style(color)
        self.animate = _isatty(stream) if animate is None else animate
        # Unicode bars and marks where a human looks at a colour terminal; ASCII in logs and pipes.
        self.unicode = color or self.animate

    # -- plumbing ----------------------------------------------------------------------------

    def _print(self, text: str = "", indent: int = 0) -> None:
        prefix = " " * indent
        self.stream.write("\n".join(prefix + line if line else line for line in text.split("\n")) + "\n")
        self.stream.flush()

    @property
    def _ok(self) -> str:
        return self.style("✓" if self.unicode else "ok", "green")

    @property
    def _fail(self) -> str:
        return self.style("✗" if self.unicode else "FAIL", "red")

    # -- Reporter ------------------------------------------------------------------------------

    def title(self, text: str) -> None:
        self._print(self.style(text, "bold"))

    def header(self, facts: Sequence[tuple[str, str]]) -> None:
        width = max((len(k) for k, _ in facts), default=0)
        for key, value in facts:
            self._print(f"{self.style(f'{key:<{width}}', 'dim')}  {value}", 2)

    def step(self, index: int, total: int, step: Step) -> None:
        self._print()
        head = f"[{index}/{total}] {step.title}"
        self._print(self.style(head, "bold", "blue") + self.style(f"   (guide: {step.guide})", "dim"))

    def edit(self, command: str, path: str, diff: Sequence[str]) -> None:
        self._print(f"{self.style('$', 'dim')} {command}", 2)
        self._print(self.style(f"(written the way kubelet updates the volume: {path})", "dim"), 4)
        for line in format_diff(diff, self.style):
            self._print(line, 4)

    @contextlib.asynccontextmanager
    async def waiting(self, label: str) -> AsyncIterator[Progress]:
        line = _Line(self, label)
        started = time.monotonic()
        spinner: asyncio.Task[None] | None = None
        if self.animate:
            spinner = asyncio.create_task(self._spin(line, started), name="demo-spinner")
        ok = False
        try:
            yield line
            ok = True
        finally:
            if spinner is not None:
                spinner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await spinner
                self.stream.write("\r\x1b[2K")
            took = time.monotonic() - started
            mark = self._ok if ok else self._fail
            extra = f" {line.text}" if line.text else ""
            self._print(f"{mark} {label}{extra} {self.style(f'({took:.2f} s)', 'dim')}", 2)

    async def _spin(self, line: _Line, started: float) -> None:
        frame = 0
        while True:
            took = time.monotonic() - started
            glyph = self.style(SPINNER[frame % len(SPINNER)], "cyan")
            self.stream.write(
                f"\r\x1b[2K  {glyph} {line.label} {line.text} {self.style(f'{took:.1f} s', 'dim')}"
            )
            self.stream.flush()
            frame += 1
            await asyncio.sleep(0.08)

    def adapters(
        self, rows: Sequence[tuple[str, str, Sequence[str], str | None]], served: Sequence[str]
    ) -> None:
        width = max((len(name) for name, *_ in rows), default=0)
        for name, declared, history, error in rows:
            states = " → " if self.unicode else " -> "
            path = states.join(history)
            colour = "green" if history and history[-1] in ("loaded", "absent") else "yellow"
            if history and history[-1] == "failed":
                colour = "red"
            text = f"{name:<{width}}  {self.style(f'{declared:<7}', 'dim')}  {self.style(path, colour)}"
            if error:
                text += self.style(f"  ({error})", "red")
            self._print(text, 4)
        self._print(
            f"{self.style('GET /v1/models (adapters):', 'dim')} {', '.join(served) or '(nothing)'}", 4
        )

    def rules(self, alias: str, targets: Mapping[str, int]) -> None:
        total = sum(targets.values())
        shares = ", ".join(f"{name} {100 * w / total:.0f}%" if total else name for name, w in targets.items())
        self._print(f"{self.style('proxy rules in force:', 'dim')} {alias} → {shares}"
                    if self.unicode else f"proxy rules in force: {alias} -> {shares}", 4)  # fmt: skip

    def split(self, alias: str, split: Split, expected: Mapping[str, int]) -> None:
        self._print(f"{split.total} requests for model {alias!r} through the proxy:", 4)
        for row in format_split_table(split, expected, self.style, unicode=self.unicode):
            self._print(row, 6)

    def verdict(self, failures: Sequence[str], what: str) -> None:
        if not failures:
            self._print(f"{self._ok} {what}", 2)
            return
        for failure in failures:
            self._print(f"{self._fail} {self.style(failure, 'red')}", 2)

    def note(self, text: str) -> None:
        self._print(self.style(text, "dim"), 2)

    def summary(
        self,
        ok: bool,
        failed_step: Step | None,
        failures: Sequence[str],
        seconds: float,
        *,
        where: str | None = None,
    ) -> None:
        """`where` names the failing stage when it is not a step of the guide (`demo --rollout`)."""
        self._print()
        if ok:
            self._print(self.style(f"Every step held ({seconds:.1f} s).", "bold", "green"))
            return
        if failed_step is not None:
            where = f"step {failed_step.id!r} ({failed_step.title})"
        where = where or "setting up"
        self._print(self.style(f"FAILED at {where}:", "bold", "red"))
        for failure in failures:
            self._print(f"- {failure}", 2)
