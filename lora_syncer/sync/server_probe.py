"""What the syncer knows of the vLLM server: start-up health wait, one `GET /v1/models` per pass.

Writes `SyncStatus.server` and the `lora_syncer_server_up` gauge; logs only on a change (down,
back), so a server that stays down is one line, not one per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from lora_syncer.sync.errors import VLLMError
from lora_syncer.sync.metrics import SyncMetrics
from lora_syncer.sync.plan import ObservedModel
from lora_syncer.sync.status import SyncStatus
from lora_syncer.sync.vllm_client import VLLMClient

log = structlog.get_logger("lora_syncer.sync")

# While waiting for the server at start-up, one progress line this often (seconds).
PROGRESS_EVERY = 5.0


def supports_inplace(version: str | None) -> bool:
    """`load_inplace` exists from vLLM 0.15.0 on; unknown versions are assumed recent."""
    if not version:
        return True
    parts: list[int] = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            return True
        parts.append(int(digits))
    while len(parts) < 2:
        parts.append(0)
    return (parts[0], parts[1]) >= (0, 15)


class ServerProbe:
    def __init__(self, client: VLLMClient, status: SyncStatus, metrics: SyncMetrics) -> None:
        self.client = client
        self.status = status
        self.metrics = metrics

    async def wait_until_healthy(self, within: float, interval: float, stopping: asyncio.Event) -> bool:
        """Start-up: poll `/health` up to `within` seconds (or until `stopping`) without blocking the loop."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + within
        next_report = started + PROGRESS_EVERY
        while not stopping.is_set():
            problem = await self.client.health_problem()
            if problem is None:
                log.info(
                    "vLLM server is healthy",
                    server=self.client.base_url,
                    waited_seconds=round(loop.time() - started, 1),
                )
                return True
            # /readyz says why it is not ready while we wait (not "first pass has not completed").
            self.lost(problem)
            now = loop.time()
            if now >= next_report:
                next_report = now + PROGRESS_EVERY
                log.info(
                    "waiting for the vLLM server",
                    server=self.client.base_url,
                    error=problem,
                    waited_seconds=round(now - started, 1),
                    timeout_seconds=within,
                )
            if now >= deadline:
                log.warning(
                    "vLLM server not healthy within --health-check-timeout; will keep retrying with backoff",
                    server=self.client.base_url,
                    error=problem,
                    timeout_seconds=within,
                )
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
        return False

    async def observe(self) -> list[ObservedModel] | None:
        """The server's models now, or None (and the server marked down) when it does not answer."""
        server = self.status.server
        try:
            models = await self.client.list_models()
        except VLLMError as exc:
            if server.reachable is not False:
                log.warning("vLLM server unreachable; adapters stay as they are", error=exc.message)
            self.lost(exc.message)
            return None
        if server.reachable is not True:
            # First contact, or back after a restart: the version may have changed.
            server.version = await self.client.version()
            server.supports_inplace = supports_inplace(server.version)
        server.reachable = True
        server.last_error = None
        server.last_seen_at = time.time()
        server.base_models = tuple(m.id for m in models if not m.is_adapter)
        self.status.set_served(m.id for m in models)
        self.metrics.server_up.set(1)
        return models

    def lost(self, message: str) -> None:
        """The server stopped answering (a failed list or a call refused mid-pass)."""
        server = self.status.server
        server.reachable = False
        server.last_error = message
        self.metrics.server_up.set(0)
