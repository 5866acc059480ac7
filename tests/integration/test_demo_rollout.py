"""`lora-syncer demo --rollout`: an automated rollout that completes and one that aborts itself.

In-process (the structured result) and as a command (exit codes and output). No wall-clock
asserts: the rollouts must have taken their steps, whatever the machine's load.
"""

from __future__ import annotations

import io
import subprocess

import pytest

from lora_syncer.commands.demo import rollout_demo_main
from lora_syncer.demo import rollout
from lora_syncer.demo.rollout import V1, V2, V3, StepSeen
from lora_syncer.demo.walkthrough import DemoOptions
from lora_syncer.emulator.model_faults import ModelFault
from tests.support.processes import run_demo


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_demo("--rollout", *args, timeout=180)


def _weights(steps: list[StepSeen]) -> list[tuple[str, int]]:
    return [(s.phase, s.weight) for s in steps]


def test_expected_split_is_whole_rounds_at_the_weight() -> None:
    seen = StepSeen("progressing", 1, 10)
    seen.split.total = 40
    assert seen.expected(V1, V2) == {V1: 36, V2: 4}


async def test_one_rollout_completes_and_the_bad_canary_is_aborted() -> None:
    out = io.StringIO()
    code, result = await rollout_demo_main(DemoOptions(), out, color="never", animate=False)
    text = out.getvalue()
    assert code == 0, text
    assert result.ok and not result.failures

    good = result.rollouts["seg-v2"]
    # The controller took 10% -> 50% -> 100% by itself, and traffic was counted at each.
    # (A 0% position may come first, while the controller has not yet seen the canary loaded.)
    serving = [s for s in good.steps if s.weight > 0]
    assert _weights(serving) == [("progressing", 10), ("progressing", 50), ("completed", 100)]
    for seen in serving:
        assert seen.split.total > 0 and seen.split.total % rollout.ROUND == 0
        assert seen.split.counts.get(V2, 0) == seen.split.total * seen.weight // 100
        assert not seen.split.errors
    assert good.final["phase"] == "completed" and good.final["step"] == 5

    bad = result.rollouts["seg-v3"]
    assert [(s.phase, s.weight) for s in bad.steps if s.weight > 0 or s.phase == "aborted"] == [
        ("progressing", 50),
        ("aborted", 0),
    ]
    assert bad.final["canaryWeight"] == 0
    assert "analysis failed" in bad.final["reason"]
    # The bad canary got its share and answered every one with a 500.
    canary_step = next(s for s in bad.steps if s.weight == 50)
    assert canary_step.split.total > 0
    assert canary_step.split.errors == {"HTTP 500": canary_step.split.total // 2}
    assert V3 not in canary_step.split.counts
    # Once aborted: every request on the stable, none reached the canary at the emulator.
    assert result.after_abort is not None
    assert result.after_abort.counts == {V2: rollout.AFTER_ABORT} and not result.after_abort.errors
    assert result.canary_requests_after_abort == 0

    assert "→ completed" in text and "→ aborted" in text
    assert "Every step held" in text


async def test_a_canary_that_is_not_aborted_fails_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fault the second rollout completes; the check wants an abort, so the demo fails."""

    def no_fault(**_: object) -> ModelFault:
        return ModelFault()

    monkeypatch.setattr(rollout, "ModelFault", no_fault)
    monkeypatch.setattr(rollout, "BAD_STEPS", ("setWeight: 50", "pause: {duration: 1s}", "setWeight: 100"))
    out = io.StringIO()
    code, result = await rollout_demo_main(DemoOptions(), out, color="never", animate=False)
    assert code == 1
    assert result.rollouts["seg-v2"].final["phase"] == "completed"
    # The canary answered instead of failing (its split check fails too), and it was not aborted.
    assert "rollout seg-v3 ended completed, expected aborted" in result.failures
    assert "FAILED at rollout v2 → v3 (bad canary)" in out.getvalue()


def test_command_exits_zero_and_prints_each_step() -> None:
    proc = _run_cli()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in (
        "progressing step 1/5     canary  10%",
        "progressing step 3/5     canary  50%",
        "completed   after step 5 canary 100%",
        "aborted     step 1/3     canary   0%",
        f"ok after the abort every request is served by {V2}; none reaches {V3}",
        "Every step held",
    ):
        assert line in proc.stdout, proc.stdout
    assert "\x1b[" not in proc.stdout


def test_rollout_with_real_vllm_is_a_usage_error() -> None:
    proc = _run_cli("--real-vllm")
    assert proc.returncode == 2
    assert "--rollout runs against the emulator" in proc.stderr
