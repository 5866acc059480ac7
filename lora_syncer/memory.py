"""Keep the sidecar's heap small: one malloc arena, and freed heap given back after something big.

Parsing a 10,000-entry file or decoding a 10,000-model answer leaves a fragmented heap that
glibc keeps; a sidecar's RSS is what its memory limit sees, so trim after such work. glibc also
gives every thread that allocates its own arena (the file watcher, the resolver's threads), each
keeping pages of its own; the sidecar's work is on one event-loop thread, so one arena for all
costs no contention worth measuring and saves several MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from typing import Any

_M_ARENA_MAX = -8  # mallopt() parameter number, from glibc's malloc.h

_libc: Any = None
_looked_up = False


def _glibc() -> Any:
    """glibc's handle, or None (another libc, or none found)."""
    global _libc, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
        except OSError:
            _libc = None
    return _libc


def limit_malloc_arenas(arenas: int = 1) -> None:
    """Share `arenas` malloc arenas between all threads; call before threads start. An operator's
    MALLOC_ARENA_MAX is left in force."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Collect garbage and return free heap pages to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return free heap pages to the OS without a garbage collection (cheap: about a millisecond)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
