"""Real HTTP on 127.0.0.1: a bounded client session, serving an app, waiting for a URL, the OpenAI error shape."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.wait import WAIT, eventually


@contextlib.asynccontextmanager
async def client_session(
    total: float = 15.0, *, force_close: bool = False
) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session whose every request is bounded by `total` seconds.

    `force_close`: no pooled connections, so each request sees what a new client would (a
    dropped or refused connection cannot poison the next request).
    """
    connector = aiohttp.TCPConnector(force_close=force_close)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=total)
    ) as session:
        yield session


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """`app` served on 127.0.0.1 at an ephemeral port; yields its URL, cleaned up when the block ends."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def status_of(http: aiohttp.ClientSession, url: str) -> int | None:
    """The status of GET `url`, or None when nothing answers (connection refused or reset)."""
    try:
        async with http.get(url) as resp:
            await resp.read()
            return resp.status
    except (TimeoutError, aiohttp.ClientConnectionError):
        return None


async def wait_until_answers(
    http: aiohttp.ClientSession,
    url: str,
    status: int = 200,
    timeout: float = WAIT,  # noqa: ASYNC109 (the bound of the polling, see tests.support.wait)
    proc: asyncio.subprocess.Process | None = None,
    detail: Callable[[], str] = str,
) -> None:
    """Wait until GET `url` answers `status`; fail at once if `proc` (the server) has exited.

    `detail()` (e.g. the tail of the server's log) is added to the failure message.
    """

    async def answers() -> bool:
        if proc is not None and proc.returncode is not None:
            raise AssertionError(
                f"the server exited with {proc.returncode} before {url} answered\n{detail()}"
            )
        return await status_of(http, url) == status

    await eventually(answers, timeout, 0.05, lambda: f"GET {url} never answered {status}\n{detail()}")


def is_openai_error(body: Any) -> bool:
    """`{"error": {"message": str, "type": str, ...}}`, the shape vLLM and OpenAI answer errors in."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("message"), str)
        and isinstance(body["error"].get("type"), str)
    )
