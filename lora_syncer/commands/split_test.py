"""`lora-syncer split-test`: send N chat requests and count which model served each.

What the guides' `test-traffic-splitting.sh` does, without curl and jq:

    lora-syncer split-test --url http://proxy:8081 --model small-segment-lora -n 20

Each answer's `model` field names the model that served it (the proxy's
`x-lora-syncer-served-model` header is used when the body has none, e.g. with
`--response-model=requested`). Prints a table of counts and shares; exits 1 if any request
failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lora_syncer.options.parser import fail

SERVED_HEADER = "x-lora-syncer-served-model"


@dataclass
class SplitResult:
    """Counts of served models, and the failures (status or error text -> count)."""

    total: int
    served: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def to_dict(self) -> dict[str, Any]:
        ok = self.total - self.failed
        return {
            "total": self.total,
            "served": {
                m: {"requests": c, "share": round(c / ok, 4) if ok else 0.0}
                for m, c in self.served.most_common()
            },
            "failed": self.failed,
            "failures": dict(self.failures),
            "seconds": round(self.seconds, 3),
        }


def format_table(result: SplitResult, model: str, url: str) -> str:
    """The report: one line per served model with its count and share, then failures."""
    ok = result.total - result.failed
    names = [m for m, _ in result.served.most_common()]
    width = max([len("model"), len("failed"), *(len(n) for n in names)])
    lines = [
        f"Traffic split for {model!r} via {url}: {result.total} requests in {result.seconds:.2f}s",
        f"{'model':<{width}}  {'requests':>8}  {'share':>7}",
    ]
    for name in names:
        count = result.served[name]
        share = 100.0 * count / ok if ok else 0.0
        lines.append(f"{name:<{width}}  {count:>8}  {share:>6.1f}%")
    lines.append(f"{'failed':<{width}}  {result.failed:>8}")
    for reason, count in result.failures.most_common():
        lines.append(f"  {count} x {reason}")
    return "\n".join(lines)


def _body(path: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    if path.rstrip("/").endswith("/completions") and "chat" not in path:
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_completion_tokens": max_tokens,
    }


async def split_test(
    url: str,
    model: str,
    requests: int,
    *,
    concurrency: int = 1,
    path: str = "/v1/chat/completions",
    prompt: str = "test",
    max_tokens: int = 1,
    headers: list[tuple[str, str]] | None = None,
    request_timeout: float = 60.0,
) -> SplitResult:
    """Send `requests` requests (at most `concurrency` at once) and count the served models."""
    result = SplitResult(total=requests)
    endpoint = url.rstrip("/") + "/" + path.lstrip("/")
    payload = _body(path, model, prompt, max_tokens)
    extra = dict(headers or [])
    remaining = iter(range(requests))
    started = time.perf_counter()

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(endpoint, json=payload, headers=extra) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    result.failures[f"HTTP {resp.status}"] += 1
                    return
                served = None
                try:
                    body = json.loads(raw)
                    served = body.get("model") if isinstance(body, dict) else None
                except ValueError:
                    pass
                served = served or resp.headers.get(SERVED_HEADER)
                if not isinstance(served, str) or not served:
                    result.failures["answer without a model"] += 1
                    return
                result.served[served] += 1
        except TimeoutError:
            result.failures["timeout"] += 1
        except aiohttp.ClientError as exc:
            result.failures[type(exc).__name__] += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            await one(session)

    connector = aiohttp.TCPConnector(limit=max(1, concurrency))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=request_timeout)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    result.seconds = time.perf_counter() - started
    return result


def run(args: argparse.Namespace) -> int:
    """Entry point of `lora-syncer split-test`."""
    if not args.url or not args.model:
        fail("--url / LORA_SYNCER_URL and --model / LORA_SYNCER_MODEL are required")
    from lora_syncer.runtime import run_async

    result = run_async(
        split_test(
            args.url,
            args.model,
            args.requests,
            concurrency=args.concurrency,
            path=args.path,
            prompt=args.prompt,
            max_tokens=args.max_tokens,
            headers=args.header,
            request_timeout=args.timeout,
        )
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result, args.model, args.url))
    return 1 if result.failed else 0
