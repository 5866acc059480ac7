"""Give freed heap back to the OS after handling something big.

Parsing a 10,000-entry file or decoding a 10,000-model answer leaves a fragmented heap that
glibc keeps; a sidecar's RSS is what its memory limit sees, so trim after such work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked_up = False


def release_memory() -> None:
    """Collect garbage and return free heap pages to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return free heap pages to the OS without a garbage collection (cheap: about a millisecond)."""
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = None
    if _trim is not None:
        _trim(0)
