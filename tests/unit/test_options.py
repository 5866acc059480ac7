"""Every setting of every command refuses bad values the same way, from a flag or from a variable:
one line on stderr naming the flag and the variable, exit code 2, no traceback.

The tables are built from the declarations themselves, so a new setting is covered as soon as
it is declared (its value type brings the bad values to try).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from lora_syncer.cli import COMMANDS, main
from lora_syncer.options.commands import COMMAND_SECTIONS, command_settings
from lora_syncer.options.parser import command_parser
from lora_syncer.options.resolve import UsageError, value_of
from lora_syncer.options.setting import Setting
from lora_syncer.options.values import BOOL, FREE_TEXT, http_url
from lora_syncer.proxy.options import ProxyOptions, proxy_options_from_args
from lora_syncer.settings import SyncerSettings, syncer_settings_from_args

# What a command needs on its command line to get as far as its settings.
BASE_ARGS: dict[str, list[str]] = {
    "check": ["adapters.yaml"],
    "digest": ["adapter-dir"],
    "rollout": ["status", "http://127.0.0.1:1"],
}
ALL_VARIABLES = sorted({v for c in COMMANDS for s in command_settings(c) for v in s.variables})


def _bad_flag_values(setting: Setting) -> tuple[str, ...]:
    return setting.type.bad if setting.takes_value and setting.action != "positional" else ()


def _bad_env_values(setting: Setting) -> tuple[str, ...]:
    return BOOL.bad if not setting.takes_value else setting.type.bad


FLAG_CASES = [
    pytest.param(command, s, bad, id=f"{command} {s.flag}={bad!r}")
    for command in COMMANDS
    for s in command_settings(command)
    for bad in _bad_flag_values(s)
]
ENV_CASES = [
    pytest.param(command, s, variable, bad, id=f"{command} {variable}={bad!r}")
    for command in COMMANDS
    for s in command_settings(command)
    for variable in s.variables
    for bad in _bad_env_values(s)
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting's variable from the machine running the tests."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _assert_usage_error(code: int, err: str, out: str, *names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lora-syncer: error: "), err
    for name in names:
        assert name in lines[0], (name, err)


@pytest.mark.parametrize(("command", "setting", "bad"), FLAG_CASES)
def test_bad_flag_value(
    command: str,
    setting: Setting,
    bad: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--flag BAD`: one line naming the flag and its variable, exit 2."""
    code = main([command, *BASE_ARGS.get(command, []), f"{setting.flag}={bad}"])
    captured = capsys.readouterr()
    _assert_usage_error(code, captured.err, captured.out, setting.flag, *setting.variables[:1])


@pytest.mark.parametrize(("command", "setting", "variable", "bad"), ENV_CASES)
def test_bad_environment_value(
    command: str,
    setting: Setting,
    variable: str,
    bad: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`VARIABLE=BAD`: one line naming the flag and that variable, exit 2."""
    clean_env.setenv(variable, bad)
    code = main([command, *BASE_ARGS.get(command, [])])
    captured = capsys.readouterr()
    _assert_usage_error(code, captured.err, captured.out, setting.flag, variable)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_setting_is_tried_or_free_text(command: str) -> None:
    """A setting with no bad value to try must be one that takes any text (a path, a name)."""
    for s in command_settings(command):
        if not _bad_flag_values(s) and not _bad_env_values(s):
            assert s.type in FREE_TEXT, f"{command} {s.flag}: give its value type some bad values"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_names_are_unique_within_a_command(command: str) -> None:
    """No two settings of a command share a flag, a destination or a variable."""
    settings = command_settings(command)
    for key in ("flag", "dest"):
        values = [getattr(s, key) for s in settings]
        assert len(values) == len(set(values)), key
    variables = [v for s in settings for v in s.variables]
    assert len(variables) == len(set(variables))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_lists_every_visible_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`lora-syncer COMMAND --help` exits 0 and shows each flag and its variable."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for s in command_settings(command):
        if not s.hidden and s.action != "positional":
            assert s.flag in out
            for variable in s.variables:
                assert variable in out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_defaults_parse(command: str, clean_env: pytest.MonkeyPatch) -> None:
    """With nothing given every setting takes its declared default (lists as lists)."""
    args = command_parser(command).parse_args(BASE_ARGS.get(command, []))
    for s in command_settings(command):
        if s.action == "positional":
            continue
        expected = list(s.default) if s.is_list else s.default
        assert getattr(args, s.dest) == expected, s.flag


class TestPrecedence:
    def test_flag_then_variable_then_legacy_then_default(self) -> None:
        config = next(s for s in command_settings("run") if s.flag == "--config")
        env = {"LORA_SYNCER_CONFIG": "/a.yaml", "DYNAMIC_LORA_ROLLOUT_CONFIG": "/b.yaml"}
        assert value_of(config, "/flag.yaml", env) == Path("/flag.yaml")
        assert value_of(config, None, env) == Path("/a.yaml")
        assert value_of(config, None, {"DYNAMIC_LORA_ROLLOUT_CONFIG": "/b.yaml"}) == Path("/b.yaml")
        assert value_of(config, None, {"LORA_SYNCER_CONFIG": "", "DYNAMIC_LORA_ROLLOUT_CONFIG": ""}) == Path(
            "/config/configmap.yaml"
        )

    def test_legacy_variable_is_named_in_its_error(self) -> None:
        trigger = Setting("--x", BOOL, legacy_env=("OLD_X",))
        with pytest.raises(UsageError, match=r"^--x / OLD_X: 'maybe' is not a boolean"):
            value_of(trigger, None, {"OLD_X": "maybe"})

    def test_list_variable_splits_at_commas_and_spaces(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("LORA_SYNCER_ALLOWED_SOURCES", "myorg/, /adapters/ re:^x")
        args = command_parser("run").parse_args([])
        assert syncer_settings_from_args(args).allowed_sources == ("myorg/", "/adapters/", "re:^x")

    def test_repeated_and_comma_separated_flags(self, clean_env: pytest.MonkeyPatch) -> None:
        args = command_parser("plan").parse_args(["--allowed-sources", "a/,b/", "--allowed-sources", "c/"])
        assert args.allowed_sources == ["a/", "b/", "c/"]

    def test_switch_from_variable_and_flag(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("LORA_SYNCER_PRUNE", "yes")
        assert command_parser("run").parse_args([]).prune is True
        assert command_parser("run").parse_args(["--no-prune"]).prune is False


class TestValues:
    @pytest.mark.parametrize(
        ("text", "url"),
        [
            ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
            ("localhost:8000", "http://localhost:8000"),
            ("https://vllm.ns.svc", "https://vllm.ns.svc"),
            ("http://[::1]:8000", "http://[::1]:8000"),
        ],
    )
    def test_good_urls(self, text: str, url: str) -> None:
        assert http_url(text) == url

    def test_pool_entry(self, clean_env: pytest.MonkeyPatch) -> None:
        args = command_parser("proxy").parse_args(
            ["--pool", "old=http://a:8000@9", "--pool", "new=http://b:8000"]
        )
        assert [(p.name, p.url, p.weight) for p in args.pool] == [
            ("old", "http://a:8000", 9),
            ("new", "http://b:8000", 1),
        ]

    def test_size_units(self, clean_env: pytest.MonkeyPatch) -> None:
        assert command_parser("run").parse_args(["--max-body-size", "1MiB"]).max_body_size == 1024 * 1024


class TestConsumers:
    """The objects handed on keep their fields; their defaults are the declarations'."""

    def test_syncer_settings_defaults_match(self, clean_env: pytest.MonkeyPatch) -> None:
        built = syncer_settings_from_args(command_parser("run").parse_args([]))
        for f in dataclasses.fields(SyncerSettings):
            name, value, default = f.name, getattr(built, f.name), f.default
            if name == "config":
                assert value == Path("/config/configmap.yaml")
            else:
                assert value == default, name

    def test_proxy_options_defaults_match(self, clean_env: pytest.MonkeyPatch) -> None:
        for command in ("run", "proxy"):
            built = proxy_options_from_args(command_parser(command).parse_args([]), "http://h:1")
            defaults = ProxyOptions(upstream="http://h:1")
            assert built == defaults, command

    def test_every_proxy_setting_has_a_field(self) -> None:
        fields = {f.name for f in dataclasses.fields(ProxyOptions)}
        for _, settings in COMMAND_SECTIONS["proxy"][1:]:
            for s in settings:
                assert s.target in fields, s.flag

    def test_contradicting_settings_are_one_line(
        self, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """--pool-name with --pool: refused before anything starts, exit 2."""
        argv = ["proxy", "--rules", str(tmp_path / "r.yaml"), "--pool-name", "p", "--pool", "a=http://h:1"]
        code = main(argv)
        captured = capsys.readouterr()
        _assert_usage_error(code, captured.err, captured.out, "--pool-name")


def test_upstream_compatibility_flags_exist() -> None:
    """The old sidecar's flags and variable stay, and bare flags still mean `run`."""
    flags = {s.flag: s for s in command_settings("run")}
    for flag in (
        "--config",
        "--health-check-timeout",
        "--health-check-interval",
        "--reconcile-trigger",
        "--config-validation",
        "--metrics-port",
    ):
        assert flag in flags
    assert "DYNAMIC_LORA_ROLLOUT_CONFIG" in flags["--config"].variables


def test_hard_coded_help_matches_its_source() -> None:
    """Help texts that repeat a constant (to keep the CLI import light) repeat it right."""
    from lora_syncer.emulator.config import DEFAULT_SERVED_MODEL_NAME
    from lora_syncer.realvllm.launcher import SETUP_HINT

    emulator: dict[str, Any] = {s.flag: s for s in command_settings("emulator")}
    assert emulator["--served-model-name"].default == (DEFAULT_SERVED_MODEL_NAME,)
    demo = {s.flag: s for s in command_settings("demo")}
    assert SETUP_HINT in demo["--real-vllm"].help
