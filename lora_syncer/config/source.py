"""A user's file, re-read on demand, with the last good parse kept in force.

"Never destroy on doubt": a file that is missing, unreadable, not YAML or invalid leaves the
last good value in place and records the error for logs, /status and metrics. The value only
changes when a new file parses and validates.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from lora_syncer.config.errors import ConfigError, Issue
from lora_syncer.memory import release_memory

T = TypeVar("T")

# Kubernetes caps a ConfigMap at 1 MiB; anything much larger is not a ConfigMap and not worth parsing.
MAX_FILE_BYTES = 2 * 1024 * 1024

ReloadOutcome = Literal["changed", "unchanged", "error"]

# Parsing a big file with line tracking leaves a fragmented heap behind; give it back.
_TRIM_ABOVE_BYTES = 128 * 1024


@dataclass(frozen=True)
class Loaded(Generic[T]):
    value: T
    generation: str  # sha256 of the content, first 12 hex digits
    loaded_at: float  # wall clock


def read_file(path: Path) -> bytes:
    """Read a user's file, refusing ones too big to be a ConfigMap."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _file_error(
            str(path), f"file is larger than {MAX_FILE_BYTES} bytes; a ConfigMap holds at most 1 MiB"
        )
    return data


def _file_error(name: str, message: str) -> ConfigError:
    """An error about the whole file, naming it (`configmap.yaml: error: file not found; ...`)."""
    return ConfigError(name, [Issue(path="", message=message, file=name)])


class WatchedFile(Generic[T]):
    """Holds the last good parse of `path`; `reload()` re-reads it off the event loop."""

    def __init__(self, path: Path, parse: Callable[[bytes, str], T]) -> None:
        self.path = Path(path)
        self._parse = parse
        self.current: Loaded[T] | None = None
        self.error: ConfigError | None = None
        self.last_attempt_at: float | None = None
        self._last_digest: str | None = None

    @property
    def rejected_digest(self) -> str | None:
        """Digest of the file last rejected (None when it could not be read or nothing is rejected)."""
        return self._last_digest if self.error is not None else None

    def _read_and_parse(self) -> tuple[str, T | None, ConfigError | None]:
        name = str(self.path)
        # At start-up there is nothing in force yet: say so rather than promise a last good file.
        keeping = (
            "keeping the last good configuration in force"
            if self.current is not None
            else "there is no last good configuration yet"
        )
        try:
            raw = read_file(self.path)
        except FileNotFoundError:
            return "", None, _file_error(name, f"file not found; {keeping}")
        except ConfigError as exc:
            return "", None, exc
        except OSError as exc:
            return "", None, _file_error(name, f"cannot read file: {exc.strerror or exc}; {keeping}")
        digest = hashlib.sha256(raw).hexdigest()[:12]
        if digest == self._last_digest:
            # Same bytes as last time: same verdict, without parsing a big bad file every pass.
            if self.current is not None and self.current.generation == digest:
                return digest, self.current.value, None
            if self.error is not None:
                return digest, None, self.error
        try:
            value = self._parse(raw, name)
        except ConfigError as exc:
            return digest, None, exc
        except Exception as exc:  # a parser bug must not take the sidecar down: report it as the file's error
            return (
                digest,
                None,
                _file_error(name, f"could not parse the file ({type(exc).__name__}: {exc})"),
            )
        finally:
            if len(raw) >= _TRIM_ABOVE_BYTES:
                release_memory()
        return digest, value, None

    async def reload(self) -> ReloadOutcome:
        """Re-read the file. `changed` when a new good value is in force."""
        digest, value, error = await asyncio.to_thread(self._read_and_parse)
        return self._apply(digest, value, error)

    def reload_sync(self) -> ReloadOutcome:
        """The same as `reload`, for command-line tools with no event loop."""
        return self._apply(*self._read_and_parse())

    def _apply(self, digest: str, value: T | None, error: ConfigError | None) -> ReloadOutcome:
        self.last_attempt_at = time.time()
        if error is not None:
            self.error = error
            self._last_digest = digest or None
            return "error"
        self.error = None
        self._last_digest = digest
        if self.current is not None and self.current.generation == digest:
            return "unchanged"
        assert value is not None
        self.current = Loaded(value=value, generation=digest, loaded_at=time.time())
        return "changed"
