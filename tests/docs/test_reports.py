"""The generated reports (bench/README.md, docs/reliability.md) show what their recorded JSON says,
name only real things, and were measured on the files they describe.

(a) the generated block of each report is re-rendered from its JSON and must match;
(b) the commands, variables, metrics, links and paths a report names exist (the checks of
    test_docs.py, on these two files), and so does every `-m bench.NAME` it tells you to run;
(c) the content hash of every file in a report's scope is recomputed: when one changed since the
    recorded run the report is STALE, a warning locally and a failure under `CI=true`, naming the
    one command that regenerates it.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import benchmarks_report, reliability_report
from bench import report_support as rs
from tests.docs.docs_support import (
    ROOT,
    checked_lines,
    command_problem,
    commands,
    metric_names,
    variables_read,
)
from tests.docs.test_docs import LINKS, METRICS, PATHS, VARIABLES, Found


@dataclass(frozen=True)
class Report:
    markdown: Path
    command: str
    scope: tuple[str, ...]
    results: Path  # the JSON that records the run (for the benchmarks: the index)
    render: Callable[[], str]

    @property
    def id(self) -> str:
        return str(self.markdown.relative_to(ROOT))

    def recorded(self) -> dict[str, Any] | None:
        return json.loads(self.results.read_text()) if self.results.exists() else None


def _render_benchmarks() -> str:
    index, records = benchmarks_report.load(benchmarks_report.RESULTS)
    return benchmarks_report.render(index, records)


def _render_reliability() -> str:
    path = reliability_report.RESULTS
    return reliability_report.render(json.loads(path.read_text()) if path.exists() else None)


REPORTS = [
    Report(
        benchmarks_report.README,
        benchmarks_report.COMMAND,
        benchmarks_report.SCOPE,
        benchmarks_report.RESULTS / benchmarks_report.INDEX,
        _render_benchmarks,
    ),
    Report(
        reliability_report.MARKDOWN,
        reliability_report.COMMAND,
        reliability_report.SCOPE,
        reliability_report.RESULTS,
        _render_reliability,
    ),
]
IDS = [r.id for r in REPORTS]
DOCS = {r.markdown for r in REPORTS}


# --- (a) the tables are the JSON's ------------------------------------------------------------


@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_generated_block_matches_the_json(report: Report) -> None:
    """The generated block is exactly what the generator renders from the recorded JSON."""
    block = rs.generated_block(report.markdown.read_text())
    assert block is not None, f"{report.id}: no generated block; regenerate with `{report.command}`"
    assert block == report.render(), (
        f"{report.id}: its generated block differs from what its JSON renders; edit the generator, "
        f"not the block, and re-render with `{report.command} --render-only`"
    )


def test_flatten_keys_records_by_their_label() -> None:
    """Numeric leaves of a benchmark's JSON become rows; samples and text stay out."""
    run = {"machine": "x", "a": {"median_ms": 6.5, "samples": [1.0, 2.0]}, "b": [{"n": 200, "seconds": 0.1}]}
    assert benchmarks_report.flatten(run) == {
        "a / median_ms": 6.5,
        "b / n 200 / n": 200.0,
        "b / n 200 / seconds": 0.1,
    }


def test_spread_is_the_median_and_range_never_the_best() -> None:
    assert rs.spread([3.0, 1.0, 10.0, 2.0, 4.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert rs.fmt_spread([1500.0, 1200.0, 1300.0]) == ("1,300", "1,200-1,500")


# --- (b) what the reports name exists -----------------------------------------------------------


def _in_reports(kind: str, items: list[Found]) -> list[tuple[str, Found]]:
    return [(kind, f) for f in items if f.doc in DOCS]


# Every name and path the reports show, with what kind of thing it must be.
NAMED = (
    _in_reports("variable", VARIABLES)
    + _in_reports("metric", METRICS)
    + _in_reports("link", LINKS)
    + _in_reports("path", PATHS)
    + [
        ("module", Found(doc, n, m.group(1)))
        for doc in sorted(DOCS)
        for n, line in checked_lines(doc)
        for m in re.finditer(r"-m (bench\.[A-Za-z_]+)", line)
    ]
)
COMMANDS_NAMED = [c for doc in sorted(DOCS) for c in commands(doc)]


def _problem(kind: str, found: Found) -> str | None:
    text = found.text
    if kind == "variable":
        return None if text in variables_read() else f"nothing reads {text}"
    if kind == "metric":
        names = metric_names()
        ok = any(n.startswith(text[:-1]) for n in names) if text.endswith("*") else text in names
        return None if ok else f"no metric {text} is declared"
    if kind == "link":
        target = text.split("#", 1)[0]
        return None if (found.doc.parent / target).exists() else f"{target} does not exist"
    if kind == "path":
        ok = any(ROOT.glob(text)) if any(c in text for c in "*?[") else (ROOT / text).exists()
        return None if ok else f"{text} does not exist"
    path = ROOT / (text.replace(".", "/") + ".py")
    return None if path.exists() else f"{text} is not a module of this checkout"


def test_reports_name_things() -> None:
    """Both reports name paths and the commands that make them (so the checks below exist)."""
    kinds = {kind for kind, _ in NAMED}
    modules = {f.text for kind, f in NAMED if kind == "module"}
    assert {"path", "module"} <= kinds
    assert {"bench.benchmarks_report", "bench.reliability_report"} <= modules


@pytest.mark.parametrize(("kind", "found"), NAMED, ids=[f"{k}:{f.id}" for k, f in NAMED])
def test_named_thing_exists(kind: str, found: Found) -> None:
    """Variables are read, metrics declared, links, paths (test files too) and `-m bench.X` modules exist."""
    assert _problem(kind, found) is None, f"{found.where()}: {_problem(kind, found)}"


@pytest.mark.parametrize("command", COMMANDS_NAMED, ids=[c.id for c in COMMANDS_NAMED])
def test_command_is_accepted(command: Any) -> None:
    """A `lora-syncer` line in a report is one the CLI accepts."""
    assert command_problem(command) is None, f"{command.id}: {command_problem(command)}"


def test_problems_are_found() -> None:
    """The checks above fail on names that do not exist."""
    doc = benchmarks_report.README
    assert _problem("variable", Found(doc, 1, "LORA_SYNCER_NO_SUCH")) == "nothing reads LORA_SYNCER_NO_SUCH"
    assert (
        _problem("metric", Found(doc, 1, "lora_syncer_no_such"))
        == "no metric lora_syncer_no_such is declared"
    )
    assert _problem("link", Found(doc, 1, "../nowhere.md")) == "../nowhere.md does not exist"
    assert _problem("path", Found(doc, 1, "tests/docs/nope.py")) == "tests/docs/nope.py does not exist"
    assert _problem("module", Found(doc, 1, "bench.nope")) == "bench.nope is not a module of this checkout"


# --- (c) measured on the files in scope -----------------------------------------------------------


def stale_reasons(report: Report) -> list[str]:
    """Why the report no longer describes the working tree (empty: it does)."""
    data = report.recorded()
    if data is None:
        return [f"not measured yet ({report.results.relative_to(ROOT)} is missing)"]
    reasons = []
    if data["quick"]:
        reasons.append("recorded by a --quick run")
    if tuple(data["scope_patterns"]) != report.scope:
        reasons.append("the generator's scope changed")
    if report.markdown == benchmarks_report.README:
        missing = set(benchmarks_report.scripts()) - set(data["benchmarks"])
        reasons += [f"bench/{m}.py is not in the report" for m in sorted(missing)]
        if not data["quick"]:
            reasons += benchmarks_report.rule_violations(*benchmarks_report.load(benchmarks_report.RESULTS))
    elif not data["quick"]:
        reasons += reliability_report.rule_violations(data)
    return reasons + rs.changed_since(data["scope"], report.scope)


class StaleReportWarning(UserWarning):
    """A report measured on files that changed since (shown, not an error, outside CI)."""


@pytest.mark.filterwarnings("default::UserWarning")
@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_report_is_fresh(report: Report) -> None:
    """STALE when a file in scope changed after the recorded run: a failure under CI=true."""
    assert rs.scope_files(report.scope), f"{report.id}: its scope matches no file"
    reasons = stale_reasons(report)
    if not reasons:
        return
    shown = "; ".join(reasons[:8]) + (f"; and {len(reasons) - 8} more" if len(reasons) > 8 else "")
    message = f"{report.id} is STALE: regenerate with `{report.command}` ({shown})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    warnings.warn(message, StaleReportWarning, stacklevel=1)


def test_stale_when_a_file_in_scope_changes(tmp_path: Path) -> None:
    """The hash comparison sees a changed, an added and a removed file."""
    recorded = rs.scope_hashes(("bench/report_support.py", "bench/benchmarks_report.py"))
    recorded["bench/report_support.py"] = "0" * 64
    recorded["bench/gone.py"] = "0" * 64
    del recorded["bench/benchmarks_report.py"]
    assert rs.changed_since(recorded, ("bench/report_support.py", "bench/benchmarks_report.py")) == [
        "changed bench/report_support.py",
        "added bench/benchmarks_report.py",
        "removed bench/gone.py",
    ]


def _proxy_run(
    requests: int, paths: tuple[str, ...] = ("direct", "nginx", "proxy"), build: str = "compiled"
) -> dict[str, Any]:
    return {
        "proxy_build": build,
        "scenarios": [{"name": "latency", "paths": {p: {"requests": requests} for p in paths}}],
    }


def test_reliability_rule_violations() -> None:
    """A reliability report of other than three full runs breaks the rules."""
    row: dict[str, Any] = {"scenario": "churn"}
    assert reliability_report.rule_violations({"runs": [[row] * 5] * 3}) == []
    assert reliability_report.rule_violations({"runs": [[row] * 5, [row] * 4]}) == [
        "2 runs recorded, 3 wanted",
        "run 2: 4 scenarios, 5 wanted",
    ]


def test_rule_violations_of_a_recorded_run() -> None:
    """Too few proxy runs, a measurement under 4,000 requests, no nginx or a proxy that is not the
    image's compiled build breaks the rules."""
    index = {"benchmarks": ["bench_proxy"]}
    good = {"bench_proxy": {"runs": [_proxy_run(4000)] * 5}}
    assert benchmarks_report.rule_violations(index, good) == []
    bad = {
        "bench_proxy": {
            "runs": [_proxy_run(4000)] * 2
            + [_proxy_run(4000, build="python"), _proxy_run(3999, ("direct", "proxy"))]
        }
    }
    assert benchmarks_report.rule_violations(index, bad) == [
        "bench_proxy: 4 runs recorded, 5 wanted",
        "bench_proxy run 3: the proxy ran as python, not compiled",
        "bench_proxy run 4, scenarios / latency / paths / direct / requests: 3999 requests (< 4,000)",
        "bench_proxy run 4, scenarios / latency / paths / proxy / requests: 3999 requests (< 4,000)",
        "bench_proxy run 4, latency: no nginx",
    ]
