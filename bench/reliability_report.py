"""Run the reliability scenarios and render their figures into docs/reliability.md.

The scenarios are the ones the reliability tier asserts on (tests/support/reliability/),
run here longer and reported as a table: faults injected, requests sent, wrong answers, lost or
spurious unloads (all must be zero), time to converge once faults stop, peak RSS. Everything
runs on 127.0.0.1 and is bounded (about two minutes a run; three runs by default).

    .venv/bin/python -m bench.reliability_report            # the report (docs/reliability.md)
    .venv/bin/python -m bench.reliability_report --quick    # one short run, to a temporary directory

(run from the checkout's root, as a module, so `tests.support` imports from the checkout).

Every run's rows go to docs/reliability-results.json with the commit, the machine, the load
average, the exact command and a content hash of every file in `SCOPE`; the generated block of
docs/reliability.md is rendered from that JSON only (tests/docs/test_reports.py re-renders it).

Exit status 1 when any scenario found a violation (the table says which).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bench import report_support as rs
from tests.support.reliability.memory import peak_rss_kib
from tests.support.reliability.proxy_scenarios import run_proxy_under_faults
from tests.support.reliability.sync_scenarios import run_churn, run_process_restarts, run_restart_storm

MODULE = "bench.reliability_report"
COMMAND = rs.command_line(MODULE, [])
MARKDOWN = rs.ROOT / "docs" / "reliability.md"
RESULTS = rs.ROOT / "docs" / "reliability-results.json"
RUNS = 3
# What the figures depend on: the package and the reliability harness.
SCOPE = (
    "lora_syncer/**/*",
    "tests/support/reliability/**/*",
    "bench/reliability_report.py",
    "bench/report_support.py",
)


@dataclass
class Row:
    scenario: str
    faults: str
    requests: str
    wrong: int | None  # None: the scenario sends no inference requests
    unloads_bad: int
    converge: float | None
    peak_rss_mib: float
    seconds: float
    notes: str
    violations: list[str]


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


async def churn(workdir: Path, seconds: float) -> Row:
    r = await run_churn(workdir, seconds=seconds, swaps_per_second=25, seed=2, warmup_fraction=0.3)
    kinds = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(r.kinds.items()))
    growth = r.rss_end_kib - r.rss_warm_kib
    return Row(
        f"ConfigMap churn, {seconds:.0f} s at 25 swaps/s",
        kinds,
        f"{r.passes} passes",
        None,
        len(r.unload_violations),
        r.converge_seconds,
        _mib(r.peak_rss_kib),
        0.0,
        f"RSS after warm-up {_mib(r.rss_warm_kib)} MiB, at end {_mib(r.rss_end_kib)} MiB "
        f"(growth {growth / 1024:+.1f} MiB); max loads of one adapter {r.max_loads_per_adapter}",
        r.violations,
    )


async def restart_storm(workdir: Path, mode: str, restarts: int) -> Row:
    r = await run_restart_storm(workdir, restarts=restarts, failure_mode=mode)
    return Row(
        f"vLLM restarting mid-pass ({mode})",
        f"{r.restarts} restarts, loads 0.5 s vs 0.3 s timeout, 25% `{mode}` on load/unload "
        f"({r.injected} fired)",
        f"{r.load_calls} load calls",
        None,
        len(r.unload_violations),
        r.converge_seconds,
        _mib(peak_rss_kib()),
        0.0,
        "successful unloads per --lora-modules adapter: "
        + ", ".join(f"{k}={v}" for k, v in sorted(r.successful_unloads.items())),
        r.violations,
    )


async def process_restarts(workdir: Path, cycles: int) -> Row:
    r = await run_process_restarts(workdir, cycles=cycles)
    return Row(
        f"`lora-syncer run` SIGTERM mid-pass x{cycles}",
        f"{cycles} SIGTERMs with loads in flight, file changed between runs",
        f"{r.load_calls} load calls",
        None,
        len(r.unload_violations) + len(r.lost),
        r.converge_seconds,
        _mib(peak_rss_kib()),
        0.0,
        f"exit codes {r.exit_codes}; loads of adapters already loaded: {r.redundant_loads}",
        r.violations,
    )


async def proxy_load(workdir: Path, seconds: float) -> Row:
    r = await run_proxy_under_faults(workdir, seconds=seconds, clients=8, split_requests=200)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    return Row(
        f"proxy under load, {seconds:.0f} s, 8 clients",
        f"{r.restarts} vLLM restarts, {r.rules_changes} rules changes, 5% of chats dropped",
        f"{r.requests} (+{len(r.split) * 200} split)",
        len(r.wrong),
        0,
        r.converge_seconds,
        _mib(peak_rss_kib()),
        0.0,
        f"correct {r.correct}, OpenAI-style errors {r.openai_errors}, streams cut by a restart "
        f"{r.cut_short}, hung {r.hung}, other {len(r.bad_errors)}; statuses {statuses}; "
        f"split after faults: {'; '.join(r.split)}",
        r.violations,
    )


# --- rendering (from the JSON only) ------------------------------------------------------------


def _cells(values: list[float | None], unit: str, scale: float = 1.0) -> str:
    known = [v * scale for v in values if v is not None]
    if not known:
        return "never"
    median, span = rs.fmt_spread(known)
    never = f", never in {len(values) - len(known)}" if len(known) < len(values) else ""
    return f"{median} {unit} ({span}{never})"


def render(data: dict[str, Any] | None) -> str:
    """The generated block of docs/reliability.md, from the recorded JSON (or a placeholder)."""
    out = [rs.begin_marker(COMMAND), ""]
    if data is None:
        out += [f"Not measured at this commit yet: regenerate with `{COMMAND}`.", ""]
        return "\n".join([*out, rs.END])
    runs: list[list[dict[str, Any]]] = data["runs"]
    quick = " (a --quick check of the pipeline: not figures to quote)" if data["quick"] else ""
    out += [
        rs.machine_line(data) + quick,
        "",
        f"{len(runs)} run(s); each cell with a figure is the median of the runs, min-max in brackets.",
        "",
        "| scenario | runs | runs with a violation | wrong answers (max) | lost or spurious unloads (max) "
        "| converged after faults stop | peak RSS | run time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run:
            by_scenario.setdefault(row["scenario"], []).append(row)
    for name, rows in by_scenario.items():
        wrong = [r["wrong"] for r in rows if r["wrong"] is not None]
        out.append(
            f"| {name} | {len(rows)} | {sum(1 for r in rows if r['violations'])} "
            f"| {max(wrong) if wrong else 'n/a'} | {max(r['unloads_bad'] for r in rows)} "
            f"| {_cells([r['converge'] for r in rows], 'ms', 1000)} "
            f"| {_cells([r['peak_rss_mib'] for r in rows], 'MiB')} "
            f"| {_cells([r['seconds'] for r in rows], 's')} |"
        )
    out += ["", "### Notes per scenario and run", ""]
    for name, rows in by_scenario.items():
        out.append(f"- **{name}**")
        for i, r in enumerate(rows, 1):
            verdict = (
                "No violation" if not r["violations"] else "VIOLATIONS: " + "; ".join(r["violations"][:5])
            )
            out.append(f"  - run {i}: faults: {r['faults']}; sent: {r['requests']}; {r['notes']}. {verdict}.")
    return "\n".join([*out, "", rs.END])


def rule_violations(data: dict[str, Any]) -> list[str]:
    """How a recorded (non-quick) run breaks the report's rules: every scenario, `RUNS` times."""
    runs = data["runs"]
    out = [f"{len(runs)} runs recorded, {RUNS} wanted"] if len(runs) != RUNS else []
    return out + [
        f"run {i}: {len(rows)} scenarios, 5 wanted" for i, rows in enumerate(runs, 1) if len(rows) != 5
    ]


async def run_once(quick: bool) -> list[Row]:
    scale = 0.4 if quick else 1.0
    plans: list[tuple[str, Callable[[Path], Awaitable[Row]]]] = [
        ("churn", lambda d: churn(d, 20 * scale)),
        ("storm-drop", lambda d: restart_storm(d, "drop", 10)),
        ("storm-drop-after", lambda d: restart_storm(d, "drop_after", 10)),
        ("process", lambda d: process_restarts(d, 4 if not quick else 2)),
        ("proxy", lambda d: proxy_load(d, 30 * scale)),
    ]
    rows: list[Row] = []
    for name, plan in plans:
        with tempfile.TemporaryDirectory(prefix=f"rel-{name}-") as tmp:
            t0 = time.perf_counter()
            row = await plan(Path(tmp))
            row.seconds = time.perf_counter() - t0
            rows.append(row)
            print(f"{row.scenario}: {row.seconds:.1f} s, violations: {row.violations or 'none'}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the Markdown to update (default: docs/reliability.md)")
    parser.add_argument("--results", type=Path, help="the raw JSON (default: docs/reliability-results.json)")
    parser.add_argument("--quick", action="store_true", help="one shorter run, to a temporary directory")
    parser.add_argument("--render-only", action="store_true", help="re-render the Markdown from the JSON")
    parser.add_argument("--runs", type=int, help=f"runs of every scenario (default {RUNS}; 1 with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.results, args.out = rs.quick_paths(
            "reliability-quick-", args.results, "reliability-results.json", args.out, MARKDOWN
        )
    out: Path = args.out or MARKDOWN
    results: Path = args.results or RESULTS
    # The sidecar's own log lines would drown the figures; warnings and errors are enough here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    violations = False
    if not args.render_only:
        data: dict[str, Any] = {**rs.run_header(MODULE, argv, args.quick, SCOPE), "runs": []}
        for i in range(args.runs or (1 if args.quick else RUNS)):
            print(f"run {i + 1}", flush=True)
            rows = asyncio.run(run_once(args.quick))
            data["runs"].append([dataclasses.asdict(r) for r in rows])
            violations = violations or any(r.violations for r in rows)
        data["loadavg_end"] = rs.loadavg()
        results.write_text(json.dumps(data, indent=2) + "\n")
    loaded = json.loads(results.read_text()) if results.exists() else None
    out.write_text(rs.replace_block(out.read_text(), COMMAND, render(loaded)))
    print(f"wrote {results} and {out}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
