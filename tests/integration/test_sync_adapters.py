"""Per-adapter outcomes: one bad adapter never blocks the others, backs off on its own, and is
refused before reaching the server when policy says so."""

from __future__ import annotations

import itertools
from pathlib import Path

from sync_harness import SyncEnv, adapters_yaml, eventually, write_adapter_dir

GOOD = [(f"good-{i}", f"org/good-{i}") for i in range(10)]


async def test_one_failing_adapter_among_many(sync_env: SyncEnv, tmp_path: Path) -> None:
    """A bad path and a too-high rank fail with vLLM's reason in /status while every other adapter loads."""
    env = sync_env
    bad_rank = write_adapter_dir(tmp_path / "adapters", "rank64", rank=64)
    ok_local = write_adapter_dir(tmp_path / "adapters", "rank8", rank=8)
    declared = [
        ("bad-path", "/nonexistent/adapter"),
        *GOOD[:5],
        ("bad-rank", str(bad_rank)),
        ("local", str(ok_local)),
        *GOOD[5:],
    ]
    env.write(adapters_yaml(declared))
    await env.start(reconcile_trigger=0.1, backoff_initial=1.0, backoff_max=5.0)
    await env.wait_loaded({**dict(GOOD), "local": str(ok_local)})

    bad_path = await env.wait_state("bad-path", "failed")
    assert "No adapter found" in bad_path["lastError"]
    bad = await env.wait_state("bad-rank", "failed")
    assert "max_lora_rank" in bad["lastError"]
    assert bad_path["attempts"] >= 1 and bad_path["nextRetryInSeconds"] is not None

    # Per-adapter backoff: wait for four load calls of bad-path (a 404, not retried within a
    # pass), then check each gap against the schedule (1 s doubling, at most 10% early by
    # jitter): a loaded machine only widens gaps. A syncer without backoff retries on every pass,
    # about 1 s apart here (bad-rank's in-pass retries make the passes long): far inside the
    # last bound (3.2 s).
    await eventually(lambda: len(env.calls("load", "bad-path")) >= 4, "four load calls of bad-path")
    times = [c.t for c in env.calls("load", "bad-path")][:4]
    for failures, (earlier, later) in enumerate(itertools.pairwise(times), start=1):
        due = 1.0 * 2 ** (failures - 1)
        assert later - earlier >= 0.8 * due, (failures, times)
    assert all(len(env.calls("load", name)) == 1 for name, _ in GOOD)  # the good ones loaded once

    code, body = await env.get("/readyz")
    assert code == 200, body  # failed adapters cannot load: they do not hold readiness back
    st = await env.status()
    assert st["sync"]["counts"]["loaded"] == 11
    for name in ("bad-path", "bad-rank"):  # failed, or in the middle of a retry
        assert st["adapters"][name]["state"] in ("failed", "pending", "loading")
        assert st["adapters"][name]["attempts"] >= 1


async def test_backoff_resets_when_the_declaration_changes(sync_env: SyncEnv, tmp_path: Path) -> None:
    """A failing adapter backing off for long is retried at once when its declaration changes."""
    env = sync_env
    env.write(adapters_yaml([*GOOD[:2], ("fixme", "/nonexistent/v1")]))
    await env.start(reconcile_trigger=0.2, backoff_initial=60.0, backoff_max=300.0)
    failed = await env.wait_state("fixme", "failed")
    assert failed["attempts"] == 1 and failed["nextRetryInSeconds"] > 30
    assert len(env.calls("load", "fixme")) == 1

    fixed = write_adapter_dir(tmp_path / "adapters", "fixme-v2")
    env.write(adapters_yaml([*GOOD[:2], ("fixme", str(fixed))]))
    # The old backoff has about a minute to run: only a reset lets the new declaration load now.
    await env.wait_loaded({**dict(GOOD[:2]), "fixme": str(fixed)})
    a = await env.wait_state("fixme", "loaded")
    assert a["attempts"] == 0 and a["lastError"] is None and a["nextRetryInSeconds"] is None


async def test_allowed_sources_refuse_before_the_server(sync_env: SyncEnv, tmp_path: Path) -> None:
    """Sources outside --allowed-sources are `forbidden_source` and never sent to vLLM; allowed ones load."""
    env = sync_env
    allowed_dir = tmp_path / "adapters"
    inside = write_adapter_dir(allowed_dir, "inside")
    write_adapter_dir(tmp_path, "outside")
    traversal = f"{allowed_dir}/../outside"
    env.write(
        adapters_yaml(
            [
                ("hub-ok", "org/ok"),
                ("hub-evil", "evil/adapter"),
                ("local-ok", str(inside)),
                ("traversal", traversal),
                ("regex-ok", "team-a/x"),
            ]
        )
    )
    await env.start(allowed_sources=("org/", f"{allowed_dir}/", r"re:team-[a-z]/x"))
    await env.wait_loaded({"hub-ok": "org/ok", "local-ok": str(inside), "regex-ok": "team-a/x"})
    for name in ("hub-evil", "traversal"):
        a = await env.wait_state(name, "forbidden_source")
        assert "--allowed-sources" in a["lastError"]
        assert env.calls(name=name) == []
    # Nothing about them ever reached the server, in any pass.
    assert {c.name for c in env.calls()} == {"hub-ok", "local-ok", "regex-ok"}


async def test_base_model_policy_enforce_skips_other_base_models(sync_env: SyncEnv) -> None:
    """With --base-model-policy=enforce an adapter for a base model this server does not serve is skipped."""
    env = sync_env
    env.write(
        adapters_yaml(
            [
                ("qwen-lora", "org/qwen-lora"),
                ("llama-lora", "org/llama-lora", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
            base="Qwen/Qwen3-32B",
        )
    )
    await env.start(base_model_policy="enforce")
    await env.wait_loaded({"qwen-lora": "org/qwen-lora"})
    a = await env.wait_state("llama-lora", "base_model_mismatch")
    assert "meta-llama/Llama-3.1-8B-Instruct" in a["lastError"] and "Qwen/Qwen3-32B" in a["lastError"]
    assert env.calls(name="llama-lora") == []
    await eventually(lambda: _ready(env), "/readyz 200: a skipped adapter does not hold readiness back")


async def _ready(env: SyncEnv) -> bool:
    code, _ = await env.get("/readyz")
    return code == 200
