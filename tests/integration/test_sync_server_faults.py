"""The syncer against a misbehaving vLLM: down at start, restarts, 5xx and dropped connections,
slow loads, runtime updating disabled. After faults stop it converges, never having unloaded
a declared adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs
from sync_harness import SyncEnv, adapters_yaml, eventually

from lora_syncer.emulator import EmulatorConfig

ADAPTERS = [(f"ad-{i}", f"org/ad-{i}") for i in range(12)]
ALL = dict(ADAPTERS)


async def _status_where(env: SyncEnv, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    st = await env.status()
    return st if check(st) else None


async def test_server_down_at_start_beyond_health_timeout(sync_env: SyncEnv) -> None:
    """vLLM down longer than --health-check-timeout: the syncer keeps retrying and loads everything once it is up."""
    env = sync_env
    await env.emulator.go_down()
    env.write(adapters_yaml(ADAPTERS))
    await env.start(health_check_timeout=0.2, reconcile_trigger=60.0)

    # The first pass only runs once the start-up wait gave up: seeing it means the timeout passed.
    st = await eventually(
        lambda: _status_where(env, lambda s: s["sync"]["lastPassResult"] == "server_down"),
        "a pass finding the server down",
    )
    assert st["server"]["reachable"] is False and st["server"]["lastError"]
    code, _ = await env.get("/healthz")
    assert code == 200  # the process is alive and keeps trying
    code, body = await env.get("/readyz")
    assert code == 503, body

    await env.emulator.come_up()
    await env.wait_loaded(ALL)
    assert all(n == 1 for n in env.loads_of(list(ALL)).values())
    await eventually(lambda: _ready(env), "/readyz 200 after the server came up")


async def test_restarted_server_gets_every_adapter_back(sync_env: SyncEnv) -> None:
    """After a vLLM restart (adapters forgotten) every declared adapter is loaded again without touching the file."""
    env = sync_env
    env.write(adapters_yaml(ADAPTERS, not_exist=["gone"]))
    await env.start(reconcile_trigger=0.3)
    await env.wait_loaded(ALL)
    for _ in range(2):
        await env.emulator.restart(down_seconds=0.2)
        assert env.emulator.loaded() == {}
        await env.wait_loaded(ALL)
    assert all(n == 3 for n in env.loads_of(list(ALL)).values())
    assert env.calls("unload") == []


async def test_server_back_triggers_a_pass_at_once(sync_env: SyncEnv) -> None:
    """Once the syncer has seen the server down, the server coming back triggers a pass without waiting for the resync."""
    env = sync_env
    text = adapters_yaml(ADAPTERS)
    env.write(text)
    await env.start(reconcile_trigger=60.0)
    await env.wait_loaded(ALL)
    await env.emulator.go_down()
    assert env.sidecar is not None and env.sidecar.reconciler is not None
    env.sidecar.reconciler.trigger("test")  # look now (and find the server gone); no file event
    await eventually(
        lambda: _status_where(env, lambda s: s["server"]["reachable"] is False), "the server seen down"
    )
    with capture_logs() as logs:
        await env.emulator.come_up(forget_adapters=True)
        # The resync is a minute away: only the "server back" trigger can bring them back in time.
        await env.wait_loaded(ALL)
        await eventually(lambda: _ready(env), "/readyz 200")
    passes = [e for e in logs if e["event"] == "reconcile pass done" and e.get("actions")]
    assert any("server_back" in e["reasons"] for e in passes), passes


async def test_repeated_restarts_during_a_pass_converge(sync_env: SyncEnv) -> None:
    """vLLM restarting several times while a pass is loading: the syncer converges and never unloads."""
    env = sync_env
    many = [(f"r-{i}", f"org/r-{i}") for i in range(30)]
    env.emulator.faults.load_delay = 0.03
    env.write(adapters_yaml(many))
    await env.start(reconcile_trigger=0.5)
    for _ in range(3):
        await eventually(lambda: env.emulator.call_log.admin_in_flight > 0, "a load in flight")
        await env.emulator.restart(down_seconds=0.1)
    env.emulator.faults.load_delay = 0.0
    await env.wait_loaded(dict(many))
    assert env.calls("unload") == []


@pytest.mark.parametrize("mode", ["500", "drop", "drop_after"])
async def test_flaky_server_converges(sync_env: SyncEnv, mode: str) -> None:
    """With a third of calls failing (5xx, dropped before or after acting) the syncer still converges."""
    env = sync_env
    env.emulator.faults.update(
        {"failure_mode": mode, "failure_rate": {"load": 0.35, "models": 0.2, "health": 0.2}}
    )
    env.write(adapters_yaml(ADAPTERS))
    await env.start(reconcile_trigger=0.2)
    await eventually(lambda: sum(env.emulator.call_log.injected_failures.values()) >= 5, "faults firing")
    # Faults stop: the syncer must reach the file within a bounded time.
    env.emulator.reset_faults()
    await env.wait_loaded(ALL)
    assert env.calls("unload") == []
    for name in ALL:
        await env.wait_state(name, "loaded")
    # Whatever failed, no adapter was loaded twice with success: a lost answer is "already loaded".
    for name in ALL:
        assert sum(1 for c in env.calls("load", name) if c.status == 200) == 1


async def test_flaky_server_converges_while_faults_continue(sync_env: SyncEnv) -> None:
    """5xx bursts on 30% of admin and list calls do not stop the syncer from reaching the file."""
    env = sync_env
    env.emulator.faults.update({"failure_mode": "500", "failure_rate": {"load": 0.3, "models": 0.3}})
    env.write(adapters_yaml(ADAPTERS))
    await env.start(reconcile_trigger=0.2)
    await env.wait_loaded(ALL, within=30)
    assert env.emulator.call_log.injected_failures["load"] >= 1
    assert env.calls("unload") == []


async def test_slow_loads_beyond_the_call_timeout(sync_env: SyncEnv) -> None:
    """Loads slower than --load-timeout fail as timeouts (not adapter errors) and end loaded exactly once."""
    env = sync_env
    # Longer than the three tries of one pass put together (0.1 s each plus short waits).
    env.emulator.faults.load_delay = 3.0
    env.write(adapters_yaml(ADAPTERS[:3]))
    await env.start(load_timeout=0.1, reconcile_trigger=0.3)

    async def timed_out() -> dict[str, Any] | None:
        a = await env.adapter("ad-0")
        return a if a is not None and "in time" in (a["lastError"] or "") else None

    a = await eventually(timed_out, "a load timeout reported")
    assert a["state"] == "failed" and a["attempts"] >= 1
    env.emulator.faults.load_delay = 0.0
    await env.wait_loaded(dict(ADAPTERS[:3]))
    await eventually(lambda: _ready(env), "/readyz 200")
    for name, _ in ADAPTERS[:3]:
        assert sum(1 for c in env.calls("load", name) if c.status == 200) == 1


async def test_runtime_updating_disabled_is_reported_clearly(
    env_factory: Callable[..., Awaitable[SyncEnv]],
) -> None:
    """A server without VLLM_ALLOW_RUNTIME_LORA_UPDATING is reported as such in /status and logs, not as adapter errors."""
    env = await env_factory(EmulatorConfig(runtime_lora_updating=False))
    env.write(adapters_yaml(ADAPTERS))
    with capture_logs() as logs:
        await env.start(reconcile_trigger=0.2)
        st = await eventually(
            lambda: _status_where(env, lambda s: s["server"]["runtimeUpdatingDisabled"] is True),
            "runtime updating disabled in /status",
        )
        before = len(env.calls("load"))
        passes = await env.passes()

        async def more_passes() -> bool:
            return await env.passes() >= passes + 3

        await eventually(more_passes, "three more passes")
        st = await env.status()
    messages = [e["event"] for e in logs if e["log_level"] == "error"]
    assert any("VLLM_ALLOW_RUNTIME_LORA_UPDATING=true" in m for m in messages), (messages, logs[:20])
    assert st["sync"]["lastPassResult"] == "runtime_updating_disabled"
    failed = [a for a in st["adapters"].values() if a["lastError"]]
    assert failed and all("runtime LoRA updating is disabled" in a["lastError"] for a in failed)
    # One probe per pass at most, not one call per adapter per pass.
    assert len(env.calls("load")) - before <= (await env.passes()) - passes + 1

    env.emulator.faults.runtime_lora_updating = True
    await env.wait_loaded(ALL)
    st = await env.status()
    assert st["server"]["runtimeUpdatingDisabled"] is False


async def _ready(env: SyncEnv) -> bool:
    code, _ = await env.get("/readyz")
    return code == 200


async def test_no_storm_while_server_is_down(sync_env: SyncEnv) -> None:
    """While vLLM is unreachable the syncer probes /health with growing gaps and sends no admin calls."""
    env = sync_env
    env.write(adapters_yaml(ADAPTERS))
    await env.start(reconcile_trigger=0.1, health_check_interval=0.02)
    await env.wait_loaded(ALL)
    env.emulator.clear_calls()
    await env.emulator.go_down()
    await eventually(
        lambda: _status_where(env, lambda s: s["server"]["reachable"] is False), "the server seen down"
    )
    passes = await env.passes()
    await asyncio.sleep(1.0)  # a bounded window in which to count what the syncer does
    # With a 0.1 s resync a non-backing-off syncer would make ~10 passes; probes back off instead.
    assert await env.passes() - passes <= 2
    await env.emulator.come_up(forget_adapters=False)
    assert env.calls() == []
