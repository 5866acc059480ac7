"""The proxy under load while vLLM restarts, a share of chats drop and the rules file changes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from lora_syncer.emulator import EmulatorConfig
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.http import is_openai_error
from tests.support.reliability.files import RULES_KEY, adapters_yaml, rules_yaml
from tests.support.reliability.world import World, gauge, proxy_options, world
from tests.support.wait import WAIT, seconds_until

ALIAS = "canary"
V1, V2, V3 = "canary-v1", "canary-v2", "canary-v3"
RULE_VERSIONS: tuple[tuple[tuple[str, int], ...], ...] = (
    ((V1, 90), (V2, 10)),
    ((V1, 50), (V2, 50)),
    ((V2, 100),),
    ((V2, 50), (V3, 50)),
    ((V3, 100),),
)


@dataclass
class ProxyLoadResult:
    requests: int = 0
    correct: int = 0
    openai_errors: int = 0
    cut_short: int = 0
    hung: int = 0
    wrong: list[str] = field(default_factory=list)
    bad_errors: list[str] = field(default_factory=list)
    restarts: int = 0
    rules_changes: int = 0
    split: list[str] = field(default_factory=list)  # one line per stable window
    split_off: list[str] = field(default_factory=list)
    converge_seconds: float | None = None
    active_streams_after: float | None = None
    in_flight_after: int | None = None
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def violations(self) -> list[str]:
        out = [*self.wrong[:5], *self.bad_errors[:5], *self.split_off]
        if self.hung:
            out.append(f"{self.hung} request(s) hung past the client timeout")
        if self.converge_seconds is None:
            out.append("the syncer did not converge after faults stopped")
        if self.active_streams_after != 0 or self.in_flight_after != 0:
            out.append(
                f"proxy not idle after the run: streams={self.active_streams_after} in_flight={self.in_flight_after}"
            )
        return out


@dataclass
class _Version:
    """One rules version: when it was written and when the proxy was seen serving it (monotonic clock)."""

    written: float
    targets: frozenset[str]
    adopted: float | None = None


class _Timeline:
    """The rules versions and the upstream's restarts, to judge answers by the order of events."""

    def __init__(self) -> None:
        self.versions: list[_Version] = []
        self.restarts: list[tuple[float, float]] = []

    def allowed(self, sent: float, received: float) -> frozenset[str]:
        """Targets of every version that may have been in force between `sent` and `received`.

        A version may be in force from when it was written until the proxy was seen serving the
        next one (for ever, if that was never seen): no assumption on how quickly the proxy follows.
        """
        out: frozenset[str] = frozenset()
        for i, version in enumerate(self.versions):
            following = self.versions[i + 1] if i + 1 < len(self.versions) else None
            replaced = following.adopted if following is not None else None
            if version.written <= received and (replaced is None or replaced >= sent):
                out |= version.targets
        return out

    def restarted_between(self, sent: float, received: float) -> bool:
        return any(start <= received and end >= sent for start, end in self.restarts)


async def _one_request(
    http: aiohttp.ClientSession, url: str, stream: bool, timeline: _Timeline, result: ProxyLoadResult
) -> None:
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "hello"}],
        "max_completion_tokens": 4,
        "stream": stream,
    }
    sent = time.monotonic()
    result.requests += 1
    status = 0
    try:
        async with http.post(url, json=body) as resp:
            status = resp.status
            result.statuses[status] += 1
            if status == 200 and stream:
                models: set[str] = set()
                done = False
                try:
                    async for raw in resp.content:
                        line = raw.decode().strip()
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            models.add(json.loads(line[6:]).get("model"))
                except aiohttp.ClientPayloadError:
                    done = False
                received = time.monotonic()
                wrong = models - timeline.allowed(sent, received)
                if wrong:
                    result.wrong.append(f"stream answered by {sorted(wrong)}")
                elif done:
                    result.correct += 1
                elif timeline.restarted_between(sent, received):
                    result.cut_short += 1  # the upstream died mid-answer; the client saw it cut
                else:
                    result.bad_errors.append("stream cut short with no upstream restart")
                return
            text = await resp.text()
    except TimeoutError:
        result.hung += 1
        return
    except aiohttp.ClientError as exc:
        result.bad_errors.append(f"status {status}: connection error {type(exc).__name__}")
        return
    received = time.monotonic()
    try:
        parsed = json.loads(text)
    except ValueError:
        result.bad_errors.append(f"status {status}: not JSON: {text[:120]!r}")
        return
    if status == 200:
        model = parsed.get("model") if isinstance(parsed, dict) else None
        if model in timeline.allowed(sent, received):
            result.correct += 1
        else:
            result.wrong.append(f"answered by {model!r}")
    elif is_openai_error(parsed):
        result.openai_errors += 1
    else:
        result.bad_errors.append(f"status {status}: not an OpenAI error: {text[:120]!r}")


async def _split_window(
    w: World,
    http: aiohttp.ClientSession,
    url: str,
    targets: Sequence[tuple[str, int]],
    n: int,
    result: ProxyLoadResult,
) -> None:
    assert w.sidecar is not None and w.rules_volume is not None
    proxy = w.sidecar.proxy
    before = proxy.status()["generation"]
    w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, targets)})
    if await seconds_until(lambda: proxy.status()["generation"] not in (before, None), WAIT) is None:
        result.split_off.append(f"rules {targets} never came into force")
        return
    served: Counter[str] = Counter()
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem, http.post(url, json={"model": ALIAS, "prompt": "x", "max_tokens": 1}) as resp:
            body = await resp.json()
            served[body.get("model", f"status {resp.status}")] += 1

    await asyncio.gather(*(one() for _ in range(n)))
    total = sum(weight for _, weight in targets)
    expected = {name: n * weight / total for name, weight in targets}
    line = f"{'/'.join(str(wt) for _, wt in targets)}: " + ", ".join(
        f"{k}={served[k]}" for k in sorted(served)
    )
    result.split.append(line)
    for name, want in expected.items():
        if abs(served[name] - want) > 1:
            result.split_off.append(f"split {targets}: {name} got {served[name]} of {n}, expected {want}")
    strays = set(served) - set(expected)
    if strays:
        result.split_off.append(f"split {targets}: answers from {sorted(strays)}")


async def run_proxy_under_faults(
    workdir: Path,
    *,
    seconds: float = 6.0,
    until: Callable[[ProxyLoadResult], bool] | None = None,
    max_seconds: float = 4 * WAIT,
    clients: int = 8,
    restart_every: float = 1.2,
    rules_every: float = 0.7,
    drop_rate: float = 0.05,
    stream_share: float = 0.25,
    split_requests: int = 100,
    seed: int = 11,
) -> ProxyLoadResult:
    """Clients load the proxy while vLLM restarts, a share of chats drop, and the rules file changes.

    The load runs for `seconds`, then on until `until(result)` holds (if given), never longer than
    `max_seconds` in all; the caller asserts on the figures, not on how long it took.
    """
    rng = random.Random(seed)
    result = ProxyLoadResult()
    timeline = _Timeline()
    async with world(workdir, EmulatorConfig(seed=seed)) as w:
        w.rules_volume = ConfigMapVolume(workdir / "rules")
        w.write(adapters_yaml([V1, V2, V3]))
        w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, RULE_VERSIONS[0])})
        started = time.monotonic()
        timeline.versions.append(_Version(started, frozenset(n for n, _ in RULE_VERSIONS[0]), started))
        options = proxy_options(w.emulator.url, w.rules_volume.path(RULES_KEY))
        sidecar = await w.start_sidecar(options, reconcile_trigger=0.3)
        assert sidecar.reconciler is not None
        status = sidecar.reconciler.status
        proxy = sidecar.proxy
        all_loaded = frozenset({V1, V2, V3})
        if await seconds_until(lambda: all_loaded <= status.loaded_names(), WAIT) is None:
            result.converge_seconds = None
            return result
        url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
        stop = asyncio.Event()

        def set_faults() -> None:
            w.emulator.faults.update({"failure_mode": "drop", "failure_rate": {"chat": drop_rate}})

        async def restarts() -> None:
            while not stop.is_set():
                await asyncio.sleep(restart_every)
                if stop.is_set():
                    return
                began = time.monotonic()
                await w.emulator.restart(down_seconds=0.2)
                set_faults()
                timeline.restarts.append((began, time.monotonic()))
                result.restarts += 1

        async def rules() -> None:
            index = 0
            while not stop.is_set():
                await asyncio.sleep(rules_every)
                index = (index + 1) % len(RULE_VERSIONS)
                targets = RULE_VERSIONS[index]
                before = proxy.status()["generation"]
                version = _Version(time.monotonic(), frozenset(n for n, _ in targets))
                timeline.versions.append(version)
                assert w.rules_volume is not None
                w.rules_volume.write({RULES_KEY: rules_yaml(ALIAS, targets)})
                result.rules_changes += 1

                # Consecutive versions differ, so a new generation is this version in force.
                def adopted(before: object = before) -> bool:
                    return bool(proxy.status()["generation"] != before)

                if await seconds_until(adopted, WAIT) is None:
                    result.split_off.append(f"rules {targets} never came into force")
                    return
                version.adopted = time.monotonic()

        def enough() -> bool:
            elapsed = time.monotonic() - began
            if elapsed >= max_seconds:
                return True
            return elapsed >= seconds and (until is None or until(result))

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def client() -> None:
                while not stop.is_set():
                    await _one_request(http, url, rng.random() < stream_share, timeline, result)

            set_faults()
            began = time.monotonic()
            background = [asyncio.create_task(restarts()), asyncio.create_task(rules())]
            workers = [asyncio.create_task(client()) for _ in range(clients)]
            await seconds_until(enough, max_seconds + 1.0, 0.05)
            stop.set()
            await asyncio.gather(*workers, *background)
            # Faults stop: the syncer must get every target back, then the split must be exact.
            w.emulator.reset_faults()
            result.converge_seconds = await seconds_until(
                lambda: all_loaded <= status.loaded_names() and all_loaded <= w.emulator.loaded().keys(), WAIT
            )
            if result.converge_seconds is not None:
                for targets in RULE_VERSIONS:
                    await _split_window(
                        w,
                        http,
                        url.replace("chat/completions", "completions"),
                        targets,
                        split_requests,
                        result,
                    )
        await seconds_until(lambda: proxy.core.in_flight == 0, WAIT)
        result.in_flight_after = proxy.core.in_flight
        result.active_streams_after = gauge(sidecar, "lora_syncer_proxy_active_streams")
        return result
