"""A small reader for the project's Dockerfile: instructions grouped by build stage, enough for the
packaging tests to check what the image runs and to rebuild its Python environment outside Docker."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, keyword upper-cased, continuation lines joined."""

    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT/CMD; fails if the shell form was used."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(p) for p in parsed]


@dataclass
class Stage:
    """A build stage: its FROM line, optional name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        """The last instruction with this keyword (the one in force)."""
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV settings of this stage (`ENV A=1 B=2` form)."""
        out: dict[str, str] = {}
        for inst in self.all("ENV"):
            for token in shlex.split(inst.value):
                key, _, value = token.partition("=")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    """Global ARGs and the stages, in order."""

    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage the image is made of."""
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        """A stage by its `AS name`."""
        return next(s for s in self.stages if s.name == name)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> Dockerfile:
    """Parse the Dockerfile at `path`."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", value, flags=re.IGNORECASE)
            assert m, f"cannot read FROM {value!r}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = value.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(global_args, stages)
