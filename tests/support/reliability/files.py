"""The adapters and rules files the scenarios write: good ones, and bad ones that must change nothing."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

KEY = "configmap.yaml"
RULES_KEY = "rules.yaml"
MIB = 1024 * 1024


def source_of(name: str) -> str:
    return f"org/{name}"


def adapters_yaml(exist: Iterable[str], not_exist: Iterable[str] = (), *, pad_to: int = 0) -> str:
    """An adapters file (upstream format); `pad_to` pads it with a comment to that many bytes."""
    lines = ["vLLMLoRAConfig:", "  name: reliability", "  defaultBaseModel: Qwen/Qwen3-32B"]
    exist, not_exist = list(exist), list(not_exist)
    if exist:
        lines += ["  ensureExist:", "    models:"]
        for name in exist:
            lines += [f"    - id: {name}", f"      source: {source_of(name)}"]
    if not_exist:
        lines += ["  ensureNotExist:", "    models:"]
        for name in not_exist:
            lines += [f"    - id: {name}", f"      source: {source_of(name)}"]
    text = "\n".join(lines) + "\n"
    if pad_to > len(text):
        filler = "# " + "x" * 98 + "\n"
        text += filler * ((pad_to - len(text)) // len(filler))
    return text


def rules_yaml(alias: str, targets: Sequence[tuple[str, int]]) -> str:
    """An InferenceModelRewrite (guide 002 shape) sending `alias` to weighted targets."""
    lines = [
        "apiVersion: inference.networking.x-k8s.io/v1alpha2",
        "kind: InferenceModelRewrite",
        "metadata:",
        "  name: reliability-rewrite",
        "spec:",
        "  rules:",
        "    - matches:",
        "        - model:",
        "            type: Exact",
        f"            value: {alias}",
        "      targets:",
    ]
    for name, weight in targets:
        lines += [f'        - modelRewrite: "{name}"', f"          weight: {weight}"]
    return "\n".join(lines) + "\n"


def malformed_variants(good_exist: Sequence[str], protected: Sequence[str]) -> list[bytes]:
    """Bad adapters files that would unload `protected` if any part of them were applied."""
    base = adapters_yaml(good_exist, protected)
    dup = adapters_yaml(good_exist, [*protected, protected[0]])
    return [
        (base + "  extra: [unclosed\n").encode(),  # YAML syntax error at the end
        dup.encode(),  # duplicate id in ensureNotExist
        base.replace("  name: reliability", "  port: not-a-number").encode(),  # wrong type
        base.replace(f"      source: {source_of(good_exist[0])}\n", "", 1).encode(),  # missing source
        (base + "---\n" + base).encode(),  # two documents
        b"ensureNotExist:\n  models:\n" + b"".join(f"  - id: {p}\n".encode() for p in protected),
    ]


def binary_variants(rng: random.Random) -> list[bytes]:
    """Files that are not UTF-8 text."""
    return [
        bytes(rng.getrandbits(8) for _ in range(4096)) + b"\x00",
        adapters_yaml(["x"]).encode("utf-16"),
        b"vLLMLoRAConfig:\n  name: \xff\xfe\xfa\n",
    ]
