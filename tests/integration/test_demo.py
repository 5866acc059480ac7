"""`lora-syncer demo`: the whole guide walked in-process and as a command, its checks, its output."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from pathlib import Path

import pytest

from lora_syncer.commands.demo import demo_main
from lora_syncer.demo.checks import Split, check_adapters, check_split, syncer_settled, unified_diff
from lora_syncer.demo.render import Style, bar, format_split_table, use_color
from lora_syncer.demo.steps import (
    Expectation,
    load_walkthrough,
    parse_manifest,
    read_step_file,
    step_file_names,
    with_sources,
)
from lora_syncer.demo.walkthrough import DemoOptions
from tests.support import seeds
from tests.support.processes import run_demo

EXAMPLES = seeds.EXAMPLES / "qwen3-32b-rewrite"
GUIDE_SPLITS = {
    "alias-v1": {"small-segment-lora-v1": 20, "small-segment-lora-v2": 0},
    "split-90-10": {"small-segment-lora-v1": 18, "small-segment-lora-v2": 2},
    "split-50-50": {"small-segment-lora-v1": 10, "small-segment-lora-v2": 10},
    "split-0-100": {"small-segment-lora-v1": 0, "small-segment-lora-v2": 20},
    "cleanup": {"small-segment-lora-v1": 0, "small-segment-lora-v2": 20},
}


def _counts(split: Split) -> dict[str, int]:
    return {name: split.counts.get(name, 0) for name in ("small-segment-lora-v1", "small-segment-lora-v2")}


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_demo(*args, timeout=120, env=env or {})


class TestStepData:
    def test_step_files_are_the_shipped_examples(self) -> None:
        """Every demo manifest that exists in examples/qwen3-32b-rewrite/ is byte-identical to it."""
        overlap = [name for name in step_file_names() if (EXAMPLES / name).exists()]
        assert len(overlap) == 6
        for name in overlap:
            assert read_step_file(name) == (EXAMPLES / name).read_text(encoding="utf-8"), name

    def test_walk_follows_the_guide(self) -> None:
        """The walk has the guide's six steps in order with the guide's exact counts of 20 requests."""
        walk = load_walkthrough()
        assert [s.id for s in walk.steps] == ["load", *GUIDE_SPLITS]
        assert walk.alias == "small-segment-lora"
        assert walk.requests == 20
        for step in walk.steps[1:]:
            assert step.expect.split == GUIDE_SPLITS[step.id]
        assert walk.steps[-1].expect.unloaded == ("small-segment-lora-v1",)

    def test_with_sources_replaces_only_the_named_adapter(self) -> None:
        """Source substitution rewrites the `source:` of the named id and leaves every other line alone."""
        text = parse_manifest("x", read_step_file("00-adapters.yaml")).content
        out = with_sources(text, {"small-segment-lora-v2": "/adapters/v2"})
        assert out.count("source: ttt421/nec119-small-segment-lora") == 1
        assert "      source: /adapters/v2\n" in out
        assert len(out.splitlines()) == len(text.splitlines())


class TestChecks:
    def test_exact_split_holds(self) -> None:
        """A split equal to the expectation gives no failure."""
        split = Split(total=20, counts={"a": 18, "b": 2})
        assert check_split({"a": 18, "b": 2}, split) == []

    def test_split_off_by_one_and_errors_fail(self) -> None:
        """A miscount, an unexpected model and failed requests are each reported."""
        split = Split(total=20, counts={"a": 17, "c": 1}, errors={"HTTP 500": 2})
        failures = check_split({"a": 18, "b": 2}, split)
        assert "a served 17 of 20 requests, expected 18" in failures
        assert "b served 0 of 20 requests, expected 2" in failures
        assert any("served by c" in f for f in failures)
        assert "2 request(s) failed (HTTP 500)" in failures

    def test_adapter_still_listed_fails_cleanup(self) -> None:
        """An adapter declared absent but still in /v1/models fails the check."""
        expect = Expectation(loaded=("v2",), unloaded=("v1",))
        states = {"v1": {"state": "absent"}, "v2": {"state": "loaded"}}
        assert check_adapters(expect, states, ["v2"]) == []
        assert check_adapters(expect, states, ["v1", "v2"]) == ["v1 is still listed by GET /v1/models"]

    def test_failed_adapter_reports_its_error(self) -> None:
        """A failed adapter's last error is part of the failure message."""
        expect = Expectation(loaded=("v1",))
        failures = check_adapters(expect, {"v1": {"state": "failed", "lastError": "boom"}}, [])
        assert failures[0] == "v1 is failed, expected loaded: boom"

    def test_syncer_not_settled_until_declarations_match(self) -> None:
        """The syncer has settled only when the generation matches and each adapter is declared and at rest."""
        status = {
            "config": {"generation": "g2"},
            "adapters": {"v1": {"declared": "present", "state": "loaded"}},
        }
        assert not syncer_settled(status, "g2", {"v1": "absent"})
        assert not syncer_settled(status, "g1", {"v1": "present"})
        assert syncer_settled(status, "g2", {"v1": "present"})

    def test_diff_shows_the_weight_change(self) -> None:
        """The unified diff of 90/10 -> 50/50 removes the old weights and adds the new ones."""
        before = parse_manifest("a", read_step_file("02-rules-90-10.yaml")).content
        after = parse_manifest("b", read_step_file("03-rules-50-50.yaml")).content
        diff = unified_diff(before, after, "rules.yaml")
        assert "-          weight: 90" in diff
        assert "+          weight: 50" in diff


class TestRender:
    def test_no_color_disables_colour_on_a_tty(self) -> None:
        """NO_COLOR turns colour off even on a terminal; TERM=dumb too; `always` forces it."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert use_color(Tty(), "auto", {})
        assert not use_color(Tty(), "auto", {"NO_COLOR": "1"})
        assert not use_color(Tty(), "auto", {"TERM": "dumb"})
        assert not use_color(io.StringIO(), "auto", {})
        assert use_color(io.StringIO(), "always", {"NO_COLOR": "1"})

    def test_bars_are_proportional(self) -> None:
        """Bars have 20 cells filled in proportion; plain text uses # and ."""
        assert bar(18, 20, unicode=False) == "#" * 18 + ".."
        assert bar(0, 20, unicode=False) == "." * 20
        assert bar(10, 20) == "█" * 10 + "░" * 10

    def test_split_table_plain(self) -> None:
        """The plain table lists each model's count, share, bar and expected count, with no escape codes."""
        rows = format_split_table(
            Split(total=20, counts={"v1": 18, "v2": 2}), {"v1": 18, "v2": 2}, Style(False), unicode=False
        )
        assert "\x1b" not in "".join(rows)
        assert rows[1].split() == ["v1", "18", "90%", "#" * 18 + "..", "18", "ok"]
        assert rows[2].split() == ["v2", "2", "10%", "##" + "." * 18, "2", "ok"]


class TestDemoInProcess:
    async def test_every_step_holds(self) -> None:
        """The in-process demo exits 0 with the guide's exact splits, and prints them as tables."""
        out = io.StringIO()
        code, result = await demo_main(DemoOptions(), out, color="never", animate=False)
        text = out.getvalue()
        assert code == 0, text
        assert result.ok
        assert {k: _counts(v) for k, v in result.splits.items()} == GUIDE_SPLITS
        assert "small-segment-lora-v1        18    90%  ##################..        18 ok" in text
        assert "small-segment-lora-v2         2    10%  ##..................         2 ok" in text
        assert "GET /v1/models (adapters): small-segment-lora-v2\n" in text
        assert "Every step held" in text
        assert "\x1b[" not in text

    async def test_injected_fault_fails_the_named_step(self) -> None:
        """When the server fails every request during 50/50, the demo stops there and exits 1 naming the step."""
        out = io.StringIO()
        code, result = await demo_main(
            DemoOptions(fault_step="split-50-50"), out, color="never", animate=False
        )
        text = out.getvalue()
        assert code == 1
        assert result.failed_step is not None
        assert result.failed_step.id == "split-50-50"
        assert "20 request(s) failed (HTTP 500)" in result.failures
        assert "FAILED at step 'split-50-50'" in text
        assert "[5/6]" not in text  # nothing after the failed step ran
        assert list(result.splits) == ["alias-v1", "split-90-10"]

    async def test_failed_loads_fail_the_load_step(self) -> None:
        """Loads failing on the server leave the adapters `failed`, and the load step says so."""
        out = io.StringIO()
        code, result = await demo_main(DemoOptions(fault_step="load"), out, color="never", animate=False)
        assert code == 1
        assert result.failed_step is not None
        assert result.failed_step.id == "load"
        assert any(f.startswith("small-segment-lora-v1 is failed, expected loaded") for f in result.failures)

    async def test_pause_is_awaited_between_steps(self) -> None:
        """`--step` pauses once between each pair of steps."""
        pauses = 0

        async def pause() -> None:
            nonlocal pauses
            pauses += 1
            await asyncio.sleep(0)

        code, _ = await demo_main(DemoOptions(pause=pause), io.StringIO(), color="never", animate=False)
        assert code == 0
        assert pauses == 5


class TestDemoCommand:
    def test_subprocess_exit_zero_and_counts(self) -> None:
        """`python -m lora_syncer demo` exits 0 and prints every split and the closing line, in plain text."""
        proc = _run_cli()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for line in (
            "small-segment-lora-v1        20   100%",
            "small-segment-lora-v1        18    90%",
            "small-segment-lora-v2        10    50%",
            "small-segment-lora-v2        20   100%",
            "ok split 18/2 exactly as the guide says",
            "ok split 0/20 exactly as the guide says",
            "Every step held",
        ):
            assert line in proc.stdout
        assert "\x1b[" not in proc.stdout

    def test_subprocess_fault_exits_non_zero_naming_the_step(self) -> None:
        """A step that cannot hold makes the command exit 1 with a message naming the step."""
        proc = _run_cli("--inject-fault", "cleanup")
        assert proc.returncode == 1
        assert "FAILED at step 'cleanup'" in proc.stdout

    def test_step_without_a_terminal_just_continues(self) -> None:
        """`--step` with stdin not a terminal does not wait and the walk completes."""
        proc = _run_cli("--step")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "press Enter" not in proc.stdout

    def test_color_always_uses_ansi(self) -> None:
        """`--color always` colours the output even into a pipe."""
        proc = _run_cli("--color", "always")
        assert proc.returncode == 0
        assert "\x1b[32m" in proc.stdout

    def test_real_vllm_without_environment_exits_2(self, tmp_path: Path) -> None:
        """`--real-vllm` without the vLLM environment exits 2 saying how to create it."""
        proc = _run_cli("--real-vllm", env={"LORA_SYNCER_VLLM_VENV": str(tmp_path / "none")})
        assert proc.returncode == 2
        assert "scripts/setup-vllm-env.sh" in proc.stderr
        assert "without --real-vllm" in proc.stderr

    def test_unknown_fault_step_is_a_usage_error(self) -> None:
        """An unknown step name is exit 2 with the list of steps."""
        proc = _run_cli("--inject-fault", "nope")
        assert proc.returncode == 2
        assert "load, alias-v1, split-90-10" in proc.stderr


@pytest.mark.real_vllm
@pytest.mark.slow
def test_demo_against_real_vllm() -> None:
    """`lora-syncer demo --real-vllm` walks the same guide against a real CPU vLLM and exits 0."""
    from lora_syncer.realvllm.launcher import SETUP_HINT, find_venv

    if find_venv() is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and no real vLLM environment; create it with: {SETUP_HINT}")
        pytest.skip(f"no real vLLM environment; create it with: {SETUP_HINT}")
    proc = run_demo("--real-vllm", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "small-segment-lora-v1        18    90%" in proc.stdout
    assert "Every step held" in proc.stdout
