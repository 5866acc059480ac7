"""`lora-syncer split-test`: send N chat requests and count which model served each.

What the guides' `test-traffic-splitting.sh` does, without curl and jq:

    lora-syncer split-test --url http://proxy:8081 --model small-segment-lora -n 20

Every answer is counted. The proxy's `x-lora-syncer-served-model` header names the model that
served it (the body's `model` is used only when the header is absent, e.g. straight against
vLLM); `--by pool` counts the `x-lora-syncer-pool` header instead. An error answer is a row of
its own with the server's message (`HTTP 404: The model ... does not exist`), a failure to
connect is said in words; shares are over all answers. Exits 1 if any request failed, 2 on
bad arguments.
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
from lora_syncer.proxy.transport import in_words

SERVED_HEADER = "x-lora-syncer-served-model"
POOL_HEADER = "x-lora-syncer-pool"
NO_POOL = "(no pool header)"


@dataclass
class SplitResult:
    """Counts of served models, and the failures (status or error text -> count)."""

    total: int
    served: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    by: str = "model"  # what `served` counts: model | pool

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def share(self, count: int) -> float:
        """A count's share of all answers, errors included."""
        return count / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by": self.by,
            "served": {
                m: {"requests": c, "share": round(self.share(c), 4)} for m, c in self.served.most_common()
            },
            "failed": self.failed,
            "failures": {
                r: {"requests": c, "share": round(self.share(c), 4)} for r, c in self.failures.most_common()
            },
            "seconds": round(self.seconds, 3),
        }


def format_table(result: SplitResult, model: str, url: str) -> str:
    """The report: one row per served model (or pool), then one per kind of error; shares of all answers."""
    rows = [(n, c) for n, c in result.served.most_common()]
    rows += [(f"error: {r}", c) for r, c in result.failures.most_common()]
    width = max([len(result.by), len("failed"), *(len(n) for n, _ in rows)])
    lines = [
        f"Traffic split for {model!r} via {url}: {result.total} requests in {result.seconds:.2f}s",
        f"{result.by:<{width}}  {'requests':>8}  {'share':>7}",
    ]
    for name, count in rows:
        lines.append(f"{name:<{width}}  {count:>8}  {100.0 * result.share(count):>6.1f}%")
    lines.append(f"{'failed':<{width}}  {result.failed:>8}")
    return "\n".join(lines)


def _error_message(raw: bytes) -> str:
    """The server's own words from an OpenAI-style error body (nested or flat), or ''."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:200]
    if not isinstance(body, dict):
        return ""
    inner = body.get("error", body)
    if isinstance(inner, dict):
        message = inner.get("message") or inner.get("detail") or ""
        return str(message)[:200]
    return str(inner)[:200]


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
    by: str = "model",
) -> SplitResult:
    """Send `requests` requests (at most `concurrency` at once) and count the served models (or pools)."""
    result = SplitResult(total=requests, by=by)
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
                    message = _error_message(raw)
                    result.failures[f"HTTP {resp.status}" + (f": {message}" if message else "")] += 1
                    return
                if by == "pool":
                    result.served[resp.headers.get(POOL_HEADER) or NO_POOL] += 1
                    return
                # The proxy's header names the model that served it, even with --response-model=requested.
                served = resp.headers.get(SERVED_HEADER)
                if not served:
                    try:
                        body = json.loads(raw)
                        served = body.get("model") if isinstance(body, dict) else None
                    except ValueError:
                        served = None
                if not isinstance(served, str) or not served:
                    result.failures["answer without a model"] += 1
                    return
                result.served[served] += 1
        except TimeoutError:
            result.failures["timed out"] += 1
        except (aiohttp.ClientError, OSError) as exc:
            result.failures[in_words(exc)] += 1

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
            by=args.by,
        )
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result, args.model, args.url))
    return 1 if result.failed else 0
