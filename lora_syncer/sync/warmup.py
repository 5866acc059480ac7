"""Warm-up (`--warmup`): one 1-token request on each adapter after it loads, one adapter at a time.

The first request on a freshly loaded adapter pays for reading its weights into vLLM's caches;
warming it before it counts as `loaded` keeps that off a user's request. The adapter is
`warming` meanwhile: readiness waits for it and the proxy does not route to it
(`SyncStatus.loaded_names`). A warm-up that fails (after the client's retries of transient
errors) makes the adapter `failed` with vLLM's answer as the reason; the reconciler's next
pass after the adapter's backoff asks for another warm-up (`resume`), with the backoff growing
per failure. One worker serves a queue, so warm-ups never overlap: each is a real request
competing with user traffic, and a queue of them must not flood a loaded server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from lora_syncer.sync.errors import ServerUnavailable, VLLMError
from lora_syncer.sync.metrics import SyncMetrics
from lora_syncer.sync.plan import Op
from lora_syncer.sync.states import AdapterState, Failed, ServerLost, Succeeded, Warming
from lora_syncer.sync.status import AdapterStatus, SyncStatus
from lora_syncer.sync.vllm_client import VLLMClient

log = structlog.get_logger("lora_syncer.sync")

WARMUP_PROMPT = "Hello"  # any short non-empty prompt: vLLM refuses an empty one


class WarmupWorker:
    """A queue of adapters to warm and the single task that warms them (`run`, supervised)."""

    def __init__(
        self,
        client: VLLMClient,
        status: SyncStatus,
        metrics: SyncMetrics,
        backoff: Callable[[int], float],
        on_server_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.status = status
        self.metrics = metrics
        self.backoff = backoff
        self.on_server_lost = on_server_lost
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self.current: str | None = None  # the adapter being warmed now

    def request(self, adapter_id: str) -> None:
        """Queue `adapter_id` for a warm-up (once: a queued adapter is not queued twice)."""
        if adapter_id not in self._queued:
            self._queued.add(adapter_id)
            self._queue.put_nowait(adapter_id)

    def resume(self, now: float) -> None:
        """Queue every adapter still waiting for its warm-up and not backing off (after a pass)."""
        for a in self.status.adapters.values():
            if (
                a.machine.unwarmed
                and a.declared == "present"
                and a.state in (AdapterState.WARMING, AdapterState.FAILED)
                and not a.backing_off(now)
                and a.id != self.current
            ):
                self.request(a.id)

    async def run(self) -> None:
        """Warm queued adapters one at a time, until cancelled."""
        while True:
            adapter_id = await self._queue.get()
            self._queued.discard(adapter_id)
            a = self.status.adapters.get(adapter_id)
            if a is None or not a.machine.unwarmed or a.declared != "present":
                continue
            if a.state == AdapterState.FAILED:
                if a.backing_off(time.monotonic()):
                    continue
                a.apply(Warming(retry=True))
            if a.state != AdapterState.WARMING:
                continue  # reloading or unloading meanwhile: its next load asks again
            self.current = adapter_id
            try:
                await self._warm(a)
            finally:
                self.current = None

    async def _warm(self, a: AdapterStatus) -> None:
        token = a.changed_at  # any state change meanwhile (a reload, an unload) voids this warm-up
        started = time.perf_counter()
        outcome = "ok"
        error: str | None = None
        try:
            await self.client.warm_up(a.id, WARMUP_PROMPT)
        except ServerUnavailable as exc:
            outcome, error = "server_unavailable", exc.message
        except VLLMError as exc:
            outcome, error = "failed", exc.message
        seconds = time.perf_counter() - started
        self.metrics.warmups.labels(result=outcome).inc()
        self.metrics.warmup_seconds.labels(result=outcome).observe(seconds)
        if (
            self.status.adapters.get(a.id) is not a
            or a.changed_at != token
            or a.state != AdapterState.WARMING
        ):
            log.info("warm-up result dropped: the adapter changed meanwhile", adapter=a.id, result=outcome)
            return
        if error is None:
            a.apply(Succeeded(Op.LOAD))
            log.info("warm-up done", adapter=a.id, ms=round(seconds * 1000, 2))
        elif outcome == "server_unavailable":
            # Not the adapter's fault: no backoff; the next pass warms it again (or reloads it).
            a.apply(ServerLost(error))
            if self.on_server_lost is not None:
                self.on_server_lost(error)
            log.warning(
                "vLLM server unreachable during the warm-up; will retry when it is back", adapter=a.id
            )
        else:
            now = time.monotonic()
            a.apply(Failed(f"warm-up failed: {error}", now, self.backoff))
            log.error(
                "warm-up failed",
                adapter=a.id,
                error=error,
                attempts=a.attempts,
                retry_in_seconds=round((a.next_retry_at or now) - now, 2),
            )


__all__ = ["WARMUP_PROMPT", "WarmupWorker"]
