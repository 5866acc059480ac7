"""`lora-syncer rollout status URL...`: every pod's AdapterRollouts side by side (read from /status).

Without Prometheus each pod judges its own traffic, so pods may disagree for a while; this
shows where each one is, and why. Exit 0 when every pod answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from lora_syncer.options.parser import fail


def status_url(given: str) -> str:
    url = given.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url if url.endswith("/status") else url + "/status"


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[str, dict[str, Any] | str]:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return url, f"HTTP {resp.status}"
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return url, f"unreachable: {exc.__class__.__name__}: {exc}"
    if not isinstance(body, dict) or not isinstance(body.get("rollouts"), dict):
        return url, "no rollouts section (not lora-syncer, or started without --rules)"
    return url, body["rollouts"]


async def fetch_all(urls: list[str], per_pod: float) -> list[tuple[str, dict[str, Any] | str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=per_pod)) as session:
        return list(await asyncio.gather(*(_fetch(session, u) for u in urls)))


def _cell(r: dict[str, Any]) -> str:
    weight = r.get("canaryWeight")
    return (
        f"{r.get('phase')} step {r.get('step')}/{r.get('steps')} canary {weight}% "
        f"windows {r.get('windowsJudged')} failed {r.get('failedWindows')}"
    )


def render(results: list[tuple[str, dict[str, Any] | str]]) -> str:
    """One block per rollout, one line per pod; then every reason."""
    lines: list[str] = []
    names: dict[str, str] = {}
    for _, section in results:
        if isinstance(section, dict):
            for r in section.get("rollouts", []):
                names.setdefault(r["name"], r.get("model", ""))
    for url, section in results:
        if isinstance(section, str):
            lines.append(f"{url}: {section}")
    if not names:
        lines.append("no AdapterRollout on any pod")
    for name, model in names.items():
        lines.append(f"rollout {name} ({model})")
        for url, section in results:
            if not isinstance(section, dict):
                continue
            found = [r for r in section.get("rollouts", []) if r["name"] == name]
            if not found:
                lines.append(f"  {url}: not known to this pod")
                continue
            r = found[0]
            lines.append(f"  {url}: {_cell(r)}")
            lines.append(f"    reason: {r.get('reason')}")
            last = r.get("lastWindows") or []
            if last:
                w = last[-1]
                lines.append(f"    last window {w['window']}: {w['outcome']}: {w['reason']}")
            for extra in ("abortReason", "stateNote", "persistError"):
                if r.get(extra):
                    lines.append(f"    {extra}: {r[extra]}")
            for err in r.get("documentErrors") or []:
                lines.append(f"    document error (last valid version in force): {err}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    words: list[str] = [str(w) for w in args.words]
    if not words or words[0] != "status":
        fail(
            f"rollout: unknown action {words[0] if words else ''!r}: use `lora-syncer rollout status URL...`"
        )
    urls = [status_url(w) for w in words[1:]]
    if not urls:
        fail("rollout status: give the health/metrics URL of at least one pod, e.g. http://10.0.0.7:8080")
    results = asyncio.run(fetch_all(urls, args.timeout))
    if args.json:
        print(json.dumps({url: section for url, section in results}, indent=2))
    else:
        print(render(results))
    failed = [u for u, s in results if isinstance(s, str)]
    if failed:
        print(f"{len(failed)} pod(s) did not answer", file=sys.stderr)
    return 1 if failed else 0
