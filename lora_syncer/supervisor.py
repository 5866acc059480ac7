"""The one owner of every long-lived task of the sidecar (syncer and proxy alike).

Every task is named. A task that ends while the supervisor is not stopping — an exception, a
cancellation from outside, or a plain return — is logged with its name and exception and turns
`/healthz` red: a dead loop is never silent. `stop()` cancels tasks in the reverse order of
their start, each waited for, so a task that feeds another stops first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("lora_syncer.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._dead: dict[str, str] = {}
        self._stopping = False
        self._died: asyncio.Event | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start `coro` as the long-lived task `name` (names are unique while running)."""
        if name in self._tasks:
            coro.close()
            raise ValueError(f"a task named {name!r} is already running")
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        name = task.get_name()
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if self._stopping:
            return
        if task.cancelled():
            reason = "was cancelled"
            log.error("background task stopped unexpectedly", task=name, reason=reason)
        elif (exc := task.exception()) is not None:
            reason = f"died: {type(exc).__name__}: {exc}"
            log.error("background task died", task=name, error=repr(exc), exc_info=exc)
        else:
            reason = "returned"
            log.error("background task stopped unexpectedly", task=name, reason=reason)
        self._dead[name] = reason
        self.died.set()

    @property
    def died(self) -> asyncio.Event:
        """Set once any task has ended unexpectedly."""
        if self._died is None:
            self._died = asyncio.Event()
        return self._died

    def dead(self) -> dict[str, str]:
        """Tasks that ended unexpectedly, and how."""
        return dict(self._dead)

    def running(self) -> list[str]:
        return list(self._tasks)

    def live(self) -> tuple[bool, str]:
        """The `/healthz` check: red while any supervised task has ended unexpectedly."""
        if not self._dead:
            return True, ""
        return False, "; ".join(f"task {name} {why}" for name, why in sorted(self._dead.items()))

    def release(self, name: str) -> asyncio.Task[Any] | None:
        """Stop supervising `name` (it is about to end on purpose); returns the task, if running."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.remove_done_callback(self._on_done)
        return task

    async def cancel(self, name: str, grace: float = 5.0) -> None:
        """Stop one task on purpose (a shutdown phase); it does not count as dead."""
        task = self.release(name)
        if task is not None:
            await cancel_and_wait(task, grace)

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel every task still running, newest first."""
        self._stopping = True
        for name in reversed(list(self._tasks)):
            task = self._tasks.pop(name)
            await cancel_and_wait(task, grace)


async def cancel_and_wait(task: asyncio.Task[Any], grace: float) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("background task did not stop in time", task=task.get_name(), grace_seconds=grace)
    elif not task.cancelled() and task.exception() is not None:
        log.warning(
            "background task failed while stopping", task=task.get_name(), error=repr(task.exception())
        )
