"""Retries with jittered exponential backoff for transient download errors (tenacity)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from lora_syncer.sources.errors import DownloadError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial: float = 0.5
    max_delay: float = 10.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, DownloadError) and exc.transient


async def with_retries(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`, retrying transient DownloadErrors; the last error is raised as is."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.max_delay, jitter=policy.initial),
        retry=retry_if_exception(_transient),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or raises")
