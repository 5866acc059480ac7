"""The syncer under mixed faults: ConfigMap churn with bad, deleted, huge and binary files; vLLM
restarting during passes with slow loads and dropped connections; the process killed with
SIGTERM mid-pass and started again. After every scenario: nothing declared was unloaded,
nothing unloaded twice, no load storm, and the server converges to the last good file."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.reliability.files import KEY
from tests.support.reliability.sync_scenarios import run_churn, run_process_restarts, run_restart_storm
from tests.support.reliability.world import world
from tests.support.wait import eventually

# Growth allowed between the end of warm-up and the end of the long churn run. Parsing 1 MiB
# files leaves allocator slack of a few MiB; a leak of one parsed file per swap would be ~100 MiB.
RSS_GROWTH_BOUND_KIB = 24 * 1024


async def test_configmap_churn_keeps_declared_adapters(tmp_path: Path) -> None:
    """25 swaps/s for 3 s of good, malformed, deleted, 1 MiB and binary files: no declared adapter unloaded, no storm, converges."""
    result = await run_churn(tmp_path, seconds=3.0, swaps_per_second=25)
    assert result.violations == []
    assert result.kinds.get("malformed", 0) > 0 and result.kinds.get("binary", 0) > 0
    assert result.passes >= 2


@pytest.mark.slow
async def test_long_churn_does_not_grow_memory(tmp_path: Path) -> None:
    """Over a 10 s churn run (250 swaps) resident memory grows by less than the stated bound after warm-up."""
    result = await run_churn(tmp_path, seconds=10.0, swaps_per_second=25, seed=2, warmup_fraction=0.3)
    assert result.violations == []
    growth = result.rss_end_kib - result.rss_warm_kib
    assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew by {growth} KiB: {result.rss_samples_kib}"


@pytest.mark.parametrize("mode", ["drop", "drop_after"])
async def test_restart_loop_with_slow_loads_and_drops_converges(tmp_path: Path, mode: str) -> None:
    """vLLM restarting 6 times mid-pass, loads beyond the timeout, a quarter of calls dropped: converges, no duplicate unloads."""
    result = await run_restart_storm(tmp_path, failure_mode=mode)
    assert result.violations == []
    assert result.injected > 0
    assert sum(result.successful_unloads.values()) > 0  # there were unloads to duplicate


@pytest.mark.slow
async def test_sigterm_mid_pass_and_restart_cycles(tmp_path: Path) -> None:
    """Three SIGTERMs of a real process mid-pass, the file changing between runs: exit 0, no duplicate or lost operation."""
    result = await run_process_restarts(tmp_path, cycles=3)
    assert result.violations == []
    assert len(result.exit_codes) == 4


async def test_deeply_nested_file_at_start_keeps_the_syncer_alive(tmp_path: Path) -> None:
    """Starting on a 5,000-level nested adapters file: the error shows in /status and /healthz stays 200."""
    async with world(tmp_path) as w:
        w.volume.write({KEY: b"vLLMLoRAConfig: " + b"[" * 5000 + b"]" * 5000})
        sidecar = await w.start_sidecar()
        reconciler = sidecar.reconciler
        assert reconciler is not None
        base = f"http://127.0.0.1:{sidecar.health_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await eventually(lambda: reconciler.status.passes > 0)
            async with http.get(base + "/status") as resp:
                assert resp.status == 200
                status = await resp.json()
            config = status["syncer"]["config"]
            assert config["generation"] is None  # nothing of the file is in force
            assert config["error"], config  # the refusal, with its reason
            assert all(isinstance(issue, dict) and issue for issue in config["error"])
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200, await resp.text()
