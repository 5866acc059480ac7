"""Automated rollouts end to end, in-process: the sidecar (syncer + proxy + rollout controller)
against an emulated vLLM, with the rules file written the way kubelet writes it.

The canary is made to misbehave with the emulator's per-model faults (`POST /_emulator/faults`):
requests naming it are answered 500 while the stable and the syncer's calls are untouched.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_value

from lora_syncer.app import Sidecar
from lora_syncer.commands.rollout import fetch_all, render, status_url
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.rollouts import (
    MODEL,
    V1,
    V2,
    RolloutPod,
    proxy_options,
    rules_with_rollout,
    set_canary_errors,
)

TARGET_HEADER = "x-lora-syncer-target"


GATED = """\
  - setWeight: 10
  - pause: {}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
"""


async def fail_canary(env: SyncEnv) -> float:
    """Every request for the canary answered 500 from now on (the emulator's control API); the instant."""
    at = time.time()
    await set_canary_errors(env.http, env.emulator.url, 1.0)
    return at


def reached(env: SyncEnv, model: str) -> int:
    """Inference requests for `model` that reached the emulator (answered, or failed by a fault)."""
    return env.emulator.call_log.served[model] + env.emulator.call_log.model_faults[(model, "error")]


class World(RolloutPod):
    """The one pod of these tests."""

    def __init__(self, env: SyncEnv, tmp: Path) -> None:
        self.env = env
        self.http = env.http
        self.rules = ConfigMapVolume(tmp / "rules")
        self.state_dir = tmp / "state"

    def write_rules(self, text: str) -> None:
        self.rules.write({"rules.yaml": text})

    async def start(self, *, control: bool = True) -> Sidecar:
        options = proxy_options(
            self.env.emulator.url,
            self.rules.path("rules.yaml"),
            self.state_dir,
            control=control,
            target_header=TARGET_HEADER,
        )
        sidecar = Sidecar(self.env.settings(), options)
        self.env.sidecar = sidecar
        await sidecar.start()
        return sidecar

    @property
    def base(self) -> str:
        return self.env.base

    @property
    def proxy_url(self) -> str:
        assert self.env.sidecar is not None
        return f"http://127.0.0.1:{self.env.sidecar.proxy.port}"


@pytest_asyncio.fixture
async def world(sync_env: SyncEnv, tmp_path: Path) -> World:
    sync_env.write(adapters_yaml([(V1, "org/seg-v1"), (V2, "org/seg-v2")]))
    return World(sync_env, tmp_path)


async def test_exact_splits_at_each_step_and_the_target_header(world: World) -> None:
    world.write_rules(rules_with_rollout(GATED))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("step 1 at 10%", phase="paused", step=1, canaryWeight=10)
    assert await world.send(20) == {V1: 18, V2: 2}

    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n"))
    await world.wait_for("step 3 at 50%", phase="paused", step=3, canaryWeight=50)
    assert await world.send(20) == {V1: 10, V2: 10}

    # The target header picks a target of the alias regardless of weights, and nothing else.
    assert await world.send(3, {TARGET_HEADER: "canary"}) == {V2: 3}
    assert await world.send(3, {TARGET_HEADER: "stable"}) == {V1: 3}
    assert await world.send(2, {TARGET_HEADER: V2}) == {V2: 2}
    async with world.env.http.post(
        world.proxy_url + "/v1/completions",
        json={"model": MODEL, "prompt": "hi"},
        headers={TARGET_HEADER: "Qwen/Qwen3-32B"},
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert "not a target of 'small-segment-lora'" in body["error"]["message"]

    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 3\n"))
    done = await world.wait_for("completed", phase="completed", canaryWeight=100)
    assert done["step"] == 5
    assert await world.send(20) == {V2: 20}
    metrics = await world.env.metrics()
    assert metric_value(metrics, "lora_syncer_rollout_phase", rollout="seg-v2", phase="completed") == 1
    assert metric_value(metrics, "lora_syncer_rollout_phase", rollout="seg-v2", phase="paused") == 0
    assert metric_value(metrics, "lora_syncer_rollout_canary_weight", rollout="seg-v2") == 100


async def test_a_rules_reload_does_not_revert_the_rollouts_weights(world: World) -> None:
    world.write_rules(rules_with_rollout(GATED))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("step 1 at 10%", phase="paused", step=1)
    # An edit elsewhere in the file reloads the rules; the rollout still owns its model.
    world.write_rules(rules_with_rollout(GATED).replace("weight: 100}", "weight: 7}"))
    assert world.env.sidecar is not None
    await eventually(
        lambda: world.env.sidecar.proxy.core.manager.ruleset.rules[0].targets[0].weight == 7,  # type: ignore[union-attr]
        "the edited rules in force",
    )
    assert await world.send(20) == {V1: 18, V2: 2}


async def test_an_injected_canary_fault_aborts_within_the_failure_limit(world: World) -> None:
    steps = "  - setWeight: 50\n  - pause: {duration: 1h}\n"
    analysis = "  analysis: {interval: 1s, minRequests: 3, maxErrorRate: 0.2, failureLimit: 0}\n"
    world.write_rules(rules_with_rollout(steps, extra=analysis))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("50% on the canary", phase="progressing", step=1, canaryWeight=50)
    await world.send(10)  # healthy traffic first
    armed_at = await fail_canary(world.env)

    async def aborted() -> dict[str, Any] | None:
        await world.send(4)
        r = await world.rollout()
        return r if r["phase"] == "aborted" else None

    r = await eventually(aborted, "the rollout aborted")
    assert r["canaryWeight"] == 0 and "analysis failed" in r["reason"]
    # The abort instant is the end of the failing window: within (failureLimit + 1) x interval + 1 s of the fault.
    since = datetime.fromisoformat(r["since"].replace("Z", "+00:00")).timestamp()
    assert since - armed_at <= (0 + 1) * 1 + 1
    # From now on nothing reaches the canary.
    seen = reached(world.env, V2)
    assert seen > 0  # the canary did get requests before the abort
    assert await world.send(20) == {V1: 20}
    assert reached(world.env, V2) == seen
    metrics = await world.env.metrics()
    assert (
        metric_value(metrics, "lora_syncer_rollout_windows_total", rollout="seg-v2", outcome="fail") or 0
    ) >= 1
    assert (
        metric_value(
            metrics,
            "lora_syncer_proxy_target_errors_total",
            alias=MODEL,
            target=V2,
            **{"class": "upstream_5xx"},
        )
        or 0
    ) >= 1


async def test_hand_controls_by_file_and_by_the_control_endpoint(world: World) -> None:
    world.write_rules(rules_with_rollout(GATED))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("step 1", phase="paused", step=1)

    # Unknown rollout: 404. Pause through the endpoint: held at once, persisted.
    async with world.env.http.post(world.env.base + "/rollouts/nope/pause") as resp:
        assert resp.status == 404
    async with world.env.http.post(world.env.base + "/rollouts/seg-v2/pause") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["controlPaused"] is True and "control endpoint" in body["reason"]
    # Promoting does not move a rollout held by the endpoint.
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n"))
    await world.wait_for("held", phase="paused", step=1, controlPaused=True)
    # The document takes the pause over (GitOps), then `paused: false` resumes.
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n  paused: true\n"))
    await world.wait_for("the document holds it", phase="paused", controlPaused=False)
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n  paused: false\n"))
    await world.wait_for("resumed to step 3", phase="paused", step=3, canaryWeight=50)

    # Abort by file edit: stable gets everything.
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n  abort: true\n"))
    r = await world.wait_for("aborted by hand", phase="aborted", canaryWeight=0)
    assert "aborted by hand" in r["reason"]
    assert await world.send(10) == {V1: 10}
    # Taking `abort: true` off does not revive it.
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n"))
    await world.wait_for("still aborted", phase="aborted")


async def test_the_control_endpoint_aborts_and_is_off_by_default(world: World, tmp_path: Path) -> None:
    world.write_rules(rules_with_rollout(GATED))
    await world.start(control=False)
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("step 1", phase="paused", step=1)
    async with world.env.http.post(world.env.base + "/rollouts/seg-v2/abort") as resp:
        assert resp.status == 403
    await world.wait_for("untouched", phase="paused", step=1)
    assert world.env.sidecar is not None and world.env.sidecar.proxy.rollouts is not None
    world.env.sidecar.proxy.rollouts.control = True
    async with world.env.http.post(world.env.base + "/rollouts/seg-v2/abort") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["phase"] == "aborted" and "control endpoint" in body["reason"]
    assert await world.send(10) == {V1: 10}


async def test_a_restart_resumes_at_the_same_step_never_ahead(world: World) -> None:
    world.write_rules(rules_with_rollout(GATED, extra="  promotedStep: 1\n"))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    before = await world.wait_for("step 3 at 50%", phase="paused", step=3, canaryWeight=50)
    state_files = list(world.state_dir.glob("rollout-*.json"))
    assert [p.name for p in state_files] == ["rollout-seg-v2.json"]
    await world.env.stop()

    await world.start()
    first = await world.rollout()  # the very first view after the restart
    assert first["step"] == before["step"] and first["identity"] == before["identity"]
    assert first["start"] == before["start"]
    await world.env.wait_state(V2, "loaded")  # the new syncer has seen the canary loaded
    after = await world.wait_for("still step 3", phase="paused", step=3, canaryWeight=50)
    assert after["start"] == before["start"]
    assert await world.send(20) == {V1: 10, V2: 10}
    # `lora-syncer rollout status` reads the same /status.
    text = render(await fetch_all([status_url(world.env.base)], 5.0))
    assert "rollout seg-v2 (small-segment-lora)" in text and "paused step 3/5 canary 50%" in text


async def test_an_abort_is_honoured_while_another_document_is_broken(world: World) -> None:
    world.write_rules(rules_with_rollout(GATED))
    await world.start()
    await world.env.wait_loaded({V1, V2})
    await world.wait_for("step 1", phase="paused", step=1)
    broken = "---\napiVersion: lora-syncer.io/v1alpha1\nkind: AdapterRollout\nmetadata: {name: other}\nspec: {model: x}\n"
    world.write_rules(rules_with_rollout(GATED, extra="  abort: true\n") + broken)
    r = await world.wait_for("aborted despite the broken neighbour", phase="aborted", canaryWeight=0)
    assert "aborted by hand" in r["reason"]
    assert await world.send(10) == {V1: 10}
    code, body = await world.env.get("/status")
    assert code == 200 and "other" in body["rollouts"]["invalidDocuments"]
    assert body["proxy"]["error"] is not None  # the rules file itself is refused (last good rules kept)
