"""The adapters file (`vLLMLoRAConfig`): upstream format, errors located by path and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.config.adapters import DesiredAdapter, parse_adapters, parse_adapters_text
from lora_syncer.config.errors import ConfigError
from lora_syncer.config.manifest import configmaps_in
from lora_syncer.config.source import WatchedFile
from lora_syncer.config.yamldoc import load_documents
from lora_syncer.sync.plan import ObservedModel, Op, PlanOptions, make_plan
from tests.support.seeds import EXAMPLES, seed_file

SEED_002_INITIAL = seed_file("qwen3-32b-rewrite", "00-adapters")


def _adapters_payloads(path: Path) -> list[str]:
    """The adapters file (`configmap.yaml` key) of every ConfigMap in a manifest."""
    embedded = configmaps_in(load_documents(path.read_text())) or []
    return [e.text for e in embedded if e.key == "configmap.yaml"]


class TestUpstreamFormat:
    def test_seed_002_initial(self) -> None:
        """The 002 guide's first ConfigMap parses into two adapters with the default base model."""
        cfg = parse_adapters_text(SEED_002_INITIAL, "cm.yaml")
        assert cfg.name == "vllm-qwen3-32b-adapters"
        assert cfg.host == "localhost"
        assert cfg.port == 8000
        assert cfg.ensure_exist == (
            DesiredAdapter("small-segment-lora-v1", "ttt421/nec119-small-segment-lora", "Qwen/Qwen3-32B"),
            DesiredAdapter("small-segment-lora-v2", "ttt421/nec119-small-segment-lora", "Qwen/Qwen3-32B"),
        )
        assert cfg.ensure_not_exist == ()
        assert cfg.warnings == ()

    @pytest.mark.parametrize("example", ["qwen3-32b-rewrite", "llama3-8b-instruct-inferencemodel"])
    def test_every_example_configmap_parses_unchanged(self, example: str) -> None:
        """Every adapters ConfigMap of both guides' examples parses with no error and no warning."""
        payloads = [
            t for f in sorted((EXAMPLES / example).glob("*adapters*.yaml")) for t in _adapters_payloads(f)
        ]
        assert len(payloads) >= 2
        for text in payloads:
            cfg = parse_adapters_text(text, example)
            assert cfg.ensure_exist
            assert cfg.warnings == ()

    def test_base_model_override(self) -> None:
        """`base-model` on an adapter overrides `defaultBaseModel`."""
        cfg = parse_adapters_text(
            "vLLMLoRAConfig:\n  defaultBaseModel: a\n  ensureExist:\n    models:\n"
            "    - {id: x, source: s, base-model: b}\n    - {id: y, source: s}\n"
        )
        assert [a.base_model for a in cfg.ensure_exist] == ["b", "a"]

    def test_defaults_and_empty_lists(self) -> None:
        """A file with only the top key is valid: defaults apply and both lists are empty."""
        cfg = parse_adapters_text("vLLMLoRAConfig:\n  ensureExist:\n    models:\n")
        assert (cfg.host, cfg.port, cfg.ensure_exist, cfg.ensure_not_exist) == ("localhost", 8000, (), ())
        assert cfg.server_url == "http://localhost:8000"

    def test_port_as_string(self) -> None:
        """A quoted port is accepted, as ConfigMaps often carry strings."""
        assert parse_adapters_text('vLLMLoRAConfig:\n  port: "8001"\n').port == 8001

    def test_not_exist_without_source(self) -> None:
        """ensureNotExist entries need only an id."""
        cfg = parse_adapters_text("vLLMLoRAConfig:\n  ensureNotExist:\n    models:\n    - id: old\n")
        assert cfg.ensure_not_exist[0].id == "old"


def errors_of(text: str, filename: str = "cm.yaml") -> list[str]:
    """The formatted errors of a file that must be refused."""
    with pytest.raises(ConfigError) as info:
        parse_adapters_text(text, filename)
    return [i.format() for i in info.value.errors]


class TestErrors:
    def _issues(self, text: str) -> list[str]:
        return errors_of(text)

    def test_missing_source_names_path_and_line(self) -> None:
        """A missing source is reported with the file, the document path and the item's line."""
        text = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n      source: s\n    - id: b\n"
        assert self._issues(text) == [
            "cm.yaml:6: error: vLLMLoRAConfig.ensureExist.models[1].source: is required"
        ]

    def test_wrong_types_and_empty_strings(self) -> None:
        """Wrong types and empty strings each get their own located error."""
        text = (
            "vLLMLoRAConfig:\n  port: eighty\n  ensureExist:\n    models:\n"
            "    - id: ''\n      source: s\n    - id: 123\n      source: s\n"
        )
        issues = self._issues(text)
        assert "cm.yaml:2: error: vLLMLoRAConfig.port: must be a whole number" in issues
        assert "cm.yaml:5: error: vLLMLoRAConfig.ensureExist.models[0].id: must not be empty" in issues
        assert any("models[1].id: must be a string" in i and i.startswith("cm.yaml:7:") for i in issues)

    def test_duplicate_ids(self) -> None:
        """An id listed twice in one list is an error pointing at the second one."""
        text = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s}\n    - {id: a, source: t}\n"
        [issue] = self._issues(text)
        assert issue.startswith("cm.yaml:5: error: vLLMLoRAConfig.ensureExist.models[1].id: duplicate id 'a'")

    def test_yaml_syntax_error_has_line(self) -> None:
        """A YAML syntax error says so, with its line."""
        [issue] = self._issues("vLLMLoRAConfig:\n  port: 8000\n   name: x\n")
        assert issue.startswith("cm.yaml:3: error: YAML syntax error")

    def test_missing_root_key(self) -> None:
        """A file without vLLMLoRAConfig says which key is missing and what it found."""
        [issue] = self._issues("something: else\n")
        assert "missing top-level key 'vLLMLoRAConfig' (found keys: something)" in issue

    def test_empty_file(self) -> None:
        """An empty file is an error, not an empty configuration."""
        [issue] = self._issues("")
        assert "file is empty" in issue

    def test_binary_file(self) -> None:
        """Binary content gets a readable error, not a traceback."""
        with pytest.raises(ConfigError) as info:
            parse_adapters(b"\x00\x01\xff\xfe", "cm.yaml")
        assert "not UTF-8 text" in str(info.value)

    def test_models_not_a_list(self) -> None:
        """`models` must be a list."""
        [issue] = self._issues("vLLMLoRAConfig:\n  ensureExist:\n    models: 3\n")
        assert issue == "cm.yaml:3: error: vLLMLoRAConfig.ensureExist.models: must be a list"


class TestConflictsAndWarnings:
    def test_conflict_is_reported_not_fatal(self) -> None:
        """An id in both lists is a conflict: a warning, and the id is listed in `conflicts`."""
        text = (
            "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s}\n    - {id: b, source: s}\n"
            "  ensureNotExist:\n    models:\n    - {id: a, source: s}\n"
        )
        cfg = parse_adapters_text(text, "cm.yaml")
        assert cfg.conflicts == frozenset({"a"})
        [warning] = cfg.warnings
        assert (
            warning.severity == "warning"
            and warning.line == 8
            and "both ensureExist and ensureNotExist" in warning.message
        )

    def test_keys_beside_the_root_warn(self) -> None:
        """Keys beside vLLMLoRAConfig are ignored with a warning naming their path and line."""
        text = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s}\nother: 1\n"
        cfg = parse_adapters_text(text, "cm.yaml")
        assert [(w.path, w.line, w.severity) for w in cfg.warnings] == [("other", 5, "warning")]


TYPO_FILE = """\
vLLMLoRAConfig:
  defaultBaseModel: Qwen/Qwen3-32B
  ensureExist:
    models:
    - id: small-segment-lora-v1
      source: ttt421/nec119-small-segment-lora
    - id: small-segment-lora-v2
      source: ttt421/nec119-small-segment-lora-v2
      soruce: typo
"""


class TestUnknownKeys:
    def _errors(self, text: str) -> list[str]:
        return errors_of(text, "configmap.yaml")

    def test_misspelt_key_in_an_entry(self) -> None:
        """A misspelt key inside an entry is an error, located, naming the key meant."""
        assert self._errors(TYPO_FILE) == [
            "configmap.yaml:9: error: vLLMLoRAConfig.ensureExist.models[1].soruce: unknown key; did you mean 'source'?"
        ]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "vLLMLoRAConfig:\n  ensureExists:\n    models:\n    - {id: a, source: s}\n",
                "configmap.yaml:2: error: vLLMLoRAConfig.ensureExists: unknown key; did you mean 'ensureExist'?",
            ),
            (
                "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s, baseModel: b}\n",
                "configmap.yaml:4: error: vLLMLoRAConfig.ensureExist.models[0].baseModel: unknown key; "
                "did you mean 'base-model'?",
            ),
            (
                "vLLMLoRAConfig:\n  ensureExist:\n  models:\n  - {id: a, source: s}\n",
                "configmap.yaml:3: error: vLLMLoRAConfig.models: unknown key here; 'models' belongs under "
                "ensureExist or ensureNotExist (check the indentation)",
            ),
            (
                "vLLMLoRAConfig:\n  name: x\nensureExist:\n  models:\n  - {id: a, source: s}\n",
                "configmap.yaml:3: error: ensureExist: belongs under vLLMLoRAConfig (check the indentation)",
            ),
            (
                "vLLMLoRAConfig:\n  colour: red\n",
                "configmap.yaml:2: error: vLLMLoRAConfig.colour: unknown key (expected one of: name, host, port, "
                "defaultBaseModel, ensureExist, ensureNotExist)",
            ),
        ],
        ids=["ensureExists", "baseModel", "models-indent", "root-indent", "no-close-key"],
    )
    def test_unknown_keys_are_errors(self, text: str, expected: str) -> None:
        """The old sidecar's silent typos are errors with a hint: wrong names and wrong indents."""
        assert self._errors(text) == [expected]

    def test_misspelt_root_key(self) -> None:
        """A misspelt top-level key says which key was meant."""
        [issue] = self._errors("vLLMLoraConfig:\n  name: x\n")
        assert "(found keys: vLLMLoraConfig; did you mean 'vLLMLoRAConfig'?)" in issue

    def test_every_problem_at_once_in_file_order(self) -> None:
        """Unknown keys, missing values, duplicates and warnings come in one report, ordered by line."""
        text = (
            "vLLMLoRAConfig:\n"
            "  ensureExist:\n"
            "    models:\n"
            "    - {id: a, source: s}\n"
            "    - {id: b, soruce: t}\n"
            "    - {id: a, source: s}\n"
            "  ensureNotExist:\n"
            "    models: [{id: b}]\n"
            "extra: 1\n"
        )
        with pytest.raises(ConfigError) as info:
            parse_adapters_text(text, "cm.yaml")
        assert [(i.line, i.severity, i.path) for i in info.value.issues] == [
            (5, "error", "vLLMLoRAConfig.ensureExist.models[1].source"),
            (5, "error", "vLLMLoRAConfig.ensureExist.models[1].soruce"),
            (6, "error", "vLLMLoRAConfig.ensureExist.models[2].id"),
            (8, "warning", "vLLMLoRAConfig.ensureNotExist.models[0].id"),
            (9, "warning", "extra"),
        ]


class TestRefusedFileUnloadsNothing:
    GOOD = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s}\n"
    TYPO = "vLLMLoRAConfig:\n  ensureExists:\n    models:\n    - {id: a, source: s}\n"

    def test_parse_api_refuses(self) -> None:
        """The typo file is no configuration at all, not an empty one."""
        with pytest.raises(ConfigError):
            parse_adapters(self.TYPO.encode(), "cm.yaml")

    def test_last_good_stays_in_force_and_prune_unloads_nothing(self, tmp_path: Path) -> None:
        """After the typo file, the syncer still plans from the last good file: --prune unloads nothing."""
        path = tmp_path / "configmap.yaml"
        watched = WatchedFile(path, parse_adapters)
        path.write_text(self.GOOD)
        assert watched.reload_sync() == "changed"
        path.write_text(self.TYPO)
        assert watched.reload_sync() == "error"
        assert watched.current is not None
        assert [a.id for a in watched.current.value.ensure_exist] == ["a"]
        observed = [ObservedModel("base"), ObservedModel("a", root="s", parent="base")]
        plan = make_plan(watched.current.value, observed, PlanOptions(prune=True))
        assert [x for x in plan.actions if x.op == Op.UNLOAD] == []
        assert plan.in_sync == ("a",)


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=400))
    def test_any_text_gives_config_or_config_error(self, text: str) -> None:
        """Arbitrary text never raises anything but ConfigError."""
        try:
            parse_adapters_text(text, "f.yaml")
        except ConfigError as exc:
            assert exc.errors
            assert all(i.file == "f.yaml" for i in exc.issues)

    @settings(max_examples=200, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=20,
        )
    )
    def test_any_structure_under_root_key(self, body: object) -> None:
        """Any YAML structure under vLLMLoRAConfig gives a config or a located ConfigError."""
        import yaml

        text = yaml.safe_dump({"vLLMLoRAConfig": body})
        try:
            parse_adapters_text(text, "f.yaml")
        except ConfigError as exc:
            assert all(i.path.startswith("vLLMLoRAConfig") or i.path == "" for i in exc.errors)
