"""Types shared by the fuzz tier's fixtures and tests (conftest modules are not imported by name)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProxyThread:
    """The proxy's port; the loop it runs on lives in a daemon thread until the session ends."""

    port: int
    upstream_port: int
