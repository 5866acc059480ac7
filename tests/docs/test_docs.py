"""The user docs show only real things: files that exist and parse, commands that run, names the code uses."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from docs_support import DOCS, ROOT, blocks, shell_commands
from prometheus_client import CollectorRegistry

from lora_syncer.cli import COMMANDS, build_parser
from lora_syncer.commands.check import check_file
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.sync.metrics import SyncMetrics

_PATH = re.compile(r"(?<![\w/.-])((?:examples|sidecar|charts|scripts|docs|lora_syncer)/[\w./-]*[\w/])")
_LINK = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lora_syncer_commands() -> list[tuple[Path, list[str]]]:
    out: list[tuple[Path, list[str]]] = []
    for doc in DOCS:
        for command in shell_commands(doc):
            words = shlex.split(command)
            # `kubectl exec ... -c lora-syncer -- lora-syncer plan ...`: the program is the one followed by a command.
            for i, word in enumerate(words[:-1]):
                if word == "lora-syncer" and words[i + 1] in COMMANDS:
                    out.append((doc, words[i + 1 :]))
                    break
    return out


def _string_corpus() -> tuple[list[str], list[re.Pattern[str]]]:
    """Every string constant of the package, and every f-string as a pattern (fields match anything)."""
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


class TestFiles:
    @pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
    def test_every_path_and_link_exists(self, doc: Path) -> None:
        """Every repository path a doc names and every relative link it makes points at something real."""
        text = doc.read_text(encoding="utf-8")
        missing = [p for p in _PATH.findall(text) if not (ROOT / p).exists()]
        missing += [link for link in _LINK.findall(text) if not (doc.parent / link).exists()]
        assert missing == []

    @pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
    def test_yaml_blocks_are_valid_files(self, doc: Path, tmp_path: Path) -> None:
        """Every YAML block parses, and every ConfigMap/adapters/rules block passes `lora-syncer check`."""
        for i, body in enumerate(blocks(doc, "yaml")):
            list(yaml.safe_load_all(body))
            target = tmp_path / f"block{i}.yaml"
            target.write_text(body, encoding="utf-8")
            summary, issues = check_file(target)
            assert [x for x in issues if x.severity == "error"] == [], (summary, issues)

    @pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
    def test_json_blocks_parse(self, doc: Path) -> None:
        """Every JSON block is valid JSON."""
        for body in blocks(doc, "json"):
            json.loads(body)

    def test_guides_show_the_example_files(self) -> None:
        """The rollout guide names every shipped example file of both guides."""
        guide = (ROOT / "docs" / "guides" / "lora-adapter-rollout.md").read_text(encoding="utf-8")
        shipped = sorted((ROOT / "examples").glob("*/*.yaml"))
        assert len(shipped) == 12
        for path in shipped:
            assert str(path.relative_to(ROOT)) in guide or path.name in guide, path


class TestCommands:
    def test_docs_show_commands(self) -> None:
        """The docs show the demo, check, split-test and plan commands (so the next tests check something)."""
        shown = {words[0] for _, words in _lora_syncer_commands()}
        assert {"demo", "check", "split-test", "plan"} <= shown

    @pytest.mark.parametrize(
        ("doc", "words"),
        _lora_syncer_commands(),
        ids=lambda v: " ".join(v) if isinstance(v, list) else v.name,
    )
    def test_every_command_parses(self, doc: Path, words: list[str]) -> None:
        """Every `lora-syncer ...` line in the docs is accepted by the real argument parser."""
        args = build_parser(only=words[0]).parse_args(words)
        assert args.command == words[0]

    @pytest.mark.parametrize(
        "words",
        [w for _, w in _lora_syncer_commands() if w[0] == "check"],
        ids=lambda w: " ".join(w)[:80],
    )
    def test_every_check_command_passes(self, words: list[str]) -> None:
        """Every `lora-syncer check FILE...` the docs show exits 0 on the repository's files."""
        proc = subprocess.run(
            [sys.executable, "-m", "lora_syncer", *words],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_scripts_shown_are_valid_bash(self) -> None:
        """Every `bash scripts/...` the docs mention exists and is valid bash."""
        scripts = {m for doc in DOCS for m in re.findall(r"bash (scripts/[\w.-]+\.sh)", doc.read_text())}
        assert "scripts/demo.sh" in scripts
        for script in scripts:
            subprocess.run(["bash", "-n", str(ROOT / script)], check=True, timeout=30)


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
        """docs/http-and-metrics.md lists exactly the metrics the syncer and proxy register, with their types and labels."""
        registry = CollectorRegistry()
        SyncMetrics(registry)
        ProxyMetrics(registry)
        real: dict[str, tuple[str, tuple[str, ...]]] = {}
        for c in list(registry._collector_to_names):
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

    def test_quoted_messages_are_the_codes(self) -> None:
        """Every message quoted in a text block of the operations and HTTP docs is one the code prints."""
        constants, patterns = _string_corpus()
        checked = 0
        for name in ("operations.md", "http-and-metrics.md"):
            for body in blocks(ROOT / "docs" / name, "text"):
                for line in filter(None, (raw.strip() for raw in body.splitlines())):
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
