"""bench/bench_rollout.py's `--json` figures, and how the report generator reads them."""

from __future__ import annotations

import argparse

from bench import bench_rollout, benchmarks_report


def _figures() -> dict[str, object]:
    args = argparse.Namespace(requests=100, runs=3, concurrency=4, shadow_concurrency=8)
    # Seconds of CPU per request for each scenario, one figure per interleaved round.
    per_request = {
        "plain": [100e-6, 110e-6, 120e-6],
        "rollout": [101e-6, 112e-6, 120e-6],
        "mirror-10": [150e-6, 160e-6, 170e-6],
        "mirror-50": [300e-6, 320e-6, 340e-6],
    }
    copies = {
        "plain": [10, 10, 10],
        "rollout": [10, 10, 10],
        "mirror-10": [10, 10, 10],
        "mirror-50": [50, 50, 50],
    }
    failed = {"plain": 0, "rollout": 0, "mirror-10": 2, "mirror-50": 0}
    return bench_rollout._figures(args, per_request, copies, failed)


def test_medians_ranges_and_paired_differences() -> None:
    figures = _figures()
    scenarios = {s["name"]: s for s in figures["scenarios"]}  # type: ignore[attr-defined]
    assert list(scenarios) == list(bench_rollout.SCENARIOS)
    plain, rollout = scenarios["plain"], scenarios["rollout"]
    assert plain["cpu_us_per_request"] == {"median": 110.0, "min": 100.0, "max": 120.0}
    assert "paired_difference_vs_plain_us" not in plain
    # Paired round by round (1, 2, 0 µs), not the difference of the medians (2 µs).
    diff = rollout["paired_difference_vs_plain_us"]
    assert round(diff["median"], 6) == 1.0 and round(diff["min"], 6) == 0.0 and round(diff["max"], 6) == 2.0
    assert rollout["requests"] == 300 and scenarios["mirror-10"]["failed_requests"] == 2
    assert scenarios["mirror-50"]["canary_requests_per_batch"] == 50
    assert figures["settings"] == {
        "runs": 3,
        "requests_per_batch": 100,
        "concurrency": 4,
        "shadow_concurrency": 8,
    }


def test_the_report_tabulates_the_figures_and_checks_request_counts() -> None:
    flat = benchmarks_report.flatten(_figures())
    assert round(flat["scenarios / rollout / paired_difference_vs_plain_us / median"], 6) == 1.0
    assert flat["scenarios / plain / requests"] == 300
    assert not any("runs_us_per_request" in key for key in flat)  # raw samples stay in the JSON
    bench = benchmarks_report.BENCHES["bench_rollout"]
    assert bench.runs == 1 and bench.notes
    record = {"script": "bench/bench_rollout.py", "command": "cmd", "runs": [_figures()]}
    table = "\n".join(benchmarks_report._table("bench_rollout", record))
    assert "| scenarios / mirror-50 / cpu_us_per_request / median | 320 | one run |" in table
    assert f"Fewer than {bench.min_requests:,} requests in:" in table  # 300 < the floor
    assert bench.notes[0] in table
