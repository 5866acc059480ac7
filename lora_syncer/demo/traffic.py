"""The guide's traffic test: N chat requests for the alias, counting the `model` each answer names."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from lora_syncer.demo.checks import Split

# The seed's test-traffic-splitting.sh body: one token is enough to learn who served it.
PROMPT = "test"


async def send_requests(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    total: int,
    *,
    request_timeout: float = 30.0,
    on_answer: Callable[[int], None] | None = None,
) -> Split:
    """POST `total` chat completions to `url` one after the other and count the answers' `model`.

    One at a time, as the guide's script does, so the order of the proxy's picks is the order of
    the answers. A failed request is counted under its reason and the round goes on.
    """
    split = Split(total=total)
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_completion_tokens": 1}
    limit = aiohttp.ClientTimeout(total=request_timeout)
    for i in range(total):
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body, timeout=limit) as resp:
                if resp.status != 200:
                    split.fail(f"HTTP {resp.status}")
                else:
                    answer = await resp.json(content_type=None)
                    served = answer.get("model") if isinstance(answer, dict) else None
                    if isinstance(served, str):
                        split.add(served)
                    else:
                        split.fail("answer without a model field")
        except TimeoutError:
            split.fail(f"no answer within {request_timeout:g} s")
        except aiohttp.ClientError as exc:
            split.fail(type(exc).__name__)
        if on_answer is not None:
            on_answer(i + 1)
    return split
