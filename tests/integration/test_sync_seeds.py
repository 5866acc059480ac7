"""The guides' ConfigMap sequences, delivered by kubelet-style swaps to a running sidecar."""

from __future__ import annotations

from sync_harness import SyncEnv, eventually, metric_value

from tests.support.seeds import GUIDES, seed_file

QWEN, LLAMA = GUIDES

SEED_002_INITIAL = seed_file(QWEN, "00-adapters")
SEED_002_CLEANUP = seed_file(QWEN, "05-adapters-cleanup")
SEED_000_INITIAL = seed_file(LLAMA, "00-adapters")
SEED_000_ROLLOUT = seed_file(LLAMA, "01-adapters-add-v2")
SEED_000_CLEANUP = seed_file(LLAMA, "04-adapters-cleanup")

SOURCE_002 = "ttt421/nec119-small-segment-lora"
SOURCE_000 = "Kawon/llama3.1-food-finetune_v14_r8"


async def test_seed_002_rollout_then_cleanup(sync_env: SyncEnv) -> None:
    """Guide 002: both adapters get loaded, then moving -v1 to ensureNotExist unloads it while -v2 stays."""
    env = sync_env
    env.write(SEED_002_INITIAL)
    # A long resync: every change below must come from the file watcher, not from the timer.
    await env.start(reconcile_trigger=60.0)
    await env.wait_loaded({"small-segment-lora-v1": SOURCE_002, "small-segment-lora-v2": SOURCE_002})
    assert [c.name for c in env.calls("load")] == ["small-segment-lora-v1", "small-segment-lora-v2"] or [
        c.name for c in env.calls("load")
    ] == ["small-segment-lora-v2", "small-segment-lora-v1"]

    env.write(SEED_002_CLEANUP)
    await env.wait_loaded({"small-segment-lora-v2": SOURCE_002})
    await env.wait_state("small-segment-lora-v1", "absent")
    assert [c.name for c in env.calls("unload")] == ["small-segment-lora-v1"]
    assert len(env.calls("load", "small-segment-lora-v2")) == 1  # never reloaded
    metrics = await env.metrics()
    assert metric_value(metrics, "lora_syncer_adapter_status", adapter_name="small-segment-lora-v1") == 0
    assert metric_value(metrics, "lora_syncer_adapter_status", adapter_name="small-segment-lora-v2") == 1
    env.assert_no_declared_unloaded()


async def test_seed_000_food_review_rollout(sync_env: SyncEnv) -> None:
    """Guide 000: food-review-1 alone, then -2 added next to it, then -1 unloaded and -2 kept."""
    env = sync_env
    env.write(SEED_000_INITIAL)
    await env.start(reconcile_trigger=60.0)
    await env.wait_loaded({"food-review-1": SOURCE_000})

    env.write(SEED_000_ROLLOUT)
    await env.wait_loaded({"food-review-1": SOURCE_000, "food-review-2": SOURCE_000})
    # The server's order is load order: the new version came after the old one, the old one untouched.
    assert list(env.emulator.loaded()) == ["food-review-1", "food-review-2"]
    assert len(env.calls("load", "food-review-1")) == 1

    env.write(SEED_000_CLEANUP)
    await env.wait_loaded({"food-review-2": SOURCE_000})
    await env.wait_state("food-review-1", "absent")
    assert [c.name for c in env.calls("unload")] == ["food-review-1"]

    # The adapters' base model is not the one this server serves: the default policy (warn) loads anyway.
    st = await env.status()
    assert st["adapters"]["food-review-2"]["state"] == "loaded"
    assert st["config"]["name"] == "vllm-llama3-8b-instruct-adapters"
    env.assert_no_declared_unloaded()


async def test_seed_002_started_from_cleanup_file_unloads_nothing_declared(sync_env: SyncEnv) -> None:
    """Starting on the cleanup file against a server holding both versions unloads only -v1."""
    env = sync_env
    async with env.http.post(
        env.emulator.url + "/v1/load_lora_adapter",
        json={"lora_name": "small-segment-lora-v1", "lora_path": SOURCE_002},
    ) as resp:
        assert resp.status == 200
    async with env.http.post(
        env.emulator.url + "/v1/load_lora_adapter",
        json={"lora_name": "small-segment-lora-v2", "lora_path": SOURCE_002},
    ) as resp:
        assert resp.status == 200
    env.emulator.clear_calls()
    env.write(SEED_002_CLEANUP)
    await env.start()
    await env.wait_loaded({"small-segment-lora-v2": SOURCE_002})
    await eventually(
        lambda: env.calls("unload") and [c.name for c in env.calls("unload")] == ["small-segment-lora-v1"],
        "one unload of -v1",
    )
    assert env.calls("load") == []  # -v2 was already there: nothing to load
