"""Every long-lived task of a running sidecar is supervised: one that dies turns /healthz red
and is logged by name with its exception; `run` then exits 1. Stopping on purpose is not a death.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs
from sync_harness import SyncEnv, adapters_yaml, eventually

from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.proxy.options import ProxyOptions

RULES = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: r}
spec:
  rules:
  - matches: [{model: {type: Exact, value: alias}}]
    targets:
    - {modelRewrite: m-0, weight: 1}
"""


async def unhealthy(env: SyncEnv) -> dict[str, Any] | None:
    code, body = await env.get("/healthz")
    return body if code != 200 else None


def task_named(name: str) -> asyncio.Task[Any]:
    return next(t for t in asyncio.all_tasks() if t.get_name() == name)


async def test_a_task_that_raises_turns_healthz_red_and_is_logged(sync_env: SyncEnv) -> None:
    env = sync_env
    env.write(adapters_yaml([("m-0", "org/m-0")]))
    sidecar = await env.start()
    await env.wait_loaded({"m-0"})
    code, body = await env.get("/healthz")
    assert (code, body["reasons"]) == (200, [])
    assert sidecar.adapters_file is not None

    async def broken() -> str:
        raise RuntimeError("disk on fire")

    sidecar.adapters_file.file.reload = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        env.write(adapters_yaml([("m-1", "org/m-1")]))  # a file event: the reloader reads, and dies
        body = await eventually(lambda: unhealthy(env), "/healthz non-200")
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["task reload:adapters-file died: RuntimeError: disk on fire"]
    died = [e for e in logs if e["event"] == "background task died"]
    assert len(died) == 1 and died[0]["task"] == "reload:adapters-file"
    assert "disk on fire" in died[0]["error"] and died[0]["exc_info"] is not None
    assert sidecar.supervisor.died.is_set()
    assert await sidecar.wait(asyncio.Event()) == 1  # `run` exits 1


async def test_a_task_cancelled_from_outside_turns_healthz_red(sync_env: SyncEnv) -> None:
    env = sync_env
    env.write(adapters_yaml([("m-0", "org/m-0")]))
    await env.start()
    await env.wait_loaded({"m-0"})
    with capture_logs() as logs:
        task_named("reconciler").cancel()
        body = await eventually(lambda: unhealthy(env), "/healthz non-200")
    assert body["reasons"] == ["task reconciler was cancelled"]
    assert [e["task"] for e in logs if e["event"] == "background task stopped unexpectedly"] == ["reconciler"]


async def test_the_proxy_rules_reloader_is_supervised_too(sync_env: SyncEnv, tmp_path: Path) -> None:
    env = sync_env
    env.write(adapters_yaml([("m-0", "org/m-0")]))
    rules = ConfigMapVolume(tmp_path / "rules")
    rules.write({"rules.yaml": RULES})
    options = ProxyOptions(
        upstream=env.emulator.url, rules_path=rules.path("rules.yaml"), host="127.0.0.1", port=0
    )
    assert env.sidecar is None
    from lora_syncer.app import Sidecar

    sidecar = Sidecar(env.settings(), options)
    env.sidecar = sidecar
    await sidecar.start()
    assert {"reconciler", "reload:adapters-file", "reload:rules-file"} <= set(sidecar.supervisor.running())
    rules_file = sidecar.proxy._source  # the proxy's ReloadingFile

    async def broken() -> str:
        raise ValueError("bad state")

    rules_file.file.reload = broken
    with capture_logs() as logs:
        rules.write({"rules.yaml": RULES.replace("weight: 1", "weight: 2")})
        body = await eventually(lambda: unhealthy(env), "/healthz non-200")
    assert body["reasons"] == ["task reload:rules-file died: ValueError: bad state"]
    assert [e["task"] for e in logs if e["event"] == "background task died"] == ["reload:rules-file"]


async def test_a_clean_stop_is_not_a_death(sync_env: SyncEnv) -> None:
    env = sync_env
    env.write(adapters_yaml([("m-0", "org/m-0")]))
    sidecar = await env.start()
    await env.wait_loaded({"m-0"})
    with capture_logs() as logs:
        await env.stop()
    assert sidecar.supervisor.dead() == {} and sidecar.supervisor.running() == []
    assert not [e for e in logs if e["log_level"] == "error"]
