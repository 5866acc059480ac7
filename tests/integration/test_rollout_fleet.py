"""Automated rollouts across replicas: several in-process sidecars (each its own --state-dir,
metrics port and proxy port) against one emulated vLLM, reading the same rules file, with a real
Prometheus scraping every replica's /metrics each second and the rollout's analysis asking it.

Checks what issue 14 asks of a fleet: a replica started mid-rollout computes the same step,
weights and window verdicts as one that saw it all (same `startTime`), a failure recorded before it
started included (it replays the windows it did not see from Prometheus); an abort seen on one
replica is adopted by the others through `lora_syncer_rollout_phase` in Prometheus; a completed
rollout stays completed, with the same history, for a pod started afterwards with no saved state.

The verdict tests make a window FAIL before the late pod starts: without the replay the late pod
would count that window as no verdict and disagree (fewer failures, a different abort).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from sync_harness import SyncEnv, adapters_yaml, eventually

from lora_syncer.app import Sidecar
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.rollout.analysis_io import DEFAULT_ERROR_RATE_QUERY, DEFAULT_LATENCY_RATIO_QUERY
from tests.support.net import free_port
from tests.support.prometheus import Prometheus, PrometheusFactory, prometheus_factory
from tests.support.rollouts import (
    MODEL,
    NAME,
    REWRITE,
    V1,
    V2,
    RolloutPod,
    proxy_options,
    rules_with_rollout,
    set_canary_errors,
)

__all__ = ["prometheus_factory"]  # the fixture, used by the tests below

JOB = "lora-syncer"
# Prometheus scrapes each second and the analysis interval is 1 s: the fleet sees an abort within
# about 2 s. The bound is generous for a loaded 2-core machine and never reached when it works.
FLEET_WAIT = 1 + 1 + 20.0
WAIT = 30.0


def rules_yaml(
    steps: str,
    start: datetime,
    prometheus_url: str,
    *,
    extra: str = "",
    interval: str = "1s",
    failure_limit: int = 0,
) -> str:
    """A rewrite rule for the alias and an AdapterRollout of it asking Prometheus each second.

    minRequests is far above the traffic the tests send, so this pod's own counts never decide: every
    verdict comes from the fleet-wide Prometheus queries (the documented defaults).
    """
    error_q = DEFAULT_ERROR_RATE_QUERY.replace("'", "''")
    latency_q = DEFAULT_LATENCY_RATIO_QUERY.replace("'", "''")
    return rules_with_rollout(
        steps,
        extra=f"""\
  startTime: '{start.isoformat().replace("+00:00", "Z")}'
  analysis:
    interval: {interval}
    minRequests: 1000
    failureLimit: {failure_limit}
    maxErrorRate: 0.5
    maxLatencyRatio: 100
    prometheus:
      url: {prometheus_url}
      errorRateQuery: '{error_q}'
      latencyRatioQuery: '{latency_q}'
{extra}""",
    )


@dataclass
class Replica(RolloutPod):
    """One pod: a sidecar (syncer + proxy + rollout controller) with its own ports and state dir."""

    name: str
    metrics_port: int
    state_dir: Path
    http: aiohttp.ClientSession
    sidecar: Sidecar | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def proxy_url(self) -> str:
        assert self.sidecar is not None
        return f"http://127.0.0.1:{self.sidecar.proxy.port}"


class Fleet:
    """Replicas sharing one emulator, one adapters file and one rules file (kubelet-style volumes)."""

    def __init__(self, env: SyncEnv, tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.rules = ConfigMapVolume(tmp / "rules")
        self.replicas: dict[str, Replica] = {
            name: Replica(name, free_port(), tmp / f"state-{name}", env.http) for name in ("a", "b", "c")
        }

    def write_rules(self, text: str) -> None:
        self.rules.write({"rules.yaml": text})

    def targets(self, names: str) -> list[str]:
        return [f"127.0.0.1:{self.replicas[n].metrics_port}" for n in names]

    async def start(self, name: str, *, control: bool = False) -> Replica:
        replica = self.replicas[name]
        assert replica.sidecar is None
        options = proxy_options(
            self.env.emulator.url, self.rules.path("rules.yaml"), replica.state_dir, control=control
        )
        replica.sidecar = Sidecar(self.env.settings(metrics_port=replica.metrics_port), options)
        await replica.sidecar.start()
        return replica

    async def stop(self) -> None:
        for replica in self.replicas.values():
            if replica.sidecar is not None:
                sidecar, replica.sidecar = replica.sidecar, None
                await sidecar.stop()


@pytest_asyncio.fixture
async def fleet(sync_env: SyncEnv, tmp_path: Path) -> AsyncIterator[Fleet]:
    sync_env.write(adapters_yaml([(V1, "org/seg-v1"), (V2, "org/seg-v2")]))
    f = Fleet(sync_env, tmp_path)
    try:
        yield f
    finally:
        await f.stop()


async def scraping(fleet: Fleet, factory: PrometheusFactory, names: str) -> Prometheus:
    """A Prometheus scraping the metrics ports of the replicas `names` ("ab": a and b), down until each starts."""
    return await factory({JOB: fleet.targets(names)})


def now() -> datetime:
    return datetime.now(UTC)


# With a 1 s scrape interval, increase(...[{{interval}}]) needs a few seconds of range to have two
# samples: a 1 s window never has a value (see docs/observability.md).
INTERVAL = "4s"


async def loaded_before_the_rollout(fleet: Fleet, name: str) -> Replica:
    """Start `name` on the rules without the rollout and wait until its syncer has loaded both
    versions: the rollout then never waits for this pod's canary (a hold only this pod would have,
    which would shift its clock from a pod started later)."""
    fleet.write_rules(REWRITE)
    replica = await fleet.start(name)
    await fleet.env.wait_loaded({V1, V2})
    await eventually(replica.ready, f"{name} ready", WAIT)
    return replica


async def fail_a_window(fleet: Fleet, prom: Prometheus, replica: Replica) -> dict[str, Any]:
    """Traffic through `replica` until a window FAILED on the fleet-wide error rate, then healthy
    traffic until every window the failing traffic touched is judged; the rollout then."""
    assert await replica.send(10) == {V1: 5, V2: 5}  # healthy first: every counter has a sample
    await prom.wait_for(f'lora_syncer_proxy_requests_total{{alias="{MODEL}",target="{V2}"}}', timeout=WAIT)
    await set_canary_errors(fleet.env.http, fleet.env.emulator.url, 1.0)

    async def failed() -> dict[str, Any] | None:
        await replica.send(4)  # the canary's half of these fails
        r = await replica.rollout()
        return r if r["failedWindows"] >= 1 else None

    judged = (await eventually(failed, f"{replica.name}: a window failed", 4 * WAIT))["windowsJudged"]
    await set_canary_errors(fleet.env.http, fleet.env.emulator.url, 0.0)

    async def settled() -> dict[str, Any] | None:
        await replica.send(4)
        r = await replica.rollout()
        return r if r["windowsJudged"] >= judged + 2 else None

    done: dict[str, Any] = await eventually(
        settled, f"{replica.name}: the windows after the errors judged", 4 * WAIT
    )
    return done


def same_verdicts(first: dict[str, Any], second: dict[str, Any]) -> None:
    """The two replicas' window verdicts (outcome and reason) agree for every window both list."""
    mine = {w["window"]: (w["outcome"], w["reason"]) for w in first["lastWindows"]}
    theirs = {w["window"]: (w["outcome"], w["reason"]) for w in second["lastWindows"]}
    common = sorted(mine.keys() & theirs.keys())
    assert len(common) >= 3, (mine, theirs)
    assert {k: mine[k] for k in common} == {k: theirs[k] for k in common}


GATED = """\
  - setWeight: 20
  - pause: {duration: 4s}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
"""


async def test_a_replica_started_mid_rollout_agrees_on_step_weights_and_verdicts(
    fleet: Fleet, prometheus_factory: PrometheusFactory
) -> None:
    prom = await scraping(fleet, prometheus_factory, "ab")
    a = await loaded_before_the_rollout(fleet, "a")
    start = now()
    fleet.write_rules(rules_yaml(GATED, start, prom.url, interval=INTERVAL, failure_limit=10))
    # Mid-rollout: A is past 20% and its pause, held at the gate at 50%, with a window FAILED.
    await a.wait_for("at the gate", 2 * WAIT, step=3, canaryWeight=50, phase="paused")
    ra = await fail_a_window(fleet, prom, a)
    assert ra["failedWindows"] >= 1 and (ra["phase"], ra["step"]) == ("paused", 3)

    b = await fleet.start("b")
    rb = await b.rollout()  # B's first view: its first pass replayed what it did not see
    ra = await a.rollout()
    assert rb["start"] == ra["start"] and rb["identity"] == ra["identity"]
    assert (rb["phase"], rb["step"], rb["canaryWeight"]) == (ra["phase"], ra["step"], ra["canaryWeight"])
    assert rb["failedWindows"] == ra["failedWindows"], (ra["lastWindows"], rb["lastWindows"])
    same_verdicts(ra, rb)
    replayed = rb["replay"]
    assert replayed["replayedWindows"] >= ra["windowsJudged"] - 1 and replayed["stopReason"] is None
    assert replayed["notReplayed"] == 0
    await eventually(b.ready, "B ready", WAIT)
    assert await b.send(10) == {V1: 5, V2: 5}  # the same split on B

    # failureLimit lowered below the failures both saw: each aborts from its own history, at the
    # end of the same window, with the same reason (not B adopting A's abort).
    failures = ra["failedWindows"]
    fleet.write_rules(rules_yaml(GATED, start, prom.url, interval=INTERVAL, failure_limit=failures - 1))
    ra = await a.wait_for("A aborted", phase="aborted", canaryWeight=0)
    rb = await b.wait_for("B aborted", phase="aborted", canaryWeight=0)
    assert ra["reason"].startswith(
        f"analysis failed: {failures} failed windows > failureLimit {failures - 1}"
    )
    assert (rb["reason"], rb["since"], rb["step"]) == (ra["reason"], ra["since"], ra["step"])
    assert await b.send(10) == {V1: 10}

    # A pod started after the abort with no saved state: it adopts the fleet's abort at once and
    # its replay finds the failures before it, so from its first view it is A's abort exactly.
    c = await fleet.start("c")
    rc = await c.rollout()
    keys = ("phase", "reason", "since", "step", "canaryWeight", "failedWindows")
    assert {k: rc[k] for k in keys} == {k: ra[k] for k in keys}


async def test_an_abort_on_one_replica_is_adopted_by_the_other(
    fleet: Fleet, prometheus_factory: PrometheusFactory
) -> None:
    prom = await scraping(fleet, prometheus_factory, "ab")
    held = "  - setWeight: 40\n  - pause: {duration: 1h}\n  - setWeight: 100\n"
    fleet.write_rules(rules_yaml(held, now(), prom.url))
    a = await fleet.start("a", control=True)
    b = await fleet.start("b")
    await fleet.env.wait_loaded({V1, V2})
    for replica in (a, b):
        await replica.wait_for("40% on the canary", step=1, canaryWeight=40, phase="progressing")
    await prom.wait_scraped(JOB, scrapes=2)
    assert (await b.send(10)) == {V1: 6, V2: 4}

    async with fleet.env.http.post(a.base + "/rollouts/seg-v2/abort") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["phase"] == "aborted" and "control endpoint" in body["reason"]
    # Prometheus has A's abort once it scraped A after it...
    await prom.wait_for(f'lora_syncer_rollout_phase{{rollout="{NAME}",phase="aborted"}} == 1', timeout=WAIT)
    # ...and B adopts it within about one more interval (bound: scrape + interval + slack).
    r = await b.wait_for("the abort adopted", FLEET_WAIT, phase="aborted", canaryWeight=0)
    assert "another replica" in (r["abortReason"] or ""), r
    assert await b.send(10) == {V1: 10}
    # B exports the abort itself, and keeps it across a restart of B (persisted under its state dir).
    await prom.wait_for(
        f'count(lora_syncer_rollout_phase{{rollout="{NAME}",phase="aborted"}} == 1) == 2', timeout=WAIT
    )
    assert b.sidecar is not None
    sidecar, b.sidecar = b.sidecar, None
    await sidecar.stop()
    b = await fleet.start("b")
    first = await b.rollout()
    assert first["phase"] == "aborted" and "another replica" in (first["abortReason"] or "")


async def test_a_completed_rollout_stays_completed_for_a_new_pod(
    fleet: Fleet, prometheus_factory: PrometheusFactory
) -> None:
    prom = await scraping(fleet, prometheus_factory, "ac")
    a = await loaded_before_the_rollout(fleet, "a")
    # A window FAILS during the pause (failureLimit 10 tolerates it), then the rollout completes.
    timed = "  - setWeight: 50\n  - pause: {duration: 30s}\n  - setWeight: 100\n"
    fleet.write_rules(rules_yaml(timed, now(), prom.url, interval=INTERVAL, failure_limit=10))
    await a.wait_for("at 50%", step=1, canaryWeight=50, phase="progressing")
    await fail_a_window(fleet, prom, a)
    done = await a.wait_for("completed", 3 * WAIT, phase="completed", canaryWeight=100)
    assert done["failedWindows"] >= 1
    await prom.wait_for(f'lora_syncer_rollout_phase{{rollout="{NAME}",phase="completed"}} == 1', timeout=WAIT)

    # A new pod, no saved state, started after completion: completed from its very first view, with
    # A's history (the failed window included), completion instant and step.
    assert not fleet.replicas["c"].state_dir.exists()
    c = await fleet.start("c")
    first = await c.rollout()
    assert first["phase"] == "completed", first
    keys = ("step", "canaryWeight", "since", "failedWindows", "windowsJudged")
    assert {k: first[k] for k in keys} == {k: done[k] for k in keys}
    same_verdicts(done, first)
    await eventually(c.ready, "C ready", WAIT)
    assert await c.send(20) == {V2: 20}
    # It never moved away from completed, and judged nothing after it.
    last = await c.rollout()
    assert last["phase"] == "completed" and last["windowsJudged"] == done["windowsJudged"]


async def test_a_canary_failing_on_one_replica_aborts_both_through_prometheus(
    fleet: Fleet, prometheus_factory: PrometheusFactory
) -> None:
    """Only A carries traffic; the fleet-wide error rate in Prometheus fails the window for B too.

    The interval is 4 s here: `increase(...[{{interval}}])` needs at least two scrapes in the range,
    so with the 1 s scrape interval a 1 s window never has a value (see docs/observability.md).
    """
    prom = await scraping(fleet, prometheus_factory, "ab")
    held = "  - setWeight: 50\n  - pause: {duration: 1h}\n  - setWeight: 100\n"
    fleet.write_rules(rules_yaml(held, now(), prom.url, interval=INTERVAL))
    a = await fleet.start("a")
    b = await fleet.start("b")
    await fleet.env.wait_loaded({V1, V2})
    for replica in (a, b):
        await replica.wait_for("50% on the canary", step=1, canaryWeight=50, phase="progressing")
    assert await a.send(10) == {V1: 5, V2: 5}  # healthy first: every counter has a sample before errors
    await prom.wait_for(f'lora_syncer_proxy_requests_total{{alias="{MODEL}",target="{V2}"}}', timeout=WAIT)
    await set_canary_errors(fleet.env.http, fleet.env.emulator.url, 1.0)

    async def b_aborted() -> dict[str, Any] | None:
        await a.send(4)  # the canary's half of these fails, on A only
        r = await b.rollout()
        return r if r["phase"] == "aborted" else None

    r = await eventually(b_aborted, "B aborted on the fleet-wide error rate", 2 * WAIT)
    assert r["canaryWeight"] == 0
    # B judged A's errors from Prometheus (its own counts are empty), or adopted A's abort.
    assert "analysis failed" in r["reason"] or "another replica" in (r["abortReason"] or ""), r
    ra = await a.wait_for("A aborted", phase="aborted", canaryWeight=0)
    assert "analysis failed" in ra["reason"], ra
    assert any(c["check"] == "errorRate" and c["outcome"] == "fail" for c in ra["lastChecks"]), ra[
        "lastChecks"
    ]
    assert await a.send(10) == {V1: 10}
    assert await b.send(10) == {V1: 10}
