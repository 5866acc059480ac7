"""`lora-syncer plan`: what one reconcile pass would do now, changing nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.errors import ConfigError
from lora_syncer.config.manifest import configmaps_in, parse_adapters_or_manifest
from lora_syncer.config.rules.model import rollout_summary
from lora_syncer.config.source import read_file
from lora_syncer.config.yamldoc import YamlSyntaxError, decode_text, load_documents
from lora_syncer.rollout.controller import parse_rollout_documents
from lora_syncer.rollout.describe import describe
from lora_syncer.rollout.spec import RolloutSpec
from lora_syncer.sync.errors import VLLMError
from lora_syncer.sync.plan import ObservedModel, Plan, PlanOptions, make_plan
from lora_syncer.sync.reconciler import supports_inplace
from lora_syncer.sync.vllm_client import VLLMClient, v1_suffix_problem


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "actions": [
            {
                "op": a.op.value,
                "adapter": a.adapter_id,
                "source": a.source,
                "inplace": a.inplace,
                "reason": a.reason,
            }
            for a in plan.actions
        ],
        "skipped": [
            {"adapter": s.adapter_id, "reason": s.reason.value, "detail": s.detail} for s in plan.skips
        ],
        "in_sync": list(plan.in_sync),
        "absent": list(plan.absent),
        "warnings": [{"adapter": w.adapter_id, "detail": w.detail} for w in plan.base_model_warnings],
        "held": list(plan.held),
    }


def render_plan(plan: Plan, server: str) -> str:
    lines = [f"Plan against {server}:"]
    for a in plan.actions:
        how = " (in place)" if a.inplace else (" (unload + load)" if a.op.value == "reload" else "")
        src = f" from {a.source}" if a.source else ""
        lines.append(f"  {a.op.value:<7} {a.adapter_id}{src}{how}  -- {a.reason}")
    for s in plan.skips:
        lines.append(f"  skip    {s.adapter_id}  -- {s.reason.value}: {s.detail}")
    for w in plan.base_model_warnings:
        lines.append(f"  warn    {w.adapter_id}  -- {w.detail}")
    for held in plan.held:
        lines.append(
            f"  held    {held}  -- not declared (--prune), but {len(plan.held)} unloads exceed --prune-max "
            f"({plan.held_limit}): `run` waits for the file to stay unchanged one more resync"
        )
    if plan.is_noop and not plan.skips and not plan.held:
        lines.append("  nothing to do: the server matches the file")
    elif plan.is_noop:
        lines.append("  nothing to load or unload now (see the lines above)")
    if plan.in_sync:
        lines.append(f"  ok      {len(plan.in_sync)} loaded as declared: {', '.join(plan.in_sync)}")
    if plan.absent:
        lines.append(f"  ok      {len(plan.absent)} absent as declared: {', '.join(plan.absent)}")
    return "\n".join(lines)


async def _observe(url: str, api_key: str | None) -> tuple[list[ObservedModel], str | None]:
    async with VLLMClient(url, api_key=api_key) as client:
        return await client.list_models(), await client.version()


def load_adapters_or_manifest(raw: bytes, name: str) -> AdaptersConfig:
    """An adapters file, or the adapters file carried by a ConfigMap manifest."""
    return parse_adapters_or_manifest(raw, name)


def rollouts_in_manifest(raw: bytes, name: str) -> list[RolloutSpec]:
    """The valid AdapterRollouts of the rules files a manifest carries beside the adapters file."""
    try:
        docs = [d for d in load_documents(decode_text(raw)) if d.data is not None]
    except (YamlSyntaxError, UnicodeDecodeError):
        return []
    found: list[RolloutSpec] = []
    for entry in configmaps_in(docs) or []:
        if "AdapterRollout" in entry.text:
            label = f"{name}[{entry.configmap}/{entry.key}]"
            found += [
                r.spec for r in parse_rollout_documents(entry.text.encode(), label) if r.spec is not None
            ]
    return found


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        config: AdaptersConfig = load_adapters_or_manifest(read_file(path), str(path))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    server: str = (args.server or config.server_url).rstrip("/")
    problem = v1_suffix_problem(server)
    if problem is not None:
        print(f"--server: {problem}", file=sys.stderr)
        return 2
    version: str | None = None
    observed: list[ObservedModel] = []
    if not args.offline:
        try:
            observed, version = asyncio.run(_observe(server, args.api_key))
        except VLLMError as exc:
            print(f"cannot ask {server} what it has loaded: {exc.message}\n(use --offline to plan against an empty server)",
                  file=sys.stderr)  # fmt: skip
            return 2
    options = PlanOptions(
        prune=args.prune,
        prune_max=args.prune_max,
        base_model_policy=args.base_model_policy,
        allowed_sources=tuple(args.allowed_sources),
        supports_inplace=supports_inplace(version),
    )
    plan = make_plan(config, observed, options)
    target = server + ("" if not args.offline else " (offline: assuming an empty server)")
    try:
        rollouts = rollouts_in_manifest(read_file(path), str(path))
    except (OSError, ConfigError):
        rollouts = []
    if args.output == "json":
        body = {"server": server, "version": version, **plan_to_dict(plan)}
        if rollouts:
            body["adapterRollouts"] = [rollout_summary(r) for r in rollouts]
        print(json.dumps(body, indent=2))
    else:
        for w in config.warnings:
            print(w.format(), file=sys.stderr)
        print(render_plan(plan, target))
        for spec in rollouts:
            print("\n".join(describe(spec)))
    return 0
