"""`lora-syncer demo --rollout`: an automated rollout that completes, then one that aborts itself.

Same setup as the manual walk (`walkthrough`): the emulator, two ConfigMap volumes written the
way kubelet writes them, the sidecar in this process. Then:

1. v1 and v2 are loaded and an `AdapterRollout` (10% → pause 2s → 50% → pause 2s → 100%, analysis
   every 1 s) is written. Steady traffic runs through the proxy while the demo follows the
   `rollouts` section of `/status`, printing each step as the controller takes it and what
   served the requests sent during it; the rollout must end `completed`.
2. v3 is loaded, the emulator is told to answer every v3 request with a 500 (per-model fault),
   and a second rollout (v2 → v3) starts. The analysis fails the first window and the rollout
   must abort by itself: traffic back on v2, and no request reaches v3 afterwards.

Requests are sent in rounds of `ROUND` one after another; a round counts for a step only when
`/status` shows the same step before and after it, so its split is exact (the smooth weighted
round-robin serves 10% as exactly 1 in every 10 consecutive requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lora_syncer.demo.checks import Split, check_split
from lora_syncer.demo.render import Reporter
from lora_syncer.demo.servers import SERVED_MODEL_NAME, EmulatorServer
from lora_syncer.demo.steps import load_walkthrough
from lora_syncer.demo.traffic import send_requests
from lora_syncer.demo.walkthrough import DemoOptions, DemoRun, StepFailed, stop_sidecar
from lora_syncer.emulator.model_faults import ModelFault

MODEL = "small-segment-lora"
V1, V2, V3 = (f"{MODEL}-v{n}" for n in (1, 2, 3))
ROUND = 10  # requests per round: one whole period of the round-robin at 10% and 50%
ROUND_GAP = 0.05  # seconds between rounds
GOOD_STEPS = (
    "setWeight: 10",
    "pause: {duration: 2s}",
    "setWeight: 50",
    "pause: {duration: 2s}",
    "setWeight: 100",
)
BAD_STEPS = ("setWeight: 50", "pause: {duration: 1m}", "setWeight: 100")
ANALYSIS = "{interval: 1s, minRequests: 3, failureLimit: 0, maxErrorRate: 0.2}"
FINAL = frozenset({"completed", "aborted", "stalled"})
ROLLOUT_TIMEOUT = 60.0
AFTER_ABORT = 20  # requests sent once aborted: every one must be served by the stable


def adapters_text(*names: str) -> str:
    """The adapters ConfigMap key declaring `names` (the guide's source for each)."""
    models = "".join(f"    - id: {n}\n      source: ttt421/nec119-small-segment-lora\n" for n in names)
    return (
        "vLLMLoRAConfig:\n  name: vllm-qwen3-32b-adapters\n  port: 8000\n"
        f"  defaultBaseModel: {SERVED_MODEL_NAME}\n  ensureExist:\n    models:\n{models}"
    )


def rules_text(current: str, name: str, stable: str, canary: str, steps: tuple[str, ...]) -> str:
    """The rules ConfigMap key: the alias's rule to `current` plus one AdapterRollout."""
    step_lines = "".join(f"  - {s}\n" for s in steps)
    return (
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModelRewrite\n"
        f"metadata: {{name: {MODEL}-rewrite}}\nspec:\n  rules:\n"
        f"  - matches: [{{model: {{type: Exact, value: {MODEL}}}}}]\n"
        f"    targets: [{{modelRewrite: {current}, weight: 100}}]\n"
        "---\napiVersion: lora-syncer.io/v1alpha1\nkind: AdapterRollout\n"
        f"metadata: {{name: {name}}}\nspec:\n  model: {MODEL}\n  stable: {stable}\n  canary: {canary}\n"
        f"  steps:\n{step_lines}  analysis: {ANALYSIS}\n"
    )


@dataclass
class StepSeen:
    """One position of a rollout as `/status` showed it, and the requests served while it held."""

    phase: str
    step: int
    weight: int
    split: Split = field(default_factory=lambda: Split(total=0))

    def expected(self, stable: str, canary: str) -> dict[str, int]:
        """The exact split of whole rounds at this weight (errors are checked apart)."""
        canary_n = self.split.total * self.weight // 100
        return {stable: self.split.total - canary_n, canary: canary_n}


@dataclass
class RolloutSeen:
    """What the demo saw of one rollout."""

    name: str
    steps: list[StepSeen] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)  # its last `/status` entry

    @property
    def phases(self) -> list[str]:
        return [s.phase for s in self.steps]


@dataclass
class RolloutDemoResult:
    """The outcome of `demo --rollout`; `after_abort` is the split of the requests sent once aborted."""

    ok: bool
    seconds: float
    failures: list[str] = field(default_factory=list)
    stage: str = "setting up"
    rollouts: dict[str, RolloutSeen] = field(default_factory=dict)
    after_abort: Split | None = None
    canary_requests_after_abort: int | None = None


def _merge(into: Split, more: Split) -> None:
    into.total += more.total
    for name, n in more.counts.items():
        into.counts[name] = into.counts.get(name, 0) + n
    for reason, n in more.errors.items():
        into.errors[reason] = into.errors.get(reason, 0) + n


def _same(a: Mapping[str, Any], b: Mapping[str, Any] | None) -> bool:
    """Whether two `/status` entries show the rollout at the same position."""
    return b is not None and all(a.get(k) == b.get(k) for k in ("phase", "step", "canaryWeight"))


def _describe(steps: tuple[str, ...], step: int) -> str:
    return steps[step] if step < len(steps) else "done"


class _Follow:
    """Drives traffic and follows one rollout in `/status` until it reaches a final phase."""

    def __init__(
        self,
        run: DemoRun,
        reporter: Reporter,
        name: str,
        steps: tuple[str, ...],
        pair: tuple[str, str],
        *,
        canary_fails: bool = False,
    ) -> None:
        self.run = run
        self.reporter = reporter
        self.seen = RolloutSeen(name)
        self.steps = steps
        self.stable, self.canary = pair
        self.canary_fails = canary_fails
        self.failures: list[str] = []  # of the splits checked so far

    async def entry(self) -> dict[str, Any] | None:
        rollouts = (await self.run.status())["rollouts"]["rollouts"]
        return next((r for r in rollouts if r.get("name") == self.seen.name), None)

    def _note(self, entry: Mapping[str, Any]) -> StepSeen:
        key = (str(entry["phase"]), int(entry["step"]), int(entry["canaryWeight"]))
        last = self.seen.steps[-1] if self.seen.steps else None
        if last is not None and (last.phase, last.step, last.weight) == key:
            return last
        if last is not None:
            self._check(last)  # the step just left: what served during it
        now = StepSeen(*key)
        self.seen.steps.append(now)
        total = int(entry["steps"])
        where = f"step {key[1]}/{total}" if key[1] < total else f"after step {total}"
        what = _describe(self.steps, key[1])
        reason = f"  ({entry['reason']})" if entry.get("reason") and key[0] != "progressing" else ""
        self.reporter.note(f"→ {key[0]:<11} {where:<12} canary {key[2]:>3}%   [{what}]{reason}")
        return now

    async def until(self, phases: frozenset[str], limit: float, *, rounds_after: int = 0) -> dict[str, Any]:
        """Send rounds and note positions until the rollout is in one of `phases`; its last entry.

        `rounds_after` more rounds are sent once there, so the final weights are shown serving too.
        """
        deadline = time.monotonic() + limit
        entry = await self.entry()
        while True:
            if entry is not None and entry.get("phase") is not None:
                current = self._note(entry)
                if current.phase in phases:
                    if rounds_after <= 0:
                        self._check(current)
                        self.seen.final = entry
                        return entry
                    rounds_after -= 1
            if time.monotonic() > deadline:
                shown = entry.get("phase") if entry else "not in /status"
                raise StepFailed(
                    [f"rollout {self.seen.name} did not reach {'/'.join(sorted(phases))} within {limit:g} s"
                     f" (phase {shown})"]
                )  # fmt: skip
            split = await send_requests(
                self.run.session,
                self.run.proxy_url,
                MODEL,
                ROUND,
                request_timeout=self.run.options.request_timeout,
            )
            after = await self.entry()
            # Only a round the rollout did not move during counts for a step (exact split).
            if entry is not None and entry.get("phase") is not None and _same(entry, after):
                _merge(self._note(entry).split, split)
            entry = after
            await asyncio.sleep(ROUND_GAP)  # steady traffic, not a flood, on a shared machine

    def _check(self, seen: StepSeen) -> None:
        """Print the split of the rounds sent during one position and check it against its weight.

        With `canary_fails` the canary is the bad one: each of its requests must be answered
        HTTP 500 (shown as its own row); any other failure still fails the check.
        """
        if not seen.split.total:
            return
        expected = seen.expected(self.stable, self.canary)
        shown = Split(seen.split.total, dict(seen.split.counts), dict(seen.split.errors))
        if self.canary_fails:
            bad = f"{self.canary}: HTTP 500"
            expected[bad] = expected.pop(self.canary)
            n = shown.errors.pop("HTTP 500", 0)
            if n:
                shown.counts[bad] = n
        self.reporter.split(MODEL, shown, expected)
        failures = check_split(expected, shown)
        self.reporter.verdict(
            failures, f"split as canary {seen.weight}% says ({seen.split.total} requests, whole rounds)"
        )
        self.failures += failures


def _timeout(run: DemoRun) -> float:
    """How long a rollout may take: its schedule is ~5 s; a loaded machine gets slack."""
    return max(run.options.converge_timeout, ROLLOUT_TIMEOUT)


def _canary_calls(server: EmulatorServer, model: str) -> int:
    """Inference requests for `model` the emulator received: answered, or failed by its fault."""
    log = server.emulator.call_log
    return log.served.get(model, 0) + log.model_faults.get((model, "error"), 0)


async def _good_rollout(run: DemoRun, reporter: Reporter, result: RolloutDemoResult) -> None:
    result.stage = "rollout v1 → v2"
    reporter.title(f"\n[1/2] Automated rollout {V1} → {V2}: it completes")
    before = (await run.status())["syncer"]["adapters"]
    await run.write("adapters", adapters_text(V1, V2))
    await run.wait_adapters(f"syncer loads {V1} and {V2}", before)
    await run.write("rules", rules_text(V1, "seg-v2", V1, V2, GOOD_STEPS))
    await run.wait_rules("proxy reads the AdapterRollout seg-v2")
    reporter.note(f"steps: {' → '.join(GOOD_STEPS)}; analysis {ANALYSIS}")
    follow = _Follow(run, reporter, "seg-v2", GOOD_STEPS, (V1, V2))
    result.rollouts["seg-v2"] = follow.seen
    entry = await follow.until(FINAL, _timeout(run), rounds_after=2)
    failures = list(follow.failures)
    if entry["phase"] != "completed":
        failures.append(f"rollout seg-v2 ended {entry['phase']} ({entry.get('reason')}), expected completed")
    # Each weight of the schedule seen serving, in order (a 0% before the canary counts is fine).
    weights = [s.weight for s in follow.seen.steps if s.weight > 0]
    if weights != [10, 50, 100]:
        failures.append(f"rollout seg-v2 was seen at canary {weights} %, expected 10 → 50 → 100")
    reporter.verdict(failures, "seg-v2 went 10% → 50% → 100% and completed by itself")
    if failures:
        raise StepFailed(failures)


async def _bad_rollout(
    run: DemoRun, server: EmulatorServer, reporter: Reporter, result: RolloutDemoResult
) -> None:
    result.stage = "rollout v2 → v3 (bad canary)"
    reporter.title(f"\n[2/2] Automated rollout {V2} → {V3} with a bad canary: it aborts by itself")
    before = (await run.status())["syncer"]["adapters"]
    await run.write("adapters", adapters_text(V1, V2, V3))
    await run.wait_adapters(f"syncer loads {V3}", before)
    server.emulator.faults.models[V3] = ModelFault(error_rate=1.0)
    reporter.note(f"emulator: every request for {V3} now answers 500 (per-model fault, error_rate 1.0)")
    # The completed rollout's cleanup, as the guide does it: the rule now names v2, seg-v2 is gone.
    await run.write("rules", rules_text(V2, "seg-v3", V2, V3, BAD_STEPS))
    await run.wait_rules("proxy reads the AdapterRollout seg-v3 (seg-v2 removed, rule → v2)")
    reporter.note(f"steps: {' → '.join(BAD_STEPS)}; analysis {ANALYSIS}")
    follow = _Follow(run, reporter, "seg-v3", BAD_STEPS, (V2, V3), canary_fails=True)
    result.rollouts["seg-v3"] = follow.seen
    entry = await follow.until(FINAL, _timeout(run))
    failures = list(follow.failures)
    if entry["phase"] != "aborted":
        failures.append(f"rollout seg-v3 ended {entry['phase']}, expected aborted")
        raise StepFailed(failures)
    if entry.get("canaryWeight") != 0:
        failures.append(f"rollout seg-v3 aborted with canary weight {entry.get('canaryWeight')}, expected 0")
    if not any(s.weight > 0 for s in follow.seen.steps):
        failures.append("rollout seg-v3 aborted before its canary got any traffic")
    calls = _canary_calls(server, V3)
    async with reporter.waiting(f"send {AFTER_ABORT} requests after the abort:") as line:
        split = await send_requests(
            run.session, run.proxy_url, MODEL, AFTER_ABORT, request_timeout=run.options.request_timeout
        )
        line.update(f"{split.answered}/{AFTER_ABORT} answered")
    reached = _canary_calls(server, V3) - calls
    result.after_abort, result.canary_requests_after_abort = split, reached
    expected = {V2: AFTER_ABORT, V3: 0}
    reporter.split(MODEL, split, expected)
    after_failures = check_split(expected, split)
    if reached:
        after_failures.append(f"{reached} request(s) reached {V3} at the emulator after the abort")
    reporter.verdict(after_failures, f"after the abort every request is served by {V2}; none reaches {V3}")
    failures += after_failures
    if failures:
        raise StepFailed(failures)


async def rollout_walk(
    reporter: Reporter, options: DemoOptions, *, workdir: Path | None = None
) -> RolloutDemoResult:
    """Run both rollouts; never raises for a check that does not hold (see `RolloutDemoResult`)."""
    started = time.monotonic()
    result = RolloutDemoResult(ok=False, seconds=0.0)
    with contextlib.ExitStack() as files:
        if workdir is None:
            workdir = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="lora-syncer-demo-")))
        server = EmulatorServer()
        try:
            async with contextlib.AsyncExitStack() as stack:
                reporter.title("lora-syncer demo --rollout: automated AdapterRollouts, end to end")
                async with reporter.waiting("model server starts"):
                    await stack.enter_async_context(server)
                session = await stack.enter_async_context(aiohttp.ClientSession())
                run = DemoRun(load_walkthrough(), server, workdir, options, reporter, session)
                stack.push_async_callback(stop_sidecar, run)
                await run.start()
                reporter.header(
                    [
                        ("model server", server.description),
                        ("adapters", f"{run.path('adapters')}  (ConfigMap key configmap.yaml)"),
                        ("rules", f"{run.path('rules')}  (ConfigMap key rules.yaml)"),
                        ("rollouts", f"{run.status_url}  (section `rollouts`)"),
                        ("proxy", f"{run.proxy_url}  (clients ask for model {MODEL!r})"),
                    ],
                )
                await _good_rollout(run, reporter, result)
                await _bad_rollout(run, server, reporter, result)
                result.ok = True
        except StepFailed as exc:
            result.failures = exc.failures
        except (OSError, aiohttp.ClientError, TimeoutError, RuntimeError, KeyError) as exc:
            result.failures = [f"{type(exc).__name__}: {exc}"]
    result.seconds = time.monotonic() - started
    reporter.summary(result.ok, None, result.failures, result.seconds, where=result.stage)
    return result
