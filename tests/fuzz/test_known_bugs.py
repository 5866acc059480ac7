"""Inputs found by fuzzing that once broke the parsers or the proxy, kept as regression tests.

A bug not fixed yet is marked xfail(strict=True) with its description: when it is fixed the
test passes, the strict xfail turns that into a failure, and the marker must be removed."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from lora_syncer.config.adapters import parse_adapters
from lora_syncer.config.errors import ConfigError
from lora_syncer.config.rules import parse_rules
from tests.support.threaded import ProxyThread

PARSERS = [pytest.param(parse_adapters, id="adapters"), pytest.param(parse_rules, id="rules")]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_a_config_error(parse: Any, opener: str) -> None:
    """A 5,000-level nested flow collection is refused with a ConfigError, not a RecursionError."""
    closer = "]" if opener == "[" else "}"
    raw = ("vLLMLoRAConfig: " + opener * 5000 + "1" + closer * 5000 + "\n").encode()
    with pytest.raises(ConfigError):
        parse(raw, "deep.yaml")


@pytest.mark.parametrize("parse", PARSERS)
def test_recursive_alias_is_a_config_error(parse: Any) -> None:
    """A self-referencing alias is refused with a ConfigError."""
    with pytest.raises(ConfigError):
        parse(b"vLLMLoRAConfig: &x [*x]\n", "alias.yaml")


def alias_bomb(levels: int, fan_out: int, indent: str) -> list[str]:
    """Anchored lists, each made of `fan_out` aliases of the one before: fan_out**levels values."""
    lines = [f"{indent}l0: &l0 [" + ", ".join(["x"] * fan_out) + "]"]
    for i in range(1, levels):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan_out) + "]")
    return lines


# Otherwise valid files carrying the bomb under a key that is ignored (a warning) or free-form.
BOMBS = [
    pytest.param(
        parse_adapters,
        ["vLLMLoRAConfig:", "  name: bomb", "  extra:", *alias_bomb(5, 10, "    ")],
        id="adapters",
    ),
    pytest.param(
        parse_rules,
        [
            "apiVersion: inference.networking.x-k8s.io/v1alpha2",
            "kind: InferenceModelRewrite",
            "metadata:",
            "  name: bomb",
            "  annotations:",
            *alias_bomb(5, 10, "    "),
            "spec:",
            "  rules:",
            "  - matches: [{model: {type: Exact, value: a}}]",
            "    targets: [{modelRewrite: b, weight: 1}]",
        ],
        id="rules",
    ),
]


@pytest.mark.parametrize(("parse", "lines"), BOMBS)
def test_alias_bomb_is_refused(parse: Any, lines: list[str]) -> None:
    """A file whose aliases expand to 100,000 values from about 500 bytes is refused with a ConfigError."""
    raw = ("\n".join(lines) + "\n").encode()
    assert len(raw) < 600
    with pytest.raises(ConfigError):
        parse(raw, "bomb.yaml")


@pytest.mark.parametrize("kind", ["[]", "{a: 1}"])
def test_rules_kind_not_a_string_is_a_config_error(kind: str) -> None:
    """A rules document whose `kind` is a list or a mapping is refused with a ConfigError naming `kind`."""
    raw = f"apiVersion: v1\nkind: {kind}\nspec: {{}}\n".encode()
    with pytest.raises(ConfigError) as info:
        parse_rules(raw, "rules.yaml")
    assert any("kind" in (i.path + i.message) for i in info.value.issues)


def test_deeply_nested_json_body_is_a_400(proxy_thread: ProxyThread) -> None:
    """A chat body with 5,000 nested arrays gets a 400 OpenAI error from the proxy, not a 500."""
    body = b'{"model": "canary", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    conn = http.client.HTTPConnection("127.0.0.1", proxy_thread.port, timeout=10)
    try:
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 400, (status, data[:100])
    assert "error" in json.loads(data)
