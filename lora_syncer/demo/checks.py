"""What the demo checks after each step, and how it tells the syncer has settled (pure).

Everything here works on plain data (file texts, the `/status` document, the `/v1/models` ids,
request counts) so it can be tested without a server.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_syncer.config.adapters import parse_adapters
from lora_syncer.demo.steps import Expectation

# States the syncer leaves an adapter in until something changes: waiting ends there.
SETTLED_STATES = frozenset(
    {"loaded", "absent", "failed", "conflict", "base_model_mismatch", "forbidden_source"}
)


@dataclass
class Split:
    """How the requests of one round were served: counts by the answer's `model`, plus failures."""

    total: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # "HTTP 500", "connection refused", ...

    def add(self, model: str) -> None:
        self.counts[model] = self.counts.get(model, 0) + 1

    def fail(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def answered(self) -> int:
        return sum(self.counts.values())


def unified_diff(before: str, after: str, name: str) -> list[str]:
    """`diff -u` of two versions of a ConfigMap key, without trailing newlines on the lines."""
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{name} (before)",
            tofile=f"{name} (after)",
            n=2,
        )
    ]


def declared(adapters_text: str) -> dict[str, str]:
    """Adapter id -> `present`/`absent` as an adapters file declares them."""
    config = parse_adapters(adapters_text.encode("utf-8"), "configmap.yaml")
    out = {d.id: "absent" for d in config.ensure_not_exist if d.id not in config.conflicts}
    out.update({d.id: "present" for d in config.ensure_exist})
    return out


def syncer_settled(syncer_status: Mapping[str, Any], generation: str, wanted: Mapping[str, str]) -> bool:
    """True once the syncer has read the file of `generation` and acted on every adapter it declares.

    `syncer_status` is the `syncer` section of `/status`; `wanted` comes from `declared()`.
    """
    config = syncer_status.get("config") or {}
    if config.get("generation") != generation:
        return False
    adapters = syncer_status.get("adapters") or {}
    for adapter_id, want in wanted.items():
        entry = adapters.get(adapter_id)
        if entry is None or entry.get("declared") != want or entry.get("state") not in SETTLED_STATES:
            return False
    return True


def proxy_settled(proxy_status: Mapping[str, Any], generation: str) -> tuple[bool, str | None]:
    """(in force, error summary): whether the proxy serves the rules file of `generation`."""
    error = proxy_status.get("error")
    if proxy_status.get("generation") == generation:
        return True, None
    return False, (error or {}).get("summary") if error else None


def check_adapters(
    expect: Expectation, states: Mapping[str, Mapping[str, Any]], served: Sequence[str]
) -> list[str]:
    """Failures (empty: all held) of the adapter expectations against `/status` and `/v1/models`."""
    failures: list[str] = []
    for name in expect.loaded:
        entry = states.get(name) or {}
        state = entry.get("state", "unknown")
        if state != "loaded":
            detail = f": {entry['lastError']}" if entry.get("lastError") else ""
            failures.append(f"{name} is {state}, expected loaded{detail}")
        if name not in served:
            failures.append(f"{name} is missing from GET /v1/models")
    for name in expect.unloaded:
        entry = states.get(name) or {}
        state = entry.get("state", "unknown")
        if state != "absent":
            detail = f": {entry['lastError']}" if entry.get("lastError") else ""
            failures.append(f"{name} is {state}, expected absent{detail}")
        if name in served:
            failures.append(f"{name} is still listed by GET /v1/models")
    return failures


def check_split(expect: Mapping[str, int], split: Split) -> list[str]:
    """Failures (empty: all held) of an exact expected split."""
    failures: list[str] = []
    for name, want in expect.items():
        got = split.counts.get(name, 0)
        if got != want:
            failures.append(f"{name} served {got} of {split.total} requests, expected {want}")
    for name, got in split.counts.items():
        if name not in expect:
            failures.append(f"{got} request(s) were served by {name}, which this step does not expect")
    for reason, n in split.errors.items():
        failures.append(f"{n} request(s) failed ({reason})")
    return failures
