"""Run the reliability scenarios and write their figures to docs/reliability.md.

The scenarios are the ones the reliability tier asserts on (tests/support/reliability/),
run here longer and reported as a table: faults injected, requests sent, wrong answers, lost or
spurious unloads (all must be zero), time to converge once faults stop, peak RSS. Everything
runs on 127.0.0.1 and is bounded (about two minutes in all).

    .venv/bin/python -m bench.reliability_report [--out docs/reliability.md] [--quick]

(run from the checkout's root, as a module, so `tests.support` imports from the checkout).

Exit status 1 when any scenario found a violation (the table says which).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from tests.support.reliability.memory import peak_rss_kib
from tests.support.reliability.proxy_scenarios import run_proxy_under_faults
from tests.support.reliability.sync_scenarios import run_churn, run_process_restarts, run_restart_storm

ROOT = Path(__file__).resolve().parents[1]


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


def _fmt_converge(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


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


THREAT_MODEL = """## Security: threat model

**Who can change what the sidecar does.** Whoever may update the two ConfigMaps in the pod's
namespace (Kubernetes RBAC `update` on `configmaps`). Through the adapters file they choose which
adapters this vLLM loads and unloads; through the rules file, how client traffic for a name is split
among targets. That is the power the sidecar is meant to give them, and its limits are:

- sources outside `--allowed-sources` are refused (state `forbidden_source`, never sent to vLLM);
  with a directory prefix, `..` escapes, sibling prefixes (`/adapters-evil`) and other paths are
  refused (`tests/security/test_allowed_sources.py`);
- nothing is unloaded unless a good file lists it in `ensureNotExist` (or `--prune` is on); a file
  that is malformed, binary, too large or missing keeps the last good one in force;
- a bad file cannot stop the sidecar: it is reported in `/status` and the logs, not crashed on
  (known exceptions, xfail tests: YAML nested deeper than ~1,000 levels, self-referencing or
  exponentially expanding aliases, a list under `kind` in a rules file).

**What the sidecar trusts.** The vLLM server named by `--server` (or the file's `host`/`port`): its
`/v1/models` is taken as the truth about what is loaded. The kubelet's atomic delivery of the
ConfigMap files. Its own flags and environment.

**What it does not trust: proxy clients.** Any request may arrive. The proxy refuses vLLM's adapter
and control routes with 403 however the path is spelled (`//`, dot segments, `%2F`, trailing slash;
other letter cases are passed on because vLLM's routes are case-sensitive), bodies over
`--max-body-size` (413), bodies slower than `--client-body-timeout` (408), and closes connections
idle or stuck in their headers after `--client-idle-timeout`; at most `--upstream-connections`
requests reach vLLM at once. Errors it makes are OpenAI-style JSON. A client's `Authorization`
header is passed to vLLM (which does the authentication) and never logged.

**Secrets and what is exposed.** `--api-key` / `VLLM_API_KEY` is sent only to vLLM. `/healthz`,
`/readyz`, `/status` and `/metrics` are read-only (other methods: 405) and never show the API key, a
client's `Authorization` header or a prompt; neither do the logs at any level
(`tests/security/test_secrets.py`). They do show adapter names, sources and rules: bind
`--metrics-host` to the pod network only, as for any metrics port. The image runs as a non-root
user on a read-only root filesystem (see the chart and `docs/deployment.md`).
"""


def render(rows: list[Row], started: float, quick: bool) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    out = [
        "# Reliability report",
        "",
        "Produced by `bench/reliability_report.py`"
        + (" (--quick)" if quick else "")
        + f" on {time.strftime('%Y-%m-%d', time.gmtime(started))}; machine: {machine}. "
        "Everything runs on 127.0.0.1 against the emulated vLLM and its fault injection; the same "
        "scenarios, shorter, are asserted by `tests/reliability/`.",
        "",
        "| scenario | faults injected | requests sent | wrong answers | lost or spurious unloads "
        "| converged after faults stop | peak RSS | run time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.scenario} | {r.faults} | {r.requests} | {'n/a' if r.wrong is None else r.wrong} | {r.unloads_bad} "
            f"| {_fmt_converge(r.converge)} | {r.peak_rss_mib} MiB | {r.seconds:.1f} s |"
        )
    out += ["", "## Notes per scenario", ""]
    for r in rows:
        verdict = "No violation" if not r.violations else "VIOLATIONS: " + "; ".join(r.violations[:5])
        out.append(f"- **{r.scenario}**: {r.notes}. {verdict}.")
    out += [
        "",
        "## How to read it",
        "",
        "- *Lost or spurious unloads*: unloads, in the emulator's call log, of an adapter every good file "
        "declared present, of a name no good file declared absent, of one the files declared present for "
        "the whole preceding second, or a second successful unload with no load or restart in between. Must be 0.",
        "- *Wrong answers*: a 200 whose `model` is not a target of a rules version in force while the "
        "request was in flight. Errors are not wrong answers when they are JSON in the OpenAI shape; "
        "anything else (text, a dropped connection, a hang) counts as a violation.",
        "- *Converged*: time from the end of the faults to the server holding every adapter of the last "
        "good file (and none it declares absent). A churn run always ends on a good file: a good file that "
        "lived 40 ms between two bad ones may never be read, and the syncer keeps the last good file it read.",
        "- *Peak RSS* is the test process's (the sidecar runs in-process), cumulative over the run, so it "
        "only grows from row to row; the churn row's note gives the growth between warm-up and the end.",
        "- Known bugs found while writing these scenarios are strict xfail tests: "
        "`tests/fuzz/test_known_bugs.py`, `tests/reliability/test_sync_reliability.py`, "
        "`tests/security/test_allowed_sources.py`.",
        "",
        THREAT_MODEL,
    ]
    return "\n".join(out)


async def main_async(out: Path, quick: bool) -> int:
    scale = 0.4 if quick else 1.0
    started = time.time()
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
    await asyncio.to_thread(out.write_text, render(rows, started, quick))
    print(f"wrote {out}")
    return 1 if any(r.violations for r in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 40%% of the time)")
    args = parser.parse_args()
    # The sidecar's own log lines would drown the figures; warnings and errors are enough here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    return asyncio.run(main_async(args.out, args.quick))


if __name__ == "__main__":
    sys.exit(main())
