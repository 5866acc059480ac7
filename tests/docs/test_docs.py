"""Every Markdown file shows only real things: commands the CLI accepts, variables it reads, metrics
it declares, links and paths that exist, code blocks that parse (and ConfigMaps that pass
`lora-syncer check`). Each item is one thing found in a doc, so nothing passes by checking nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from lora_syncer.cli import COMMANDS
from lora_syncer.commands.check import check_file
from lora_syncer.config.manifest import classify
from lora_syncer.config_warnings import ConfigWarnings
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.telemetry import TargetTelemetry
from lora_syncer.rollout.metrics import RolloutMetrics
from lora_syncer.sync.metrics import SyncMetrics
from tests.docs.docs_support import (
    ROOT,
    SHELL_LANGUAGES,
    Block,
    Command,
    checked_lines,
    code_spans,
    command_problem,
    commands,
    declared_metrics,
    fenced_blocks,
    markdown_files,
    metric_names,
    prose_lines,
    rel,
    shell_lines,
    subcommand_of,
    top_level_names,
    variables_read,
)

DOCS = markdown_files()


@dataclass(frozen=True)
class Found:
    """One name or path found in a doc, and where."""

    doc: Path
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{rel(self.doc)}:{self.line}:{self.text}"

    def where(self) -> str:
        return f"{rel(self.doc)}:{self.line}"


def _ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


# --- discovery ----------------------------------------------------------------------------------

COMMAND_LINES = [c for doc in DOCS for c in commands(doc)]
BLOCKS = [b for doc in DOCS for b in fenced_blocks(doc)]
YAML_BLOCKS = [b for b in BLOCKS if b.language in ("yaml", "yml")]
JSON_BLOCKS = [b for b in BLOCKS if b.language == "json"]

_VARIABLE = re.compile(r"LORA_SYNCER_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_<*])")
# A metric name, or a family of them written `lora_syncer_proxy_*`.
_METRIC = re.compile(r"(?<![\w.])lora_syncer_(?:[a-z0-9_]*[a-z0-9](?![a-z0-9_]*\*)|[a-z0-9_]*\*)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)")


def _found(pattern: re.Pattern[str], lines_of: Any) -> list[Found]:
    return [
        Found(doc, n, m.group(0)) for doc in DOCS for n, line in lines_of(doc) for m in pattern.finditer(line)
    ]


VARIABLES = _found(_VARIABLE, checked_lines)
METRICS = _found(_METRIC, checked_lines)


def _links() -> list[Found]:
    out = []
    for doc in DOCS:
        for n, line in prose_lines(doc):
            for m in [*_LINK.finditer(line), *_IMAGE.finditer(line)]:
                target = next(g for g in m.groups() if g)
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a URL or an anchor in the same page
                out.append(Found(doc, n, target))
    return out


LINKS = _links()
_TOP = top_level_names()


def _repository_path(word: str) -> str | None:
    """`word` as a repository path (`docs/x.md`, `examples/*/00-adapters.yaml`), or None if it is not one."""
    word = word.strip("'\"()[],")
    word = re.sub(r"(::\S*|:\d+(-\d+)?)$", "", word)  # a test id or a line number after the path
    if "/" not in word or word.startswith(("/", "./", "~")) or "://" in word:
        return None
    if word.split("/", 1)[0] not in _TOP:
        return None
    if re.search(r"[<>{}$]|\.\.\.|…", word):
        return None  # a pattern with placeholders, not a path
    return word


def _paths() -> list[Found]:
    out = []
    for doc in DOCS:
        for n, span in code_spans(doc):
            if " " not in span and (path := _repository_path(span)) is not None:
                out.append(Found(doc, n, path))
        for block in fenced_blocks(doc):
            if block.language in SHELL_LANGUAGES:
                for number, line in shell_lines(block):
                    for word in line.split():
                        if (path := _repository_path(word)) is not None:
                            out.append(Found(doc, number, path))
    return out


PATHS = _paths()


# --- commands -----------------------------------------------------------------------------------------------


class TestCommands:
    def test_commands_are_found(self) -> None:
        """The docs show complete command lines of the main subcommands (so the items below exist)."""
        shown = {subcommand_of(c.args) for c in COMMAND_LINES if c.complete}
        assert {"demo", "check", "split-test", "plan", "run", "proxy", "emulator"} <= shown

    @pytest.mark.parametrize("command", COMMAND_LINES, ids=_ids(COMMAND_LINES))
    def test_command_is_accepted(self, command: Command) -> None:
        """A `lora-syncer` line names a real subcommand; a complete one parses, a fragment uses real flags."""
        assert command_problem(command) is None, f"{command.id}: {command_problem(command)}"

    @pytest.mark.parametrize(
        "command",
        [c for c in COMMAND_LINES if c.complete and c.args[0] == "check"],
        ids=_ids([c for c in COMMAND_LINES if c.complete and c.args[0] == "check"]),
    )
    def test_check_command_passes(self, command: Command) -> None:
        """Every `lora-syncer check FILE...` the docs show exits 0 on the repository's files."""
        words: list[str] = []
        for word in command.args:
            matches = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(word)) if "*" in word else []
            words += matches or [word]
        proc = subprocess.run(
            [sys.executable, "-m", "lora_syncer", *words],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_scripts_shown_are_valid_bash(self) -> None:
        """Every `bash scripts/...` the docs mention exists and is valid bash."""
        scripts = {
            m
            for doc in DOCS
            for _, line in checked_lines(doc)
            for m in re.findall(r"bash (scripts/[\w.-]+\.sh)", line)
        }
        assert "scripts/demo.sh" in scripts
        for script in sorted(scripts):
            subprocess.run(["bash", "-n", str(ROOT / script)], check=True, timeout=30)


# --- names the code must use ----------------------------------------------------------------------


class TestNames:
    def test_names_are_found(self) -> None:
        """The docs name variables and metrics (so the items below exist)."""
        assert VARIABLES and METRICS

    @pytest.mark.parametrize("found", VARIABLES, ids=_ids(VARIABLES))
    def test_variable_is_read(self, found: Found) -> None:
        """Every `LORA_SYNCER_*` variable a doc names is one the CLI (or a repository script) reads."""
        assert found.text in variables_read(), f"{found.where()}: nothing reads {found.text}"

    @pytest.mark.parametrize("found", METRICS, ids=_ids(METRICS))
    def test_metric_is_declared(self, found: Found) -> None:
        """Every `lora_syncer_*` metric a doc names is declared by the code (`x*` names a family of them)."""
        names = metric_names()
        if found.text.endswith("*"):
            assert any(n.startswith(found.text[:-1]) for n in names), found.where()
        else:
            assert found.text in names, f"{found.where()}: no metric {found.text} is declared"


# --- files ----------------------------------------------------------------------------------------


class TestFiles:
    def test_links_and_paths_are_found(self) -> None:
        """The docs make relative links and name repository paths (so the items below exist)."""
        assert LINKS and PATHS

    @pytest.mark.parametrize("found", LINKS, ids=_ids(LINKS))
    def test_link_target_exists(self, found: Found) -> None:
        """Every relative link points at a file or directory that exists."""
        target = found.text.split("#", 1)[0]
        assert (found.doc.parent / target).exists(), f"{found.where()}: {target} does not exist"

    @pytest.mark.parametrize("found", PATHS, ids=_ids(PATHS))
    def test_path_exists(self, found: Found) -> None:
        """Every repository path a doc names in backticks or in a shell command exists (a glob matches something)."""
        path = found.text
        exists = any(ROOT.glob(path)) if any(c in path for c in "*?[") else (ROOT / path).exists()
        assert exists, f"{found.where()}: {path} does not exist"

    @pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
    def test_yaml_block(self, block: Block) -> None:
        """Every YAML block parses; one holding a ConfigMap, adapters or rules document passes `lora-syncer check`."""
        documents = list(yaml.safe_load_all(block.body))
        ours = any(
            classify(d) != "unknown" or (isinstance(d, dict) and d.get("kind") == "ConfigMap")
            for d in documents
        )
        if not ours:
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "block.yaml"
            target.write_text(block.body, encoding="utf-8")
            summary, issues = check_file(target)
        errors = [i.format() for i in issues if i.severity == "error"]
        assert errors == [], f"{block.id}: {summary}"

    @pytest.mark.parametrize("block", JSON_BLOCKS, ids=_ids(JSON_BLOCKS))
    def test_json_block(self, block: Block) -> None:
        """Every JSON block is valid JSON."""
        json.loads(block.body)

    def test_guides_show_the_example_files(self) -> None:
        """The rollout guides (manual and automated) name every shipped example file."""
        guide = "".join(
            (ROOT / "docs" / "guides" / name).read_text(encoding="utf-8")
            for name in ("lora-adapter-rollout.md", "automated-rollout.md")
        )
        shipped = sorted((ROOT / "examples").glob("*/*.yaml"))
        assert len(shipped) == 13
        for path in shipped:
            assert str(path.relative_to(ROOT)) in guide or path.name in guide, path


# --- reference tables made from the code ----------------------------------------------------------


def _gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _string_corpus() -> tuple[list[str], list[re.Pattern[str]]]:
    """Every string constant of the package, and every f-string as a pattern (fields match anything)."""
    import ast

    constants: list[str] = []
    patterns: list[re.Pattern[str]] = []
    for path in (ROOT / "lora_syncer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                constants.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [
                    re.escape(v.value) if isinstance(v, ast.Constant) and isinstance(v.value, str) else ".*"
                    for v in node.values
                ]
                patterns.append(re.compile("".join(parts), re.S))
    return constants, patterns


class TestReferenceTables:
    def test_configuration_flag_tables_are_fresh(self) -> None:
        """docs/configuration.md's flag tables equal what scripts/gen_config_docs.py makes from the parsers."""
        gen = _gen_module()
        current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
        assert gen.updated(current) == current, "run: .venv/bin/python scripts/gen_config_docs.py"

    def test_every_command_has_a_table(self) -> None:
        """Each subcommand of the CLI has its section in docs/configuration.md."""
        text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
        for command in COMMANDS:
            assert f"### `lora-syncer {command}`" in text

    def test_metric_table_matches_the_registry(self) -> None:
        """docs/http-and-metrics.md lists exactly the metrics the code declares, with the syncer's and proxy's types and labels."""
        registry = CollectorRegistry()
        SyncMetrics(registry)
        ProxyMetrics(registry)
        TargetTelemetry(registry)
        RolloutMetrics(registry)
        ConfigWarnings(registry)  # `run --rules` only
        real: dict[str, tuple[str, tuple[str, ...]]] = {}
        collectors: list[Any] = list(registry._collector_to_names)
        for c in collectors:
            if hasattr(c, "_name"):
                real[c._name] = (c._type, tuple(c._labelnames))
            else:  # a custom collector (read at scrape time) declares its label names
                for family in c.describe():
                    real[family.name] = (family.type, tuple(c.labelnames))
        text = (ROOT / "docs" / "http-and-metrics.md").read_text(encoding="utf-8")
        documented: dict[str, tuple[str, tuple[str, ...]]] = {}
        for row in re.findall(r"^\| `(lora_syncer_\w+)` \| (\w+) \|([^|]*)\|", text, re.M):
            labels = tuple(re.findall(r"`(\w+)`", row[2]))
            documented[row[0]] = (row[1], labels)
        assert documented == real
        assert set(documented) == set(declared_metrics()), "a declared metric is missing from the table"

    def test_quoted_messages_are_the_codes(self) -> None:
        """Every message quoted in a text block of the operations and HTTP docs is one the code prints."""
        constants, patterns = _string_corpus()
        checked = 0
        for name in ("operations.md", "http-and-metrics.md"):
            for block in fenced_blocks(ROOT / "docs" / name):
                if block.language != "text":
                    continue
                for line in filter(None, (raw.strip() for raw in block.body.splitlines())):
                    if line.startswith("vLLM: "):
                        continue  # vLLM's own message, quoted as such
                    wanted = re.compile(".*".join(re.escape(p) for p in line.split("…")), re.S)
                    found = any(wanted.search(c) for c in constants) or any(
                        p.fullmatch(line) for p in patterns
                    )
                    assert found, f"{name}: {line!r} is not a message lora-syncer prints"
                    checked += 1
        assert checked >= 8


def test_environment_is_clean_for_generation() -> None:
    """The generator ignores LORA_SYNCER_* variables set in the caller's environment."""
    gen = _gen_module()
    os.environ["LORA_SYNCER_RECONCILE_TRIGGER"] = "99"
    try:
        assert "`99.0`" not in "\n".join(gen.command_table("run"))
    finally:
        del os.environ["LORA_SYNCER_RECONCILE_TRIGGER"]
