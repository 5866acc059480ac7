"""The demo's walk through the LoRA Adapter Rollout guide, loaded from package data (pure).

`steps/walkthrough.yaml` lists the steps; each names a ConfigMap manifest in `steps/` (the same
files as `examples/qwen3-32b-rewrite/`) whose single data key replaces the adapters or the rules
ConfigMap, and what must hold afterwards. Nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

Target = Literal["adapters", "rules"]

# The ConfigMap key each target's file lives under (what the sidecar is pointed at).
KEYS: dict[Target, str] = {"adapters": "configmap.yaml", "rules": "rules.yaml"}


class StepDataError(ValueError):
    """The demo's own step data is malformed (a packaging bug, not a user error)."""


@dataclass(frozen=True)
class Manifest:
    """One ConfigMap manifest of the walk: its file name, ConfigMap name and the key's content."""

    filename: str
    configmap: str
    key: str
    content: str


@dataclass(frozen=True)
class Expectation:
    """What must hold after a step: adapters loaded/unloaded, and the exact split of the requests."""

    loaded: tuple[str, ...] = ()
    unloaded: tuple[str, ...] = ()
    split: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One step: which ConfigMap it edits, with which manifest, and what it expects."""

    id: str
    title: str
    guide: str
    target: Target
    manifest: Manifest
    expect: Expectation


@dataclass(frozen=True)
class Walkthrough:
    """The whole walk: the alias clients ask for, requests per split, the start state and the steps."""

    alias: str
    requests: int
    start: dict[Target, Manifest]
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"no step {step_id!r}; the steps are {', '.join(s.id for s in self.steps)}")

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """Every adapter the walk mentions, first appearance first (the split table's rows)."""
        names: list[str] = []
        for s in self.steps:
            for name in (*s.expect.loaded, *s.expect.unloaded, *s.expect.split):
                if name not in names:
                    names.append(name)
        return tuple(names)


def step_file_names() -> list[str]:
    """Names of the shipped manifest files (everything in `steps/` but the walk itself)."""
    folder = resources.files("lora_syncer.demo").joinpath("steps")
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith(".yaml") and p.name != "walkthrough.yaml"
    )


def read_step_file(name: str) -> str:
    """The text of one shipped file under `lora_syncer/demo/steps/`."""
    return resources.files("lora_syncer.demo").joinpath("steps").joinpath(name).read_text(encoding="utf-8")


def parse_manifest(filename: str, text: str) -> Manifest:
    """A ConfigMap manifest with exactly one data key -> `Manifest`."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
        raise StepDataError(f"{filename}: not a ConfigMap manifest")
    data = doc.get("data")
    if not isinstance(data, dict) or len(data) != 1:
        raise StepDataError(f"{filename}: a demo ConfigMap carries exactly one data key")
    ((key, content),) = data.items()
    name = (doc.get("metadata") or {}).get("name", "")
    return Manifest(filename=filename, configmap=str(name), key=str(key), content=str(content or ""))


def _manifest(filename: str, target: Target) -> Manifest:
    manifest = parse_manifest(filename, read_step_file(filename))
    if manifest.key != KEYS[target]:
        raise StepDataError(f"{filename}: the {target} ConfigMap's key is {KEYS[target]}, not {manifest.key}")
    return manifest


def _names(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise StepDataError(f"{where}: expected a list of adapter names")
    return tuple(raw)


def _step(raw: Any, index: int) -> Step:
    where = f"walkthrough.yaml steps[{index}]"
    if not isinstance(raw, dict):
        raise StepDataError(f"{where}: not a mapping")
    edit = raw.get("edit")
    if not isinstance(edit, dict) or len(edit) != 1:
        raise StepDataError(f"{where}.edit: name exactly one of adapters/rules")
    ((target, filename),) = edit.items()
    if target not in KEYS:
        raise StepDataError(f"{where}.edit: {target!r} is neither adapters nor rules")
    expect = raw.get("expect") or {}
    split = expect.get("split") or {}
    if not isinstance(split, dict) or not all(isinstance(v, int) for v in split.values()):
        raise StepDataError(f"{where}.expect.split: expected adapter -> request count")
    return Step(
        id=str(raw["id"]),
        title=str(raw["title"]),
        guide=str(raw.get("guide", "")),
        target=target,
        manifest=_manifest(str(filename), target),
        expect=Expectation(
            loaded=_names(expect.get("loaded"), f"{where}.expect.loaded"),
            unloaded=_names(expect.get("unloaded"), f"{where}.expect.unloaded"),
            split={str(k): int(v) for k, v in split.items()},
        ),
    )


def load_walkthrough() -> Walkthrough:
    """The demo's walk, from `lora_syncer/demo/steps/walkthrough.yaml`."""
    raw = yaml.safe_load(read_step_file("walkthrough.yaml"))
    start = raw["start"]
    steps = tuple(_step(s, i) for i, s in enumerate(raw["steps"]))
    requests = int(raw["requests"])
    for s in steps:
        if s.expect.split and sum(s.expect.split.values()) != requests:
            raise StepDataError(f"step {s.id}: the expected split does not add up to {requests} requests")
    return Walkthrough(
        alias=str(raw["alias"]),
        requests=requests,
        start={
            "adapters": _manifest(start["adapters"], "adapters"),
            "rules": _manifest(start["rules"], "rules"),
        },
        steps=steps,
    )


_ID_LINE = re.compile(r"^(\s*)- id:\s*(\S+)\s*$")
_SOURCE_LINE = re.compile(r"^(\s*)source:\s*\S+\s*$")


def with_sources(content: str, sources: dict[str, str]) -> str:
    """The adapters file with each listed adapter's `source:` replaced (real vLLM: local folders).

    Line-based so the rest of the file, comments and order included, stays as the user wrote it.
    """
    if not sources:
        return content
    out: list[str] = []
    current: str | None = None
    for line in content.splitlines(keepends=True):
        m = _ID_LINE.match(line.rstrip("\n"))
        if m:
            current = m.group(2).strip("'\"")
        else:
            s = _SOURCE_LINE.match(line.rstrip("\n"))
            if s and current in sources:
                line = f"{s.group(1)}source: {sources[current]}\n"
        out.append(line)
    return "".join(out)
