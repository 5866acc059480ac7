"""Where rollout progress lives between restarts: one JSON file per rollout under --state-dir.

Writes are atomic (a temporary file in the same directory, fsynced, then renamed over the old
one), so a container killed mid-write leaves the previous state, never half a file. Without a
directory the state lives in memory only (a restart starts the rollout's bookkeeping over).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from lora_syncer.rollout.state import RolloutState, from_json, to_json

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class StateStore:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, RolloutState] = {}

    def path_of(self, name: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"rollout-{_UNSAFE.sub('_', name)}.json"

    def load(self, name: str, identity: str) -> tuple[RolloutState | None, str | None]:
        """The state saved for `name` if it is of this rollout; else (None, why not, or None if there is none)."""
        path = self.path_of(name)
        if path is None:
            state = self._memory.get(name)
            return (state, None) if state is not None and state.identity == identity else (None, None)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"{path}: cannot read ({exc}): starting over"
        state, why = from_json(text, identity)
        return state, (f"{path}: {why}" if why else None)

    def save(self, state: RolloutState) -> None:
        """Persist `state` (atomically). Raises OSError when the directory is not writable."""
        path = self.path_of(state.name)
        if path is None:
            self._memory[state.name] = state
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(to_json(state))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
