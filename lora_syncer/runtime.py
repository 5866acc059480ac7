"""Process plumbing shared by `run` and `proxy`: the event loop, and what SIGTERM/SIGINT do.

First signal: a graceful, phased shutdown (the caller waits on `stop`). Second signal: exit at
once with status 1, whatever is still running — the operator has asked twice.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from lora_syncer.memory import limit_malloc_arenas

T = TypeVar("T")

log = structlog.get_logger("lora_syncer.runtime")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_async(main: Coroutine[Any, Any, T], *, fast_loop: bool = True) -> T:
    """Run `main` on uvloop when installed and `fast_loop` (the proxy's hot path), else asyncio's loop.

    The syncer alone makes a few HTTP calls per pass: uvloop buys it nothing and costs ~2 MiB RSS.
    """
    limit_malloc_arenas()  # before any thread starts (see lora_syncer.memory)
    if not fast_loop:
        return asyncio.run(main)
    tune_gc_for_serving()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# Young-generation threshold while serving (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc_for_serving() -> None:
    """Make the cycle collector cheap for a process that serves many small requests.

    At CPython's defaults the collector runs every ~700 net allocations, and each pass walks every
    object the requests in flight hold; at 32 concurrent requests that was a few percent of the
    proxy's CPU. Objects made while starting (modules, classes, settings) live for the whole
    process: `gc.freeze` moves them out of the collector's sight, so the rare full passes stay
    short. Requests free almost everything by reference counting, so a larger young threshold
    holds back little memory (garbage in cycles waits for at most 10,000 net allocations).
    """
    gc.collect()  # what the start-up left in cycles is freed now, not frozen for good
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


class StopSignals:
    """`stop` is set by the first SIGTERM/SIGINT; the second ends the process at once."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._seen = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig.name)

    def remove(self) -> None:
        if self._loop is not None:
            for sig in STOP_SIGNALS:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _on_signal(self, name: str) -> None:
        self._seen += 1
        if self._seen > 1:
            log.warning("second signal: exiting now", signal=name)
            sys.stderr.flush()
            os._exit(1)
        log.info("shutting down", signal=name)
        self.stop.set()
