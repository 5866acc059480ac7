"""`lora-syncer check FILE...`: validate adapters files, rules files and ConfigMap manifests.

Exit 0 when every file is valid (warnings allowed), 1 otherwise. Prints one line per problem:
`file:line: severity: path: message`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters_text
from lora_syncer.config.errors import ConfigError, Issue
from lora_syncer.config.manifest import Embedded, classify, configmaps_in
from lora_syncer.config.source import read_file
from lora_syncer.config.yamldoc import YamlSyntaxError, decode_text, load_documents


def _describe_adapters(cfg: AdaptersConfig) -> str:
    parts = [f"{len(cfg.ensure_exist)} to keep loaded", f"{len(cfg.ensure_not_exist)} to keep unloaded"]
    if cfg.conflicts:
        parts.append(f"{len(cfg.conflicts)} in conflict")
    return "adapters file: " + ", ".join(parts)


def _check_text(text: str, name: str) -> tuple[str, list[Issue]]:
    """Validate one file's text, whatever it is. Returns (summary, issues)."""
    try:
        docs = [d for d in load_documents(text) if d.data is not None]
    except YamlSyntaxError as exc:
        return "", [Issue(path="", message=exc.message, line=exc.line, file=name)]
    embedded = configmaps_in(docs)
    if embedded is not None:
        return _check_configmaps(embedded, name)
    kinds = {classify(d.data) for d in docs}
    if "adapters" in kinds:
        try:
            cfg = parse_adapters_text(text, name)
        except ConfigError as exc:
            return "", exc.issues
        return _describe_adapters(cfg), list(cfg.warnings)
    if "rules" in kinds:
        return _check_rules(text, name)
    return "", [
        Issue(
            path="",
            message="not a recognised file: expected a 'vLLMLoRAConfig' adapters file, "
            "InferenceModelRewrite/InferenceModel rules, or a ConfigMap carrying them",
            line=docs[0].start_line if docs else 1,
            file=name,
        )
    ]


def _check_rules(text: str, name: str) -> tuple[str, list[Issue]]:
    from lora_syncer.config.rules import parse_rules

    try:
        rules = parse_rules(text.encode(), name)
    except ConfigError as exc:
        return "", exc.issues
    exact, catch_all = rules.winners()
    summary = f"rules file: {len(rules.rules)} rule(s) for {len(exact)} model name(s)"
    if catch_all is not None:
        summary += " and a catch-all"
    if rules.route is not None:
        summary += f"; HTTPRoute {rules.route.document!r} splits between {len(rules.route.backends)} pool(s)"
    return summary, list(rules.warnings)


def _check_configmaps(entries: list[Embedded], name: str) -> tuple[str, list[Issue]]:
    summaries: list[str] = []
    issues: list[Issue] = []
    for e in entries:
        label = f"{name}[{e.configmap}/{e.key}]"
        try:
            docs = [d for d in load_documents(e.text) if d.data is not None]
            kinds = {classify(d.data) for d in docs}
        except YamlSyntaxError:
            kinds = {"adapters"} if "vLLMLoRAConfig" in e.text else {"unknown"}
        if "adapters" in kinds:
            summary, found = _check_text(e.text, label)
        elif "rules" in kinds or e.key.endswith("rules.yaml"):
            # The rules key is a rules file by name, even when it holds no rule yet.
            summary, found = _check_rules(e.text, label)
        else:
            continue  # other keys in the ConfigMap are not ours to judge
        summaries.append(f"{e.configmap}/{e.key}: {summary}" if summary else "")
        issues.extend(
            replace(i, line=(i.line + e.line_offset) if i.line is not None else None) for i in found
        )
    if not summaries and not issues:
        issues.append(
            Issue(
                path="data",
                message="no adapters file (vLLMLoRAConfig) or rules in this ConfigMap's data",
                file=name,
                severity="error",
            )
        )
    return "; ".join(s for s in summaries if s), issues


def check_file(path: Path) -> tuple[str, list[Issue]]:
    name = str(path)
    try:
        raw = read_file(path)
    except ConfigError as exc:
        return "", exc.issues
    except OSError as exc:
        return "", [Issue(path="", message=f"cannot read: {exc.strerror or exc}", file=name)]
    try:
        text = decode_text(raw)
    except UnicodeDecodeError:
        return "", [Issue(path="", message="file is not UTF-8 text (binary content?)", file=name)]
    return _check_text(text, name)


def run(args: argparse.Namespace) -> int:
    failed = False
    for f in args.files:
        summary, issues = check_file(Path(f))
        errors = [i for i in issues if i.severity == "error"]
        for issue in issues:
            print(issue.format(), file=sys.stderr if issue.severity == "error" else sys.stdout)
        if errors:
            failed = True
            print(f"{f}: INVALID ({len(errors)} error(s))", file=sys.stderr)
        elif not args.quiet:
            print(f"{f}: OK ({summary})")
    return 1 if failed else 0
