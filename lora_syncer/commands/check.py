"""`lora-syncer check FILE...`: validate adapters files, rules files and ConfigMap manifests.

Exit 0 when every file is valid (warnings allowed), 1 otherwise. Prints one line per problem:
`file:line: severity: path: message`. Given one adapters file and one rules file (or manifests
carrying them), it also checks them against each other and prints each alias's effective
split. `-` reads a file from standard input; `--json` prints one JSON document instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from lora_syncer.config.adapters import ROOT_KEY, AdaptersConfig, parse_adapters_text
from lora_syncer.config.crosscheck import CrossCheck, cross_check
from lora_syncer.config.errors import ConfigError, Issue
from lora_syncer.config.manifest import Embedded, classify, configmaps_in
from lora_syncer.config.rules import RuleSet, parse_rules_text
from lora_syncer.config.source import MAX_FILE_BYTES, read_file
from lora_syncer.config.yamldoc import YamlSyntaxError, decode_text, load_documents
from lora_syncer.rollout.crosscheck import adapter_warnings
from lora_syncer.rollout.describe import describe

STDIN = "-"


@dataclass(frozen=True)
class Found:
    """A valid file found while checking, with what locates its lines in what the user gave."""

    label: str
    value: AdaptersConfig | RuleSet
    line_offset: int = 0


@dataclass
class Report:
    """What checking one given file found."""

    summary: str = ""
    issues: list[Issue] = field(default_factory=list)
    found: list[Found] = field(default_factory=list)


def _describe_adapters(cfg: AdaptersConfig) -> str:
    parts = [f"{len(cfg.ensure_exist)} to keep loaded", f"{len(cfg.ensure_not_exist)} to keep unloaded"]
    if cfg.conflicts:
        parts.append(f"{len(cfg.conflicts)} in conflict")
    return "adapters file: " + ", ".join(parts)


def _check_adapters(text: str, name: str) -> Report:
    try:
        cfg = parse_adapters_text(text, name)
    except ConfigError as exc:
        return Report(issues=exc.issues)
    return Report(_describe_adapters(cfg), list(cfg.warnings), [Found(name, cfg)])


def _check_text(text: str, name: str) -> Report:
    """Validate one file's text, whatever it is."""
    try:
        docs = [d for d in load_documents(text) if d.data is not None]
    except YamlSyntaxError as exc:
        return Report(issues=[Issue(path="", message=exc.message, line=exc.line, file=name)])
    embedded = configmaps_in(docs)
    if embedded is not None:
        return _check_configmaps(embedded, name)
    kinds = {classify(d.data) for d in docs}
    if "adapters" in kinds:
        return _check_adapters(text, name)
    if "rules" in kinds:
        return _check_rules(text, name)
    return Report(
        issues=[
            Issue(
                path="",
                message="not a recognised file: expected a 'vLLMLoRAConfig' adapters file, "
                "InferenceModelRewrite/InferenceModel rules, or a ConfigMap carrying them",
                line=docs[0].start_line if docs else 1,
                file=name,
            )
        ]
    )


def _check_rules(text: str, name: str) -> Report:
    try:
        rules = parse_rules_text(text, name)
    except ConfigError as exc:
        return Report(issues=exc.issues)
    exact, catch_all = rules.winners()
    summary = f"rules file: {len(rules.rules)} rule(s) for {len(exact)} model name(s)"
    if catch_all is not None:
        summary += " and a catch-all"
    if rules.route is not None:
        summary += f"; HTTPRoute {rules.route.document!r} splits between {len(rules.route.backends)} pool(s)"
    if rules.rollouts:
        summary += f"; {len(rules.rollouts)} AdapterRollout(s): " + ", ".join(r.name for r in rules.rollouts)
    return Report(summary, list(rules.warnings), [Found(name, rules)])


def _check_configmaps(entries: list[Embedded], name: str) -> Report:
    summaries: list[str] = []
    report = Report()
    for e in entries:
        label = f"{name}[{e.configmap}/{e.key}]"
        try:
            docs = [d for d in load_documents(e.text) if d.data is not None]
            kinds = {classify(d.data) for d in docs}
        except YamlSyntaxError:
            kinds = {"adapters"} if ROOT_KEY in e.text else {"unknown"}
        if "adapters" in kinds:
            inner = _check_text(e.text, label)
        elif "rules" in kinds or e.key.endswith("rules.yaml"):
            # The rules key is a rules file by name, even when it holds no rule yet.
            inner = _check_rules(e.text, label)
        else:
            continue  # other keys in the ConfigMap are not ours to judge
        summaries.append(f"{e.configmap}/{e.key}: {inner.summary}" if inner.summary else "")
        report.issues.extend(
            replace(i, line=(i.line + e.line_offset) if i.line is not None else None) for i in inner.issues
        )
        report.found.extend(replace(f, line_offset=f.line_offset + e.line_offset) for f in inner.found)
    if not summaries and not report.issues:
        report.issues.append(
            Issue(
                path="data",
                message="no adapters file (vLLMLoRAConfig) or rules in this ConfigMap's data",
                file=name,
                severity="error",
            )
        )
    report.summary = "; ".join(s for s in summaries if s)
    return report


def _read_stdin() -> bytes:
    data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            "<stdin>",
            [
                Issue(
                    path="",
                    message=f"input is larger than {MAX_FILE_BYTES} bytes; a ConfigMap holds at most 1 MiB",
                )
            ],
        )
    return data


def inspect_file(given: str) -> Report:
    """Check one file given on the command line (`-` is standard input)."""
    name = "<stdin>" if given == STDIN else given
    try:
        raw = _read_stdin() if given == STDIN else read_file(Path(given))
    except ConfigError as exc:
        return Report(issues=[replace(i, file=name) for i in exc.issues])
    except OSError as exc:
        return Report(issues=[Issue(path="", message=f"cannot read: {exc.strerror or exc}", file=name)])
    try:
        text = decode_text(raw)
    except UnicodeDecodeError:
        return Report(issues=[Issue(path="", message="file is not UTF-8 text (binary content?)", file=name)])
    return _check_text(text, name)


def check_file(path: Path) -> tuple[str, list[Issue]]:
    """The summary and issues of one file (what `lora-syncer check` prints for it)."""
    report = inspect_file(str(path))
    return report.summary, report.issues


@dataclass(frozen=True)
class Pairing:
    """The adapters file and rules file checked against each other, and what that found."""

    adapters: Found
    rules: Found
    result: CrossCheck
    rollout_issues: tuple[Issue, ...] = ()  # AdapterRollouts whose adapters the file removes or omits

    def issues(self) -> list[Issue]:
        found = [f.to_issue(self.rules.label, self.rules.line_offset) for f in self.result.findings]
        return found + list(self.rollout_issues)


def pair(found: list[Found]) -> Pairing | str | None:
    """Cross-check when exactly one adapters file and one rules file were found; else why not."""
    adapters = [f for f in found if isinstance(f.value, AdaptersConfig)]
    rules = [f for f in found if isinstance(f.value, RuleSet)]
    if not adapters or not rules:
        return None
    if len(adapters) > 1 or len(rules) > 1:
        return (
            f"cross-checks skipped: found {len(adapters)} adapters file(s) and {len(rules)} rules file(s); "
            "give one of each to check them against each other"
        )
    a, r = adapters[0], rules[0]
    assert isinstance(a.value, AdaptersConfig) and isinstance(r.value, RuleSet)
    rollout_issues = tuple(
        replace(
            issue,
            file=r.label,
            line=issue.line + r.line_offset if issue.line is not None else None,
        )
        for issue in adapter_warnings(
            r.value.rollouts,
            (d.id for d in a.value.ensure_exist),
            (d.id for d in a.value.ensure_not_exist),
        )
    )
    return Pairing(a, r, cross_check(a.value, r.value), rollout_issues)


def _print_text(
    args: argparse.Namespace, reports: list[tuple[str, Report]], pairing: Pairing | str | None
) -> None:
    for given, report in reports:
        errors = [i for i in report.issues if i.severity == "error"]
        for issue in report.issues:
            print(issue.format(), file=sys.stderr if issue.severity == "error" else sys.stdout)
        if errors:
            print(f"{given}: INVALID ({len(errors)} error(s))", file=sys.stderr)
        elif not args.quiet:
            print(f"{given}: OK ({report.summary})")
            for found in report.found:
                if isinstance(found.value, RuleSet):
                    for spec in found.value.rollouts:
                        print("\n".join(describe(spec)))
    if isinstance(pairing, str):
        if not args.quiet:
            print(pairing)
    elif pairing is not None:
        for issue in pairing.issues():
            print(issue.format())
        if not args.quiet:
            for shares in pairing.result.shares:
                print(f"split: {shares.describe()}")
            print(
                f"cross-check {pairing.adapters.label} x {pairing.rules.label}: "
                f"{len(pairing.result.findings)} finding(s)"
            )


def _json(reports: list[tuple[str, Report]], pairing: Pairing | str | None, ok: bool) -> str:
    body: dict[str, object] = {
        "ok": ok,
        "files": [
            {
                "file": given,
                "ok": not any(i.severity == "error" for i in report.issues),
                "summary": report.summary,
                "issues": [i.to_dict() for i in report.issues],
            }
            for given, report in reports
        ],
        "crossCheck": None,
    }
    if isinstance(pairing, str):
        body["crossCheck"] = {"skipped": pairing}
    elif pairing is not None:
        body["crossCheck"] = {
            "adapters": pairing.adapters.label,
            "rules": pairing.rules.label,
            "findings": [
                {**f.to_dict(), **i.to_dict()}
                for f, i in zip(pairing.result.findings, pairing.issues(), strict=True)
            ],
            "shares": [s.to_dict() for s in pairing.result.shares],
        }
    return json.dumps(body, indent=2)


def run(args: argparse.Namespace) -> int:
    files = [str(f) for f in args.files]  # the declaration types them as paths; `-` stays a name
    reports = [("<stdin>" if f == STDIN else f, inspect_file(f)) for f in files]
    ok = not any(i.severity == "error" for _, r in reports for i in r.issues)
    pairing = pair([f for _, r in reports for f in r.found])
    if args.json:
        print(_json(reports, pairing, ok))
    else:
        _print_text(args, reports, pairing)
    return 0 if ok else 1
