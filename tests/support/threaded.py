"""Servers on their own event loop in a daemon thread, for blocking clients (Hypothesis, http.client)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from tests.support.wait import WAIT

T = TypeVar("T")


@dataclass
class ProxyThread:
    """The ports of a proxy and of its upstream, both running in a background loop."""

    port: int
    upstream_port: int


@dataclass
class _Box(Generic[T]):
    value: T | None = None
    error: BaseException | None = None


@contextlib.contextmanager
def background_loop(
    start: Callable[[], Awaitable[T]], stop: Callable[[T], Awaitable[None]], timeout: float = WAIT
) -> Iterator[T]:
    """Run `await start()` on a new loop in a daemon thread, yield its result, then `await stop(result)` there."""
    loop = asyncio.new_event_loop()
    box: _Box[T] = _Box()
    ready = threading.Event()
    done: asyncio.Event | None = None

    async def main() -> None:
        nonlocal done
        done = asyncio.Event()
        try:
            box.value = await start()
        except BaseException as exc:
            box.error = exc
            ready.set()
            return
        ready.set()
        try:
            await done.wait()
        finally:
            await stop(box.value)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout=timeout):
            raise AssertionError(f"the background servers did not start within {timeout} s")
        if box.error is not None:
            raise AssertionError("the background servers failed to start") from box.error
        assert box.value is not None
        yield box.value
    finally:
        if done is not None:
            loop.call_soon_threadsafe(done.set)
        thread.join(timeout=timeout)
        if not thread.is_alive():
            loop.close()
