"""Ports on 127.0.0.1."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000


def _below_ephemeral() -> tuple[int, int] | None:
    """Ports below the kernel's ephemeral range, or None when it cannot be read or leaves no room."""
    try:
        low = int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (_LOWEST, low - 1) if low - 1 - _LOWEST >= 1000 else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked.

    Only for servers that must be told their port up front (a child process's flags); servers
    started in-process bind port 0 and report the port they got. Picked at random below the
    ephemeral range: the kernel hands ports from that range to every outgoing connection (and to
    port-0 binds), and one of those could take the port between this answer and the server's bind.
    """
    span = _below_ephemeral()
    if span is not None:
        for _ in range(100):
            port = random.randint(*span)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        bound: int = sock.getsockname()[1]
        return bound
