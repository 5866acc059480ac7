"""How the running syncer reacts to file changes: new sources, conflicts, bursts, pruning, and
files that vanish or are not text."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_value

from lora_syncer.emulator import EmulatorConfig

V1 = "org/adapter-v1"
V2 = "org/adapter-v2"


class TestSourceChange:
    async def test_new_source_is_loaded_in_place_on_a_recent_server(self, sync_env: SyncEnv) -> None:
        """On vLLM >= 0.15 a changed source reloads with load_inplace: new root, same list position, no unload."""
        env = sync_env
        env.write(adapters_yaml([("a", V1), ("b", V1), ("c", V1)]))
        await env.start(reconcile_trigger=60.0)
        await env.wait_loaded({"a": V1, "b": V1, "c": V1})
        order = list(env.emulator.loaded())

        env.write(adapters_yaml([("a", V1), ("b", V2), ("c", V1)]))
        await env.wait_loaded({"a": V1, "b": V2, "c": V1})
        assert list(env.emulator.loaded()) == order  # replaced in place, not appended
        reloads = [c for c in env.calls("load", "b") if c.path == V2]
        assert len(reloads) == 1 and reloads[0].load_inplace and reloads[0].status == 200
        assert env.calls("unload") == []
        assert (await env.adapter("b")) is not None
        b = await env.wait_state("b", "loaded")
        assert b["observedRoot"] == V2 and b["source"] == V2

    async def test_new_source_is_unload_then_load_on_an_old_server(
        self, env_factory: Callable[..., Awaitable[SyncEnv]]
    ) -> None:
        """On a server reporting vLLM 0.14.0 (no load_inplace) a changed source is an unload then a load."""
        env = await env_factory(EmulatorConfig(version="0.14.0"))
        env.allow_reload_unloads = True
        env.write(adapters_yaml([("a", V1), ("b", V1)]))
        await env.start(reconcile_trigger=60.0)
        await env.wait_loaded({"a": V1, "b": V1})
        st = await env.status()
        assert st["server"]["version"] == "0.14.0" and st["server"]["supportsLoadInplace"] is False

        env.write(adapters_yaml([("a", V1), ("b", V2)]))
        await env.wait_loaded({"a": V1, "b": V2})
        b_calls = [(c.op, c.path, c.load_inplace) for c in env.calls(name="b")]
        assert b_calls[-2:] == [("unload", None, False), ("load", V2, False)]
        assert env.calls("unload", "a") == []


async def test_id_in_both_lists_is_left_alone(sync_env: SyncEnv) -> None:
    """An id in ensureExist and ensureNotExist is reported as `conflict` and neither loaded nor unloaded."""
    env = sync_env
    env.write(adapters_yaml([("kept", V1), ("torn", V1)]))
    await env.start(reconcile_trigger=0.3)
    await env.wait_loaded({"kept": V1, "torn": V1})

    env.write(adapters_yaml([("kept", V1), ("torn", V1), ("fresh", V2)], not_exist=["torn", "fresh"]))
    torn = await env.wait_state("torn", "conflict")
    fresh = await env.wait_state("fresh", "conflict")
    assert "both" in (torn["lastError"] or "") and "both" in (fresh["lastError"] or "")
    passes = await env.passes()
    await eventually(lambda: _more_passes(env, passes + 2), "two more resync passes")
    assert env.calls("unload") == []
    assert env.calls("load", "fresh") == []
    assert set(env.emulator.loaded()) == {"kept", "torn"}
    st = await env.status()
    warnings = st["config"]["warnings"]
    assert any(w["path"].startswith("vLLMLoRAConfig.ensureNotExist.models[0]") for w in warnings)


async def _more_passes(env: SyncEnv, at_least: float) -> bool:
    return await env.passes() >= at_least


async def test_burst_of_swaps_coalesces_into_few_passes(sync_env: SyncEnv) -> None:
    """50 swaps in a burst cost a handful of passes (coalesced) and the server ends on the last file."""
    env = sync_env
    env.write(adapters_yaml([("seed", V1)]))
    # Every pass takes at least `slow` seconds (slow GET /v1/models), so a pass-per-event syncer
    # would need 50 * slow; a coalescing one needs about burst_time / slow + 2.
    slow = 0.2
    # --prune so that "the server matches the last file" means exactly its adapters.
    await env.start(reconcile_trigger=60.0, prune=True, prune_max="100%")
    await env.wait_loaded({"seed": V1})
    before = await env.passes()
    env.emulator.faults.latency = {"models": slow}

    files = [adapters_yaml([(f"burst-{i}", f"org/burst-{i}")]) for i in range(50)]

    def burst() -> float:
        started = time.monotonic()
        for text in files:
            env.write(text)
        return time.monotonic() - started

    burst_seconds = await asyncio.to_thread(burst)
    await env.wait_loaded({"burst-49": "org/burst-49"})
    env.emulator.faults.latency = {}
    # Let the last pass record itself.
    await eventually(lambda: _idle(env), "the syncer idle")
    passes = await env.passes() - before
    bound = 2 + burst_seconds / slow + 1
    assert 1 <= passes <= bound, f"{passes} passes for 50 swaps in {burst_seconds:.3f}s (bound {bound:.1f})"
    assert passes < 50
    # Intermediate files seen by a pass may have been applied, but far from all 50 of them.
    assert len(env.calls("load")) - 1 <= passes


async def test_churn_does_not_grow_memory(sync_env: SyncEnv) -> None:
    """Memory held outside the emulator does not grow across 60 swaps between two 20-adapter files."""
    env = sync_env
    files = [
        adapters_yaml([(f"set{k}-{i}", f"org/set{k}-{i}") for i in range(20)], name=f"churn-{k}")
        for k in (0, 1)
    ]
    env.write(files[0])
    await env.start(reconcile_trigger=60.0, prune=True, prune_max="100%", max_concurrency=8)
    await env.wait_loaded({f"set0-{i}": f"org/set0-{i}" for i in range(20)})
    # Only what the syncer, its client and servers hold: the emulator's call log and this test's
    # history grow by design.
    ignore = [
        tracemalloc.Filter(False, "*/lora_syncer/emulator/*"),
        tracemalloc.Filter(False, "*/sync_harness.py"),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ]

    async def churn(swaps: int) -> None:
        for n in range(swaps):
            k = (n + 1) % 2
            env.write(files[k])
            await env.wait_loaded({f"set{k}-{i}": f"org/set{k}-{i}" for i in range(20)})

    tracemalloc.start()
    try:
        await churn(10)  # warm up: caches, pools, interned names
        gc.collect()
        before = sum(s.size for s in tracemalloc.take_snapshot().filter_traces(ignore).statistics("filename"))
        await churn(50)
        gc.collect()
        after_snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
        after = sum(s.size for s in after_snapshot.statistics("filename"))
    finally:
        tracemalloc.stop()
    growth = after - before
    top = after_snapshot.statistics("lineno")[:5]
    assert growth < 512 * 1024, f"grew {growth} bytes over 50 swaps; top: {top}"


async def _idle(env: SyncEnv) -> bool:
    assert env.sidecar is not None and env.sidecar.reconciler is not None
    return not env.sidecar.reconciler.pass_lock.locked()


class TestPrune:
    async def _preload(self, env: SyncEnv, name: str) -> None:
        async with env.http.post(
            env.emulator.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": V1}
        ) as resp:
            assert resp.status == 200

    async def test_undeclared_adapter_is_kept_by_default(self, sync_env: SyncEnv) -> None:
        """Without --prune an adapter loaded by someone else stays loaded."""
        env = sync_env
        await self._preload(env, "stray")
        env.write(adapters_yaml([("mine", V1)]))
        await env.start(reconcile_trigger=0.2)
        await env.wait_loaded({"stray": V1, "mine": V1})
        before = await env.passes()
        await eventually(lambda: _more_passes(env, before + 2), "two resync passes")
        assert env.calls("unload") == []

    async def test_prune_unloads_undeclared_adapters(self, sync_env: SyncEnv) -> None:
        """With --prune an adapter the file does not declare is unloaded; declared ones stay."""
        env = sync_env
        await self._preload(env, "stray")
        env.write(adapters_yaml([("mine", V1)]))
        await env.start(prune=True)
        await env.wait_loaded({"mine": V1})
        assert [c.name for c in env.calls("unload")] == ["stray"]


class TestFileTrouble:
    async def test_deleted_file_unloads_nothing_and_restore_resumes(self, sync_env: SyncEnv) -> None:
        """A file that disappears keeps the last good config (nothing unloaded); a restored file is applied."""
        env = sync_env
        env.write(adapters_yaml([("a", V1), ("b", V1)]))
        await env.start(reconcile_trigger=0.2)
        await env.wait_loaded({"a": V1, "b": V1})

        env.remove_file()
        st = await eventually(_config_error(env), "the missing file reported")
        assert "not found" in st["config"]["error"][0]["message"]
        assert metric_value(await env.metrics(), "lora_syncer_config_valid") == 0
        before = await env.passes()
        await eventually(lambda: _more_passes(env, before + 2), "two passes without the file")
        assert env.calls("unload") == [] and set(env.emulator.loaded()) == {"a", "b"}
        code, ready = await env.get("/readyz")
        assert code == 200, ready  # the last good config is in force and loaded

        env.write(adapters_yaml([("b", V1), ("c", V2)], not_exist=["a"]))
        await env.wait_loaded({"b": V1, "c": V2})
        st = await env.status()
        assert st["config"]["error"] is None
        assert metric_value(await env.metrics(), "lora_syncer_config_valid") == 1

    async def test_binary_file_is_rejected_and_nothing_unloaded(self, sync_env: SyncEnv) -> None:
        """A non-UTF-8 file is an error in /status ("not UTF-8"), the last good config stays in force."""
        env = sync_env
        env.write(adapters_yaml([("a", V1)]))
        await env.start(reconcile_trigger=0.2)
        await env.wait_loaded({"a": V1})
        env.write(b"\xff\xfe\x00\x01binary\x80\x81" * 64)
        st = await eventually(_config_error(env), "the binary file reported")
        assert "UTF-8" in st["config"]["error"][0]["message"]
        assert st["config"]["error"][0]["file"].endswith("configmap.yaml")
        before = await env.passes()
        await eventually(lambda: _more_passes(env, before + 2), "two passes on the bad file")
        assert env.calls("unload") == [] and env.emulator.loaded() == {"a": V1}
        env.write(adapters_yaml([("a", V1), ("b", V2)]))
        await env.wait_loaded({"a": V1, "b": V2})

    async def test_one_mebibyte_file_is_applied(self, sync_env: SyncEnv) -> None:
        """A file at the ConfigMap size limit (1 MiB: 3,000 adapters padded with a comment) is applied."""
        env = sync_env
        env.write(adapters_yaml([("a", V1)]))
        await env.start(reconcile_trigger=60.0, max_concurrency=32)
        await env.wait_loaded({"a": V1})
        n = 3000
        text = adapters_yaml([(f"big-{i}", f"org/big-{i}") for i in range(n)])
        pad = 1024 * 1024 - len(text.encode()) - 2
        assert pad > 0
        text += "#" + "x" * pad + "\n"
        assert len(text.encode()) == 1024 * 1024
        env.write(text)
        await eventually(lambda: len(env.emulator.loaded()) == n + 1, f"{n} more adapters loaded", within=60)
        assert env.calls("unload") == []  # `a` is undeclared now, and kept (no --prune)
        assert metric_value(await env.metrics(), "lora_syncer_config_valid") == 1

    async def test_oversized_file_is_rejected(self, sync_env: SyncEnv) -> None:
        """A file far beyond the ConfigMap limit is refused with a message naming the limit; nothing unloaded."""
        env = sync_env
        env.write(adapters_yaml([("a", V1)]))
        await env.start(reconcile_trigger=0.2)
        await env.wait_loaded({"a": V1})
        env.write(adapters_yaml([("a", V1)]) + "#" + "x" * (3 * 1024 * 1024) + "\n")
        st = await eventually(_config_error(env), "the oversized file reported")
        assert "1 MiB" in st["config"]["error"][0]["message"]
        assert env.calls("unload") == [] and env.emulator.loaded() == {"a": V1}


def _config_error(env: SyncEnv) -> Callable[[], Awaitable[dict[str, object] | None]]:
    async def check() -> dict[str, object] | None:
        st = await env.status()
        return st if st["config"]["error"] else None

    return check


@pytest.mark.parametrize(
    "victim_in_newer",
    [
        pytest.param(True, id="declared-again"),
        # Found by the churn audit: the newer files no longer asked for the unload, and without
        # --prune an undeclared adapter is left alone; the queued unload still went out.
        pytest.param(False, id="no-longer-mentioned"),
    ],
)
async def test_unload_planned_from_an_older_file_is_skipped(sync_env: SyncEnv, victim_in_newer: bool) -> None:
    """A pass outlived by a newer edit does not unload what the newer file no longer asks to unload.

    The pass planned from file B (victim in ensureNotExist) is busy with slow loads when file C
    declares victim again, or no longer mentions it; the queued unload is skipped, and the next
    pass sees C.
    """
    env = sync_env
    env.write(adapters_yaml([("keep", V1), ("victim", V1)]))
    await env.start(max_concurrency=1, reconcile_trigger=60.0)
    await env.wait_loaded({"keep": V1, "victim": V1})
    env.emulator.faults.load_delay = 1.0
    env.write(adapters_yaml([("keep", V1), ("slow-1", V2), ("slow-2", V2)], not_exist=["victim"]))
    await env.wait_state("slow-1", "loading")
    # Counted while pass B is still busy (two 1 s loads): B's end and the pass that C's edit
    # queues are both still to come, however fast that last (no-op) pass runs.
    passes = await env.passes()
    newer = [("keep", V1), ("victim", V1)] if victim_in_newer else [("keep", V1)]
    env.write(adapters_yaml([*newer, ("slow-1", V2), ("slow-2", V2)]))
    await env.wait_loaded({"keep": V1, "victim": V1, "slow-1": V2, "slow-2": V2})
    await eventually(lambda: _more_passes(env, passes + 2), "pass B's end and one more pass after the edit")
    assert env.calls("unload", "victim") == []
    assert "victim" in env.emulator.loaded()
