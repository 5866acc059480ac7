"""A mounted file kept in force: watched, re-read, the last good parse kept, errors reported once.

One component for both of the sidecar's files (the adapters file and the proxy's rules file):

- watches the file's directory (kubelet swaps a `..data` symlink; see `filewatch`);
- coalesces bursts: one reload runs at a time, and any number of events during it cause
  exactly one more;
- re-reads every `resync_interval` seconds as a safety net for a missed event;
- reads a plain file (not kubelet's symlink swap, which stays instant) only once its writer
  has closed it (inotify close-write) and its size and mtime have stayed the same for
  `settle` seconds, so an editor's or script's half-written file is never acted on;
- keeps the last good parse in force when the file is missing, unreadable or invalid;
- logs a rejected file exactly once per rejected edit (the same bad bytes re-read at every
  resync are not logged again), and once more when the file is valid again;
- reports validity, reload outcomes and the last good reload through `ReloadMetrics`.

The reload loop and the poll fallback are tasks of the shared `Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import structlog

from lora_syncer.config.errors import ConfigError
from lora_syncer.config.source import Loaded, ReloadOutcome, WatchedFile
from lora_syncer.filewatch import FileWatcher, file_signature
from lora_syncer.supervisor import Supervisor

T = TypeVar("T")

log = structlog.get_logger("lora_syncer.reloading")

# Rejected files list at most this many errors in their one log line.
MAX_LOGGED_ERRORS = 20


class ReloadMetrics(Protocol):
    def reloaded(self, outcome: ReloadOutcome) -> None: ...

    def valid(self, ok: bool) -> None: ...

    def good(self, at: float) -> None: ...


@dataclass(frozen=True)
class Wording:
    """The log lines of one kind of file."""

    rejected_keeping: str  # a last good file is in force
    rejected_nothing: str  # nothing good has been read yet
    valid_again: str


@dataclass(frozen=True)
class WatchOptions:
    mode: str = "auto"  # auto | inotify | poll
    poll_interval: float = 1.0
    resync_interval: float = 5.0
    # A plain file must stay unchanged this long before it is read (kubelet's swap: not waited).
    settle: float = 0.25


class ReloadingFile(Generic[T]):
    """The last good parse of `path`, kept current. `start()` on the loop, `stop()` at shutdown."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes, str], T],
        *,
        name: str,
        wording: Wording,
        metrics: ReloadMetrics,
        options: WatchOptions | None = None,
        on_change: Callable[[Loaded[T]], None] | None = None,
    ) -> None:
        self.name = name
        self.file: WatchedFile[T] = WatchedFile(path, parse)
        self._wording = wording
        self._metrics = metrics
        self._options = options or WatchOptions()
        self.on_change = on_change
        self._wanted = asyncio.Event()
        self._watcher: FileWatcher | None = None
        self._supervisor: Supervisor | None = None
        # The rejection last logged: (digest or "", error text). Same again = same edit, not logged.
        self._logged_rejection: tuple[str, str] | None = None
        self.lock = asyncio.Lock()

    # --- what readers see ------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def current(self) -> Loaded[T] | None:
        return self.file.current

    @property
    def error(self) -> ConfigError | None:
        return self.file.error

    @property
    def backend(self) -> str:
        return self._watcher.backend if self._watcher is not None else "none"

    # --- reading ---------------------------------------------------------------------------

    async def reload(self) -> ReloadOutcome:
        """Re-read now (one at a time); `changed` when a new good value is in force."""
        async with self.lock:
            outcome = await self.file.reload()
            self._metrics.reloaded(outcome)
            if outcome == "error":
                self._metrics.valid(False)
                self._log_rejection()
                return outcome
            self._metrics.valid(True)
            if self._logged_rejection is not None:
                self._logged_rejection = None
                log.info(self._wording.valid_again, file=str(self.path))
            current = self.file.current
            if outcome == "changed" and current is not None:
                self._metrics.good(current.loaded_at)
                if self.on_change is not None:
                    self.on_change(current)
            return outcome

    def _log_rejection(self) -> None:
        err = self.file.error
        text = str(err)
        key = (self.file.rejected_digest or "", text)
        if key == self._logged_rejection:
            return  # this edit was reported already
        self._logged_rejection = key
        errors = [i.format() for i in err.errors] if err is not None else []
        extra = {"more": len(errors) - MAX_LOGGED_ERRORS} if len(errors) > MAX_LOGGED_ERRORS else {}
        log.error(
            self._wording.rejected_keeping if self.file.current else self._wording.rejected_nothing,
            file=str(self.path),
            errors=errors[:MAX_LOGGED_ERRORS],
            **extra,
        )

    @property
    def reload_requested(self) -> bool:
        """A reload has been asked for and has not started yet."""
        return self._wanted.is_set()

    def request(self) -> None:
        """Ask for a reload (file event, resync). Coalesced; safe to call from any loop callback."""
        self._wanted.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=self._options.resync_interval)
            # Cleared before reading: an event arriving during the read asks for one more.
            self._wanted.clear()
            if await self._settled():
                await self.reload()

    async def _settled(self) -> bool:
        """True when the file may be read now. False: still being written; its next event re-asks."""
        if self.path.is_symlink():
            return True  # kubelet's atomic swap: the new file is complete when it appears
        watcher = self._watcher
        if watcher is not None and watcher.writing:
            return False  # the close-write event will ask again
        before = file_signature(self.path)
        await asyncio.sleep(self._options.settle)
        if watcher is not None and watcher.writing:
            return False
        if file_signature(self.path) != before:
            self._wanted.set()  # still changing: look again after another settle
            return False
        return True

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        """Watch the file and keep it current; the first read is up to the caller (`reload()`)."""
        self._supervisor = supervisor
        self._watcher = FileWatcher(
            self.path,
            self.request,
            mode=self._options.mode,
            poll_interval=self._options.poll_interval,
            supervisor=supervisor,
        )
        await self._watcher.start()
        supervisor.spawn(f"reload:{self.name}", self._loop())

    async def stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()
        if self._supervisor is not None:
            await self._supervisor.cancel(f"reload:{self.name}")
