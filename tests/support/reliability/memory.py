"""Resident memory of this process (Linux)."""

from __future__ import annotations

import gc
import os
import resource


def rss_kib() -> int:
    """Resident set size of this process now, from /proc/self/statm."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def settled_rss_kib() -> int:
    """Resident set size after a full garbage collection."""
    gc.collect()
    return rss_kib()
