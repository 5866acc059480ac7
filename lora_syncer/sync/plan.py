"""Decide what one reconcile pass must do (pure: plain data in, plain data out).

Desired state comes from the adapters file, observed state from one `GET /v1/models`. The
plan lists actions (load, reload, unload) and, for adapters that will not be touched, why.
Retry timing is not decided here: the reconciler drops actions whose adapter is backing off.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Literal

from lora_syncer.config.adapters import AdaptersConfig, DesiredAdapter
from lora_syncer.sources.errors import InvalidSource
from lora_syncer.sources.uri import ArchiveSource, S3Source, parse_source, redact_url, remote_source_allowed

BaseModelPolicy = Literal["ignore", "warn", "enforce"]


class Op(StrEnum):
    LOAD = "load"
    RELOAD = "reload"  # a new source for a loaded name
    UNLOAD = "unload"


class SkipReason(StrEnum):
    CONFLICT = "conflict"
    BASE_MODEL_MISMATCH = "base_model_mismatch"
    FORBIDDEN_SOURCE = "forbidden_source"


@dataclass(frozen=True, slots=True)
class ObservedModel:
    """One entry of `GET /v1/models`. `parent` is None for a base model."""

    id: str
    root: str | None = None
    parent: str | None = None

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    adapter_id: str
    source: str | None = None
    # For RELOAD: True when the server can swap weights in place (vLLM >= 0.15).
    inplace: bool = False
    reason: str = ""
    # A remote source not in the adapter cache yet: `source` is the declared s3:// or https://
    # source, fetched (and verified against `checksum`) before vLLM loads the cached copy.
    fetch: bool = False
    checksum: str | None = None


@dataclass(frozen=True)
class Skip:
    adapter_id: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class PlanOptions:
    prune: bool = False
    # --prune-max: `3` or `50%` (of the loaded adapters); see `prune_limit`.
    prune_max: str = "50%"
    # Prune unloads already confirmed (held once, then unchanged for a resync): not held again.
    prune_confirmed: frozenset[str] = frozenset()
    base_model_policy: BaseModelPolicy = "warn"
    allowed_sources: tuple[str, ...] = ()
    supports_inplace: bool = True
    # --adapter-cache is set: s3:// and https:// sources may be fetched (refused otherwise).
    remote_sources: bool = False


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    skips: tuple[Skip, ...] = ()
    in_sync: tuple[str, ...] = ()  # declared present and loaded with the declared source
    absent: tuple[str, ...] = ()  # declared absent and not loaded
    base_model_warnings: tuple[Skip, ...] = field(default=())  # policy "warn": loaded anyway
    # --prune unloads above --prune-max, not in `actions` until confirmed (see `prune_limit`).
    held: tuple[str, ...] = ()
    held_limit: int = 0

    @property
    def is_noop(self) -> bool:
        return not self.actions


def prune_limit(text: str, loaded: int) -> int:
    """How many undeclared adapters one pass may unload: a count, or a share of those loaded.

    `50%` of 5 loaded is 2 (rounded down), so an edit that drops most of a file is held; `0`
    holds every prune; `100%` never holds.
    """
    if text.endswith("%"):
        return int(float(text[:-1]) * loaded // 100)
    return int(text)


# --- source policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRule:
    """One `--allowed-sources` entry: a prefix, or `re:<regex>` matched against the whole source."""

    pattern: str
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str) -> SourceRule:
        if text.startswith("re:"):
            return cls(text, re.compile(text[3:]))
        return cls(text, None)

    def allows(self, source: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(source) is not None
        prefix = self.pattern
        if prefix.startswith("/") or prefix.startswith("./"):
            # A local directory: refuse `..` tricks by comparing normalised paths on a path boundary.
            if ".." in source.replace("\\", "/").split("/"):
                return False
            norm = os.path.normpath(source)
            base = os.path.normpath(prefix)
            return norm == base or norm.startswith(base.rstrip("/") + "/")
        return source.startswith(prefix)


def source_allowed(source: str, rules: Sequence[str]) -> bool:
    """True when no rules are set, or any rule allows `source`.

    With rules set, a source with a `..` path segment is always refused: `myorg/../../tmp/x`
    would pass a hub prefix yet name a local directory to vLLM.
    """
    if not rules:
        return True
    if ".." in source.replace("\\", "/").split("/"):
        return False
    return any(SourceRule.parse(r).allows(source) for r in rules)


# Adapters declaring a remote source already in the cache: adapter id -> the cached version's
# directory (keyed by id, not by (source, checksum): one string lookup per adapter per pass).
Resolved = Mapping[str, str]

NEEDS_CACHE = (
    "{scheme}:// sources need --adapter-cache DIR (a volume shared with vLLM at the same path); set it"
)


_REMOTE_PREFIXES = ("s3://", "http://", "https://")


def is_remote(source: str) -> bool:
    """s3:// or http(s):// (whatever the case): fetched by lora-syncer, not handed to vLLM."""
    # Runs for every declared adapter every pass: no string copies unless the case is unusual.
    return "://" in source and (
        source.startswith(_REMOTE_PREFIXES) or source[:8].lower().startswith(_REMOTE_PREFIXES)
    )


@lru_cache(maxsize=65536)
def _parse_remote(source: str) -> S3Source | ArchiveSource | str:
    """The typed remote source, or the one-line reason it is invalid (memoised: runs every pass)."""
    try:
        parsed = parse_source(source)
    except InvalidSource as exc:
        return exc.message
    assert isinstance(parsed, S3Source | ArchiveSource)
    return parsed


def remote_refusal(source: str, options: PlanOptions) -> str | None:
    """Why a remote source cannot be fetched here (None: it can)."""
    return _refusal(source, options.remote_sources, options.allowed_sources)


@lru_cache(maxsize=65536)
def _refusal(source: str, remote_sources: bool, rules: tuple[str, ...]) -> str | None:
    # Memoised: a pure function of its arguments, asked for every remote adapter every pass.
    parsed = _parse_remote(source)
    if isinstance(parsed, str):
        return parsed
    if not remote_sources:
        return NEEDS_CACHE.format(scheme=source.split("://", 1)[0].lower())
    if not remote_source_allowed(parsed, rules):
        if not rules:
            return f"source {redact_url(source)}: plain http:// needs an --allowed-sources rule"
        return f"source {redact_url(source)} is not allowed by --allowed-sources"
    return None


_MEMO_MAX = 65536

# (remote, why it is refused or ""): what the plan needs to know about a declared source.
Verdict = tuple[bool, str]


@lru_cache(maxsize=8)
def _verdicts_for(remote_sources: bool, rules: tuple[str, ...]) -> dict[str, Verdict]:
    """source -> its verdict under one set of options, filled as sources are seen (bounded).

    One dict lookup per adapter per pass: a no-op pass with thousands of remote sources costs
    about what it costs with local ones. Pure: every entry is a function of its key and options.
    """
    return {}


def _verdict(source: str, memo: dict[str, Verdict], options: PlanOptions) -> Verdict:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    if is_remote(source):
        verdict = (True, _refusal(source, options.remote_sources, options.allowed_sources) or "")
    elif source_allowed(source, options.allowed_sources):
        verdict = (False, "")
    else:
        verdict = (False, f"source {source!r} is not allowed by --allowed-sources")
    memo[source] = verdict
    return verdict


def _base_model_ok(adapter: DesiredAdapter, served: frozenset[str]) -> bool:
    return adapter.base_model is None or not served or adapter.base_model in served


def served_base_models(observed: Iterable[ObservedModel]) -> frozenset[str]:
    """Names a base model is known by: the served name and the `--model` path or id."""
    names: set[str] = set()
    for m in observed:
        if not m.is_adapter:
            names.add(m.id)
            if m.root:
                names.add(m.root)
    return frozenset(names)


def make_plan(
    config: AdaptersConfig,
    observed: Sequence[ObservedModel],
    options: PlanOptions,
    resolved: Resolved | None = None,
) -> Plan:
    """What to do so the server matches `config`.

    A remote source is compared by the directory of its cached version (`resolved`: for this
    config's adapters, id -> directory), the path vLLM was given: an adapter fetched once is in
    sync on every later pass. One not resolved yet gets an action with `fetch=True`.
    """
    resolved = resolved or {}
    loaded = {m.id: m for m in observed if m.is_adapter}
    base_names = {m.id for m in observed if not m.is_adapter}
    served = served_base_models(observed)
    actions: list[Action] = []
    skips: list[Skip] = []
    warnings: list[Skip] = []
    in_sync: list[str] = []
    absent: list[str] = []
    declared: set[str] = set()
    verdicts = _verdicts_for(options.remote_sources, options.allowed_sources)

    for adapter in config.ensure_exist:
        declared.add(adapter.id)
        if adapter.id in config.conflicts:
            skips.append(
                Skip(adapter.id, SkipReason.CONFLICT, "listed in both ensureExist and ensureNotExist")
            )
            continue
        remote, refusal = verdicts.get(adapter.source) or _verdict(adapter.source, verdicts, options)
        if refusal:
            skips.append(Skip(adapter.id, SkipReason.FORBIDDEN_SOURCE, refusal))
            continue
        target: str | None = resolved.get(adapter.id) if remote else adapter.source
        if options.base_model_policy != "ignore" and not _base_model_ok(adapter, served):
            skip = Skip(
                adapter.id,
                SkipReason.BASE_MODEL_MISMATCH,
                f"base model {adapter.base_model!r} is not served here (serving: {', '.join(sorted(base_names))})",
            )
            if options.base_model_policy == "enforce":
                skips.append(skip)
                continue
            warnings.append(skip)
        current = loaded.get(adapter.id)
        if target is None:  # remote, not cached: fetch, then load (or reload) the cached copy
            shown = redact_url(adapter.source)
            actions.append(
                Action(
                    Op.LOAD if current is None else Op.RELOAD,
                    adapter.id,
                    adapter.source,
                    inplace=current is not None and options.supports_inplace,
                    reason=f"{shown} is not in the adapter cache yet",
                    fetch=True,
                    checksum=adapter.checksum,
                )
            )
        elif current is None:
            actions.append(Action(Op.LOAD, adapter.id, target, reason="declared in ensureExist, not loaded"))
        elif current.root is not None and current.root != target:
            actions.append(
                Action(
                    Op.RELOAD,
                    adapter.id,
                    target,
                    inplace=options.supports_inplace,
                    reason=f"loaded from {current.root!r}, declared source is "
                    f"{redact_url(adapter.source) if remote else adapter.source!r}",
                )
            )
        else:
            in_sync.append(adapter.id)

    for adapter in config.ensure_not_exist:
        declared.add(adapter.id)
        if adapter.id in config.conflicts:
            continue  # reported once, from the ensureExist side
        if adapter.id in loaded:
            actions.append(Action(Op.UNLOAD, adapter.id, reason="declared in ensureNotExist, still loaded"))
        else:
            absent.append(adapter.id)

    held: tuple[str, ...] = ()
    limit = 0
    if options.prune:
        pruned = sorted(a for a in loaded if a not in declared)
        limit = prune_limit(options.prune_max, len(loaded))
        if len(pruned) > limit and not set(pruned) <= options.prune_confirmed:
            # A truncated or mistyped file would empty the server: hold until confirmed.
            held = tuple(pruned)
        else:
            actions.extend(Action(Op.UNLOAD, a, reason="not declared (--prune)") for a in pruned)

    return Plan(
        actions=tuple(actions),
        skips=tuple(skips),
        in_sync=tuple(in_sync),
        absent=tuple(absent),
        base_model_warnings=tuple(warnings),
        held=held,
        held_limit=limit,
    )
