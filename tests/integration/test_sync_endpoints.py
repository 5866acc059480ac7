"""The sidecar's own HTTP surface while it syncs: /readyz, /healthz, /metrics and /status."""

from __future__ import annotations

from typing import Any

from sync_harness import SyncEnv, adapters_yaml, eventually, metric_sum, metric_value

ADAPTERS = [(f"m-{i}", f"org/m-{i}") for i in range(6)]


async def test_readyz_waits_for_declared_adapters(sync_env: SyncEnv) -> None:
    """/readyz is 503 while the server is down or adapters load, and 200 only once every declared adapter is loaded."""
    env = sync_env
    await env.emulator.go_down()
    env.emulator.faults.load_delay = 0.05
    env.write(adapters_yaml(ADAPTERS))
    await env.start(health_check_timeout=0.1, reconcile_trigger=60.0, max_concurrency=2)
    code, body = await env.get("/readyz")
    assert code == 503 and body["status"] == "not ready" and body["reasons"]
    code, body = await env.get("/healthz")
    assert code == 200 and body["status"] == "ok"

    await env.emulator.come_up()
    seen: list[tuple[int, int]] = []

    async def ready_with_all_loaded() -> bool:
        loaded_before = len(env.emulator.loaded())
        code, _ = await env.get("/readyz")
        seen.append((code, loaded_before))
        if code == 200:
            # Readiness may only be granted once the server really has every declared adapter.
            assert len(env.emulator.loaded()) == len(ADAPTERS)
        return code == 200

    await eventually(ready_with_all_loaded, "/readyz 200", interval=0.005)
    assert any(code == 503 for code, _ in seen)


async def test_ready_when_started_is_ready_at_once(sync_env: SyncEnv) -> None:
    """With --ready-when=started /readyz is 200 even while vLLM is still down."""
    env = sync_env
    await env.emulator.go_down()
    env.write(adapters_yaml(ADAPTERS))
    await env.start(ready_when="started", health_check_timeout=0.1)
    code, body = await env.get("/readyz")
    assert code == 200 and body["status"] == "ready"
    await env.emulator.come_up()
    await env.wait_loaded(dict(ADAPTERS))


async def test_metrics_follow_the_adapters(sync_env: SyncEnv) -> None:
    """/metrics keeps the upstream gauge per adapter (1 loaded, 0 not) and counts passes, calls, reloads and server state."""
    env = sync_env
    env.write(adapters_yaml(ADAPTERS[:3]))
    await env.start(reconcile_trigger=60.0)
    await env.wait_loaded(dict(ADAPTERS[:3]))

    async def gauges(expected: dict[str, float]) -> str | None:
        text = await env.metrics()
        got = {n: metric_value(text, "lora_syncer_adapter_status", adapter_name=n) for n in expected}
        return text if got == expected else None

    text = await eventually(lambda: gauges({"m-0": 1, "m-1": 1, "m-2": 1}), "gauges at 1")
    assert "# HELP lora_syncer_adapter_status Status of LoRA adapters (1=loaded, 0=not_loaded)" in text
    assert metric_value(text, "lora_syncer_server_up") == 1
    assert metric_value(text, "lora_syncer_config_valid") == 1
    assert metric_sum(text, "lora_syncer_reconcile_passes_total") >= 1
    assert metric_value(text, "lora_syncer_reconcile_duration_seconds_count") is not None
    assert metric_value(text, "lora_syncer_adapter_operations_total", op="load", result="ok") == 3
    assert (metric_value(text, "lora_syncer_config_reloads_total", result="changed") or 0) >= 1
    assert metric_value(text, "lora_syncer_adapters", state="loaded") == 3
    since = metric_value(text, "lora_syncer_config_seconds_since_last_success")
    assert since is not None and 0 <= since < 3600

    env.write(adapters_yaml(ADAPTERS[1:3], not_exist=["m-0"]))
    text = await eventually(lambda: gauges({"m-0": 0, "m-1": 1, "m-2": 1}), "m-0 gauge at 0")
    assert metric_value(text, "lora_syncer_adapter_operations_total", op="unload", result="ok") == 1

    await env.emulator.go_down()
    env.write(adapters_yaml(ADAPTERS[1:3], not_exist=["m-0"], name="touch"))

    async def server_down() -> bool:
        return metric_value(await env.metrics(), "lora_syncer_server_up") == 0

    await eventually(server_down, "lora_syncer_server_up 0")


async def test_adapter_gauge_drops_when_the_server_forgets(sync_env: SyncEnv) -> None:
    """After a vLLM restart that the syncer cannot repair, each adapter's gauge goes back to 0."""
    env = sync_env
    env.write(adapters_yaml(ADAPTERS[:2]))
    await env.start(reconcile_trigger=0.2)
    await env.wait_loaded(dict(ADAPTERS[:2]))

    async def gauges(value: float) -> bool:
        text = await env.metrics()
        return all(
            metric_value(text, "lora_syncer_adapter_status", adapter_name=n) == value for n, _ in ADAPTERS[:2]
        )

    await eventually(lambda: gauges(1), "gauges at 1")
    env.emulator.faults.runtime_lora_updating = False  # the restarted server refuses loads
    await env.emulator.restart(down_seconds=0.1)
    await eventually(lambda: gauges(0), "gauges back at 0")
    env.emulator.faults.runtime_lora_updating = True
    await eventually(lambda: gauges(1), "gauges at 1 again")


async def test_status_json_shape(sync_env: SyncEnv) -> None:
    """/status names the config (file, name, generation, load time), the server, the pass counters and each adapter."""
    env = sync_env
    env.write(adapters_yaml(ADAPTERS[:2], not_exist=["old"], name="shape"))
    await env.start()
    await env.wait_loaded(dict(ADAPTERS[:2]))
    await env.wait_state("old", "absent")
    code, body = await env.get("/status")
    assert code == 200
    assert isinstance(body["version"], str) and body["uptimeSeconds"] >= 0
    st: dict[str, Any] = body["syncer"]
    assert set(st) >= {"config", "server", "sync", "adapters"}
    cfg = st["config"]
    assert cfg["file"] == str(env.config_path) and cfg["name"] == "shape"
    assert isinstance(cfg["generation"], str) and len(cfg["generation"]) == 12
    assert cfg["loadedAt"] > 0 and cfg["error"] is None and cfg["warnings"] == []
    server = st["server"]
    assert server["url"] == env.emulator.url and server["reachable"] is True
    assert server["version"] == "0.32.0" and server["supportsLoadInplace"] is True
    assert server["runtimeUpdatingDisabled"] is False and server["baseModels"] == ["Qwen/Qwen3-32B"]
    assert st["sync"]["passes"] >= 1 and st["sync"]["lastPassResult"] == "ok"
    assert st["sync"]["counts"] == {"loaded": 2, "absent": 1}
    m0 = st["adapters"]["m-0"]
    assert m0 == {
        **m0,
        "declared": "present",
        "source": "org/m-0",
        "baseModel": "Qwen/Qwen3-32B",
        "observedRoot": "org/m-0",
        "state": "loaded",
        "lastError": None,
        "attempts": 0,
        "nextRetryInSeconds": None,
    }
    assert st["adapters"]["old"]["declared"] == "absent" and st["adapters"]["old"]["state"] == "absent"


async def test_api_key_is_never_shown(sync_env: SyncEnv) -> None:
    """With --api-key set the syncer works and the key appears in none of /status, /metrics, /readyz, /healthz."""
    env = sync_env
    secret = "sk-test-very-secret-0123"
    env.write(adapters_yaml(ADAPTERS[:1]))
    await env.start(api_key=secret)
    await env.wait_loaded(dict(ADAPTERS[:1]))
    for path in ("/status", "/metrics", "/readyz", "/healthz"):
        _, body = await env.get(path)
        assert secret not in str(body)
