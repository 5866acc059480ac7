"""The planner and remote sources (pure): compare with the resolved cache path, fetch what is
not cached, refuse what cannot be fetched here, and parse the checksum field."""

from __future__ import annotations

import pytest

from lora_syncer.config.adapters import AdaptersConfig, DesiredAdapter, parse_adapters_text
from lora_syncer.config.errors import ConfigError
from lora_syncer.sync.plan import ObservedModel, Op, PlanOptions, SkipReason, make_plan

BASE = ObservedModel("Qwen/Qwen3-32B")
SRC = "s3://models/team/sql/"
SUM = "sha256:" + "a" * 64
CACHED = "/cache/models-team-sql-" + "0" * 32
ON = PlanOptions(remote_sources=True)


def config(*adapters: DesiredAdapter) -> AdaptersConfig:
    return AdaptersConfig(ensure_exist=adapters)


def test_not_cached_is_fetched_then_loaded() -> None:
    plan = make_plan(config(DesiredAdapter("sql", SRC, checksum=SUM)), [BASE], ON)
    (action,) = plan.actions
    assert (action.op, action.fetch, action.source, action.checksum) == (Op.LOAD, True, SRC, SUM)


def test_loaded_from_the_resolved_path_is_in_sync() -> None:
    observed = [BASE, ObservedModel("sql", root=CACHED, parent="Qwen/Qwen3-32B")]
    plan = make_plan(config(DesiredAdapter("sql", SRC, checksum=SUM)), observed, ON, {"sql": CACHED})
    assert plan.actions == () and plan.in_sync == ("sql",)


def test_a_new_version_reloads_from_its_cached_path_or_fetches_first() -> None:
    observed = [BASE, ObservedModel("sql", root=CACHED, parent="Qwen/Qwen3-32B")]
    new = "sha256:" + "b" * 64
    # The new version is not in the cache (nothing resolved for it): fetch, then reload.
    fetch = make_plan(config(DesiredAdapter("sql", SRC, checksum=new)), observed, ON, {})
    assert [(a.op, a.fetch) for a in fetch.actions] == [(Op.RELOAD, True)]
    other = "/cache/models-team-sql-" + "1" * 32
    ready = make_plan(config(DesiredAdapter("sql", SRC, checksum=new)), observed, ON, {"sql": other})
    assert [(a.op, a.fetch, a.source) for a in ready.actions] == [(Op.RELOAD, False, other)]


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        (SRC, PlanOptions(), "s3:// sources need --adapter-cache DIR"),
        ("https://h.example/a.tar.gz", PlanOptions(), "https:// sources need --adapter-cache DIR"),
        ("http://h.example/a.tar.gz", ON, "plain http:// needs an --allowed-sources rule"),
        (SRC, PlanOptions(remote_sources=True, allowed_sources=("s3://models/other",)), "not allowed"),
        ("https://u:p@h.example/a.tgz", ON, "user information in a URL is refused"),
        ("https://h.example/a.bin", ON, "must name a .tar.gz, .tgz or .zip archive"),
    ],
)
def test_refused_remote_sources(source: str, options: PlanOptions, message: str) -> None:
    plan = make_plan(config(DesiredAdapter("x", source)), [BASE], options)
    (skip,) = plan.skips
    assert skip.reason == SkipReason.FORBIDDEN_SOURCE and message in skip.detail
    assert "u:p" not in skip.detail


def test_prefix_rules_do_not_admit_lookalike_hosts() -> None:
    options = PlanOptions(remote_sources=True, allowed_sources=("https://models.corp",))
    ok = make_plan(config(DesiredAdapter("a", "https://models.corp/a.tgz")), [BASE], options)
    bad = make_plan(config(DesiredAdapter("a", "https://models.corp.evil.net/a.tgz")), [BASE], options)
    assert ok.actions and not ok.skips
    assert not bad.actions and bad.skips[0].reason == SkipReason.FORBIDDEN_SOURCE


def test_checksum_field() -> None:
    text = f"vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: a\n      source: {SRC}\n      checksum: {SUM.upper().replace('SHA256', 'sha256')}\n"
    assert parse_adapters_text(text, "f.yaml").ensure_exist[0].checksum == SUM
    with pytest.raises(ConfigError) as info:
        parse_adapters_text(text.replace(SUM.upper().replace("SHA256", "sha256"), "md5:abc"), "f.yaml")
    (issue,) = info.value.issues
    assert issue.line == 6 and issue.path.endswith("models[0].checksum")
    assert "sha256:<64 hex digits>" in issue.message


def test_verdicts_are_per_options_and_refusals_stay_per_source() -> None:
    """The per-source memo never carries one option set's verdict into another's."""
    cfg = config(DesiredAdapter("a", SRC), DesiredAdapter("b", "/adapters/b"))
    on = make_plan(cfg, [BASE], ON)
    assert [(x.adapter_id, x.fetch) for x in on.actions] == [("a", True), ("b", False)]
    off = make_plan(cfg, [BASE], PlanOptions())
    assert [s.adapter_id for s in off.skips] == ["a"] and [x.adapter_id for x in off.actions] == ["b"]
    ruled = make_plan(cfg, [BASE], PlanOptions(remote_sources=True, allowed_sources=("/adapters/",)))
    assert [s.adapter_id for s in ruled.skips] == ["a"] and "not allowed" in ruled.skips[0].detail
    assert [x.adapter_id for x in ruled.actions] == ["b"]
    # The first option set again: same answers as the first time.
    assert make_plan(cfg, [BASE], ON).actions == on.actions
