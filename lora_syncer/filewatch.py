"""Tell the event loop when a mounted file may have changed.

kubelet never edits a ConfigMap file in place: it writes a new timestamped directory and
renames a `..data` symlink over the old one. So we watch the *directory* holding the file and
treat any event there as "re-read now"; readers compare content hashes to decide whether
anything really changed. watchdog's thread hands events to the loop with
`call_soon_threadsafe`. Where inotify is unavailable (or the directory does not exist yet) a
stat-polling task takes over; it costs one `stat` per interval.

A plain file edited in place (not kubelet's swap) may be read half-written. With inotify the
watcher remembers that the file was modified and not yet closed by its writer (`writing`):
readers wait for the close-write event (watchdog's `FileClosedEvent`). A write handle left
idle for `STALE_WRITE_SECONDS` is treated as done, so a lost close event cannot freeze the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from lora_syncer.supervisor import Supervisor

log = structlog.get_logger("lora_syncer.filewatch")

Signature = tuple[int, int, int, str] | None

STALE_WRITE_SECONDS = 60.0


def file_signature(path: Path) -> Signature:
    """What changes when kubelet swaps the file: resolved target, inode, size, mtime."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, real)


class FileWatcher:
    """Calls `on_change()` on the loop whenever the file's directory sees an event.

    `mode` is `auto` (inotify, falling back to polling), `inotify` or `poll`.
    """

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        *,
        mode: str = "auto",
        poll_interval: float = 1.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_change = on_change
        self._mode = mode
        self._poll_interval = poll_interval
        self._supervisor = supervisor
        self._observer: Any = None
        self._poll_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.backend: str = "none"
        # Monotonic time of the last write event on the file itself with no close-write since.
        self._open_write_since: float | None = None

    @property
    def writing(self) -> bool:
        """The file was modified in place and its writer has not closed it yet."""
        since = self._open_write_since
        return since is not None and time.monotonic() - since < STALE_WRITE_SECONDS

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        directory = self.path.parent
        if self._mode in ("auto", "inotify") and directory.is_dir():
            try:
                self._start_observer(directory)
                self.backend = "inotify"
                return
            except OSError as exc:  # e.g. inotify watch limit reached, or an FS without events
                if self._mode == "inotify":
                    raise
                log.warning(
                    "file events unavailable; polling instead", directory=str(directory), error=str(exc)
                )
        self.backend = "poll"
        # Taken now, not when the task first runs, so a change made right after start() is seen.
        initial = file_signature(self.path)
        name = f"filewatch-poll:{self.path}"
        if self._supervisor is not None:
            self._poll_task = self._supervisor.spawn(name, self._poll(initial))
        else:
            self._poll_task = asyncio.create_task(self._poll(initial), name=name)

    def _start_observer(self, directory: Path) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = self._loop
        assert loop is not None
        notify = self._notify_from_thread
        target = os.path.abspath(self.path)

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads (including our own) are not changes
                if _as_str(event.src_path) == target or _as_str(event.dest_path) == target:
                    notify(event.event_type)
                else:
                    notify(None)

        observer = Observer()
        observer.schedule(_Handler(), str(directory), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _notify_from_thread(self, event_type: str | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
                loop.call_soon_threadsafe(self._on_event, event_type)

    def _on_event(self, event_type: str | None) -> None:
        """On the loop: track the file's open write handle (`event_type` is None for other files)."""
        if event_type in ("modified", "created"):
            self._open_write_since = time.monotonic()
        elif event_type is not None:  # closed (close-write), deleted, moved
            self._open_write_since = None
        self._on_change()

    async def _poll(self, last: Signature) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            current = file_signature(self.path)
            if current != last:
                last = current
                self._on_change()
            if self._mode == "auto" and self._observer is None and self.path.parent.is_dir():
                # The directory appeared after start-up: switch to events, keep polling as a net.
                with contextlib.suppress(OSError):
                    self._start_observer(self.path.parent)
                    self.backend = "inotify"
                    self._on_change()  # events before the observer started would be lost: re-read once

    async def stop(self) -> None:
        task, self._poll_task = self._poll_task, None
        if task is not None:
            if self._supervisor is not None:
                await self._supervisor.cancel(task.get_name())
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        observer = self._observer
        self._observer = None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 2.0)


def _as_str(path: str | bytes) -> str:
    return os.path.abspath(os.fsdecode(path)) if path else ""
