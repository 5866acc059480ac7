"""The level-triggered reconcile loop.

Every trigger (a new good adapters file, periodic resync, server back) asks for one pass; a
pass takes the file in force (kept current by its `ReloadingFile`), one fresh
`GET /v1/models`, plans (pure) and applies the plan with bounded concurrency. Triggers carry no diff: bursts coalesce, the first starts a pass at once, and
any number arriving during a pass cause exactly one more pass after it.
"""

from __future__ import annotations

import asyncio
import os.path
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from lora_syncer.config.adapters import AdaptersConfig
from lora_syncer.config.source import Loaded
from lora_syncer.sources.errors import ChecksumMismatch, SourceError
from lora_syncer.sources.uri import redact_url
from lora_syncer.sync.capacity import CapacityCheck
from lora_syncer.sync.errors import (
    AdapterRejected,
    AuthenticationFailed,
    RuntimeUpdatingDisabled,
    ServerUnavailable,
    TransientError,
    VLLMError,
)
from lora_syncer.sync.metrics import SyncMetrics
from lora_syncer.sync.plan import (
    Action,
    ObservedModel,
    Op,
    Plan,
    PlanOptions,
    Resolved,
    is_remote,
    make_plan,
)
from lora_syncer.sync.server_probe import ServerProbe
from lora_syncer.sync.server_probe import supports_inplace as supports_inplace  # re-exported
from lora_syncer.sync.states import (
    AdapterState,
    Downloaded,
    Due,
    Failed,
    Gone,
    InSync,
    Redeclared,
    ServerLost,
    Skipped,
    Started,
    Succeeded,
    Warming,
)
from lora_syncer.sync.status import AdapterStatus, BackoffPolicy, Declared, PruneHold, SyncStatus
from lora_syncer.sync.vllm_client import VLLMClient
from lora_syncer.sync.warmup import WarmupWorker

if TYPE_CHECKING:  # the cache (tarfile, zipfile, the fetchers) is imported only with --adapter-cache
    from lora_syncer.sources.cache import AdapterCache, Flight

log = structlog.get_logger("lora_syncer.sync")


class AdaptersSource(Protocol):
    """The adapters file as the loop needs it: the value in force, and a way to re-read it."""

    @property
    def current(self) -> Loaded[AdaptersConfig] | None: ...

    async def reload(self) -> str: ...


@dataclass(frozen=True)
class SyncOptions:
    resync_interval: float = 5.0
    max_concurrency: int = 4
    plan: PlanOptions = field(default_factory=PlanOptions)
    health_check_timeout: float = 300.0
    health_check_interval: float = 2.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # While the server is unreachable after the start-up timeout, probe at most this far apart.
    down_probe_max: float = 5.0
    # Without --server, the file's host/port name the server (as with the old sidecar).
    server_from_config: bool = False


@dataclass
class PassResult:
    result: str  # ok | partial | server_down | no_config | runtime_updating_disabled | error
    actions: int = 0
    failures: int = 0
    plan: Plan | None = None


class Reconciler:
    """Owns the reconcile loop. `trigger()` from anywhere on the loop; `run()` until `stop()`.

    The adapters file is read (and its errors logged) by its `ReloadingFile`; adapter states
    change only through `sync.states.transition`; `/status` and readiness are rendered by
    `sync.render`. What is left here: trigger, coalesce, pass, execute with bounded
    concurrency and per-adapter backoff.
    """

    def __init__(
        self,
        source: AdaptersSource,
        client: VLLMClient,
        options: SyncOptions,
        metrics: SyncMetrics,
        status: SyncStatus | None = None,
        warmup: WarmupWorker | None = None,
        capacity: CapacityCheck | None = None,
        cache: AdapterCache | None = None,
    ) -> None:
        self.source = source
        self.client = client
        self.options = options
        self.metrics = metrics
        self.status = status or SyncStatus()
        self.status.server.url = client.base_url
        self.server = ServerProbe(client, self.status, metrics)
        metrics.watch(self.status)
        self._wanted = asyncio.Event()
        self._reasons: set[str] = set()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self.pass_lock = asyncio.Lock()
        self.warmup = warmup  # --warmup: loads end in `warming`, this worker makes them `loaded`
        self.capacity = capacity
        # --adapter-cache: remote sources are fetched into it (in the background) and loaded from there.
        self.cache = cache
        self._downloads: dict[str, _Download] = {}  # adapter id -> the download it waits for
        self._watched: set[Flight] = set()  # downloads whose end triggers a pass
        # (config, cache generation) -> resolved paths: a no-op pass resolves nothing again.
        self._resolved_memo: tuple[AdaptersConfig, int, Resolved] | None = None

    # --- triggers --------------------------------------------------------------------------

    def trigger(self, reason: str = "event") -> None:
        """Ask for a pass. Cheap and idempotent; safe to call from event handlers."""
        self._reasons.add(reason)
        self._wanted.set()

    def stop(self) -> None:
        """Stop after the current pass; in-flight calls are left to finish (see `drain`)."""
        self._stopping.set()
        self._wanted.set()

    def config_changed(self, loaded: Loaded[AdaptersConfig]) -> None:
        """A new good adapters file is in force: follow its server address if asked to, and reconcile."""
        if self.options.server_from_config:
            url = loaded.value.server_url
            if url != self.client.base_url:
                log.info("vLLM server address taken from the adapters file", server=url)
                self.client.base_url = url
                self.status.server.url = url
        self.trigger("file")

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for in-flight vLLM calls, then cancel what is left."""
        pending = {t for t in self._inflight if not t.done()}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
            log.warning("shutdown grace period over; cancelled in-flight calls", cancelled=len(still))

    # --- loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """The loop: a pass now, then one per trigger or per resync interval."""
        try:
            await self.source.reload()  # the file may name the server to wait for
        except Exception:  # never die at start-up: the file is read again on its next event or resync
            log.exception("reading the adapters file failed unexpectedly")
        await self.server.wait_until_healthy(
            self.options.health_check_timeout, self.options.health_check_interval, self._stopping
        )
        self.trigger("start")
        down_delay = self.options.health_check_interval
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._wanted.wait(), timeout=self._next_wake(down_delay))
            except TimeoutError:
                if self.status.server.reachable is False:
                    # Server down: probe /health cheaply; a pass only when it answers.
                    if not await self.client.health():
                        down_delay = min(down_delay * 2, self.options.down_probe_max)
                        continue
                    log.info("vLLM server is reachable again; reconciling now", server=self.client.base_url)
                    self._reasons.add("server_back")
                else:
                    self._reasons.add("resync")
            if self._stopping.is_set():
                break
            self._wanted.clear()
            reasons, self._reasons = self._reasons, set()
            await self.run_pass(reasons)
            if self.status.server.reachable:
                down_delay = self.options.health_check_interval

    def _next_wake(self, down_delay: float) -> float:
        if self.status.server.reachable is False:
            return down_delay
        wake = self.options.resync_interval
        now = time.monotonic()
        for a in self.status.adapters.values():
            if a.next_retry_at is not None and a.declared != "undeclared":
                wake = min(wake, max(0.05, a.next_retry_at - now))
        return wake

    # --- one pass --------------------------------------------------------------------------

    async def run_pass(self, reasons: set[str] | None = None) -> PassResult:
        async with self.pass_lock:
            started = time.perf_counter()
            try:
                result = await self._pass(reasons or {"manual"})
            except Exception:  # a bug must not kill the sidecar: log it and try again next pass
                log.exception("reconcile pass failed unexpectedly")
                result = PassResult("error")
            elapsed = time.perf_counter() - started
            st = self.status
            st.passes += 1
            st.last_pass_at = time.time()
            st.last_pass_seconds = elapsed
            st.last_pass_result = result.result
            self.metrics.passes.labels(result=result.result).inc()
            self.metrics.pass_seconds.observe(elapsed)
            self.metrics.set_state_counts(st.counts())
            if result.actions:
                log.info(
                    "reconcile pass done",
                    result=result.result,
                    actions=result.actions,
                    failures=result.failures,
                    seconds=round(elapsed, 4),
                    reasons=sorted(reasons or ()),
                )
            return result

    async def _pass(self, reasons: set[str]) -> PassResult:
        loaded = self.source.current
        if loaded is None:
            return PassResult("no_config")
        config = loaded.value
        models = await self.server.observe()
        if models is None:
            return PassResult("server_down")
        options = replace(
            self.options.plan,
            supports_inplace=self.status.server.supports_inplace,
            remote_sources=self.cache is not None,
            prune_confirmed=self._prune_confirmed(loaded.generation),
        )
        resolved = self._resolved(config)
        plan = make_plan(config, models, options, resolved)
        self._track_prune_hold(plan, loaded.generation)
        due = self._record_observation(config, models, plan)
        if self._downloads:
            due = self._follow_downloads(plan, due)
        if self.status.server.runtime_updating_disabled and due:
            # Probe with the first action only: until the server allows updates, the rest would fail alike.
            due = due[:1]
        if self.capacity is not None:
            await self.capacity.check(self.status, len(config.ensure_exist))
        failures = await self._execute(due, loaded)
        if self.warmup is not None:
            self.warmup.resume(time.monotonic())  # warm-ups lost to a server blip or due for a retry
        await self._collect_cache(config, models)
        self.status.synced_once = True
        result = "ok" if not failures else "partial"
        if self.status.server.runtime_updating_disabled:
            result = "runtime_updating_disabled"
        return PassResult(result, actions=len(due), failures=failures, plan=plan)

    def _prune_confirmed(self, generation: str) -> frozenset[str]:
        """Held prune unloads become due once the same file has stayed in force one resync interval."""
        hold = self.status.prune_hold
        if hold is None or hold.generation != generation:
            return frozenset()
        if time.monotonic() - hold.since_monotonic < self.options.resync_interval:
            return frozenset()
        return frozenset(hold.adapters)

    def _track_prune_hold(self, plan: Plan, generation: str) -> None:
        """Report a new hold once (log, /status, metric); say when it is confirmed or withdrawn."""
        hold = self.status.prune_hold
        if plan.held:
            if hold is not None and hold.adapters == plan.held and hold.generation == generation:
                return  # the same hold, still waiting
            self.status.prune_hold = PruneHold(
                plan.held, plan.held_limit, generation, time.time(), time.monotonic()
            )
            self.metrics.prune_held.set(len(plan.held))
            log.warning(
                "prune held: the adapters file would unload more adapters than --prune-max; "
                "nothing is unloaded unless the file stays unchanged for one more resync",
                count=len(plan.held),
                limit=plan.held_limit,
                adapters=list(plan.held[:20]),
                generation=generation,
            )
            return
        if hold is None:
            return
        self.status.prune_hold = None
        self.metrics.prune_held.set(0)
        pruning = {a.adapter_id for a in plan.actions if a.op == Op.UNLOAD}
        if set(hold.adapters) <= pruning:
            log.warning("prune confirmed: the file stayed unchanged; unloading", count=len(hold.adapters))
        else:
            log.info("prune hold withdrawn: the adapters file changed", generation=generation)

    def _record_observation(
        self, config: AdaptersConfig, models: list[ObservedModel], plan: Plan
    ) -> list[Action]:
        """Update every adapter's status from this pass's plan; return the actions due now."""
        st = self.status
        now = time.monotonic()
        roots = {m.id: m.root for m in models if m.is_adapter}
        seen: set[str] = set()

        def entry(
            adapter_id: str,
            declared: Declared,
            source: str | None,
            base: str | None,
            checksum: str | None = None,
        ) -> AdapterStatus:
            seen.add(adapter_id)
            key = (declared, source, base, checksum)
            a = st.adapters.get(adapter_id)
            if a is None:
                a = st.adapters[adapter_id] = AdapterStatus(id=adapter_id, declared=declared)
            if a.declaration != key:
                # A changed declaration gets a fresh start: no inherited backoff.
                a.declaration = key
                a.declared = declared
                a.source, a.base_model = source, base
                a.apply(Redeclared())
            a.observed_root = roots.get(adapter_id)
            return a

        for d in config.ensure_exist:
            entry(d.id, "present", d.source, d.base_model, d.checksum)
        for d in config.ensure_not_exist:
            if d.id not in config.conflicts:
                entry(d.id, "absent", d.source or None, d.base_model)
        for adapter_id in plan.in_sync:
            st.adapters[adapter_id].apply(InSync())
        for adapter_id in plan.absent:
            st.adapters[adapter_id].apply(Gone())
        for skip in plan.skips:
            a = st.adapters[skip.adapter_id]
            before = a.last_error
            if a.apply(Skipped(skip.reason, skip.detail)) or before != skip.detail:
                log.warning(
                    "adapter skipped", adapter=skip.adapter_id, reason=skip.reason.value, detail=skip.detail
                )
        for warn in plan.base_model_warnings:
            a = st.adapters[warn.adapter_id]
            if a.last_error != warn.detail and a.state != AdapterState.LOADED:
                log.warning(
                    "base model mismatch (loading anyway: --base-model-policy=warn)",
                    adapter=warn.adapter_id,
                    detail=warn.detail,
                )
        due: list[Action] = []
        for action in plan.actions:
            known = st.adapters.get(action.adapter_id)
            # --prune of an undeclared adapter has no entry yet.
            a = known if known is not None else entry(action.adapter_id, "undeclared", None, None)
            seen.add(action.adapter_id)
            a.apply(Due())
            if not a.backing_off(now):
                due.append(action)
        # Forget adapters no longer declared nor loaded; their gauge (read at scrape time) goes with them.
        for adapter_id in list(st.adapters):
            if adapter_id not in seen and adapter_id not in roots:
                del st.adapters[adapter_id]
            elif adapter_id not in seen:
                # Still loaded, but the file no longer names it: /status must not say it is declared.
                a = st.adapters[adapter_id]
                a.declared, a.declaration = "undeclared", ("undeclared", None, None)
                a.source = a.base_model = None
        return due

    def _unload_withdrawn(self, adapter_id: str, planned_from: Loaded[AdaptersConfig] | None) -> bool:
        """The file in force changed after the plan and no longer asks to unload `adapter_id`: it
        declares it in ensureExist, or (without --prune) no longer lists it in ensureNotExist.

        A pass can outlive newer edits (slow loads, a burst of edits): an unload planned from an
        older file must not remove what the newer one asks for, or what it leaves alone.
        """
        current = self.source.current
        if current is None or current is planned_from:
            return False
        config = current.value
        if any(d.id == adapter_id for d in config.ensure_exist):
            return True
        if self.options.plan.prune:
            return False  # undeclared: still pruned (a held prune is re-planned by the next pass)
        return not any(d.id == adapter_id for d in config.ensure_not_exist)

    async def _execute(
        self, actions: list[Action], planned_from: Loaded[AdaptersConfig] | None = None
    ) -> int:
        if not actions:
            return 0
        sem = asyncio.Semaphore(max(1, self.options.max_concurrency))
        failures = 0

        disabled_before = self.status.server.runtime_updating_disabled

        async def run_one(action: Action) -> None:
            nonlocal failures
            async with sem:
                if self._stopping.is_set():
                    return
                if action.op == Op.UNLOAD and self._unload_withdrawn(action.adapter_id, planned_from):
                    log.info(
                        "unload skipped: the adapters file no longer asks for it",
                        adapter=action.adapter_id,
                    )
                    self.trigger("file changed during the pass")
                    return
                if self.status.server.runtime_updating_disabled and not disabled_before:
                    # A call in this pass just found the admin routes off: the rest would fail alike.
                    a = self.status.adapters[action.adapter_id]
                    self._fail(
                        a,
                        action,
                        RuntimeUpdatingDisabled().message,
                        "runtime_updating_disabled",
                        count_attempt=False,
                    )
                    failures += 1
                    return
                ok = await self._apply(action)
                if not ok:
                    failures += 1

        # A few workers taking actions from one iterator, not a task per action: 10,000 adapters
        # declared on an empty server are 10,000 actions, and a task each, waiting on `sem`, held
        # ~2 KiB until the pass ended (a heap the process then kept). `sem` stays the one bound.
        pending = iter(actions)

        async def worker() -> None:
            for action in pending:
                try:
                    await run_one(action)
                except Exception:  # one action's bug must not strand the rest of the pass
                    log.exception("sync action failed unexpectedly", adapter=action.adapter_id)

        workers = min(len(actions), max(1, self.options.max_concurrency))
        tasks = [asyncio.create_task(worker(), name=f"sync:worker:{i}") for i in range(workers)]
        self._inflight.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._inflight.difference_update(tasks)
        return failures

    async def _apply(self, action: Action) -> bool:
        a = self.status.adapters[action.adapter_id]
        bound = log.bind(adapter=action.adapter_id, op=action.op.value)
        started = time.perf_counter()
        try:
            if action.fetch:
                fetched = self._start_download(action, a)
                if fetched is None:
                    # Downloading in the background (or failed to start, recorded): its end triggers a pass.
                    return a.state != AdapterState.FAILED
                action = replace(action, source=fetched, fetch=False)
            a.apply(Started(action.op))
            if action.op == Op.UNLOAD:
                outcome = await self.client.unload(action.adapter_id)
                a.observed_root = None
                self.status.mark_served(action.adapter_id, False)
            else:
                assert action.source is not None
                if action.op == Op.RELOAD and not action.inplace:
                    await self.client.unload(action.adapter_id)
                outcome = await self.client.load(
                    action.adapter_id, action.source, inplace=action.op == Op.RELOAD and action.inplace
                )
                a.observed_root = action.source
                self.status.mark_served(action.adapter_id, True)
            if self.warmup is not None and action.op != Op.UNLOAD:
                a.apply(Warming())  # served now; `loaded` once its warm-up answers
                self.warmup.request(action.adapter_id)
            else:
                a.apply(Succeeded(action.op))
            self.metrics.operations.labels(op=action.op.value, result="ok").inc()
            if self.status.server.runtime_updating_disabled:
                self.status.server.runtime_updating_disabled = False
                log.info("runtime LoRA updating is enabled on the server now")
            bound.info(
                f"{action.op.value} done",
                outcome=outcome,
                source=redact_url(action.source)
                if action.source and "://" in action.source
                else action.source,
                reason=action.reason,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return True
        except RuntimeUpdatingDisabled as exc:
            if not self.status.server.runtime_updating_disabled:
                log.error(exc.message, server=self.client.base_url)
            self.status.server.runtime_updating_disabled = True
            self._fail(a, action, exc.message, "runtime_updating_disabled", count_attempt=False)
        except ServerUnavailable as exc:
            # The server went away mid-pass: not this adapter's fault, so no backoff; re-plan when it is back.
            a.apply(ServerLost(exc.message))
            self.metrics.operations.labels(op=action.op.value, result="server_unavailable").inc()
            self.server.lost(exc.message)
            bound.warning(
                "vLLM server unreachable during the call; will retry when it is back", error=exc.message
            )
        except (AdapterRejected, TransientError, AuthenticationFailed, VLLMError) as exc:
            kind = "rejected" if isinstance(exc, AdapterRejected) else "error"
            self._fail(a, action, exc.message, kind)
        return False

    def _fail(
        self,
        a: AdapterStatus,
        action: Action,
        message: str,
        result: str,
        count_attempt: bool = True,
        delay_of: Callable[[int], float] | None = None,
    ) -> None:
        changed = a.last_error != message
        now = time.monotonic()
        a.apply(Failed(message, now, delay_of or self.options.backoff.delay, count_attempt))
        delay = (a.next_retry_at or now) - now
        self.metrics.operations.labels(op=action.op.value, result=result).inc()
        # Not this adapter's fault (e.g. runtime updating off): no attempt counted, none shown.
        attempts = {"attempts": a.attempts} if count_attempt else {}
        if changed or a.attempts <= 1:
            log.error(
                f"{action.op.value} failed",
                adapter=action.adapter_id,
                source=action.source,
                error=message,
                retry_in_seconds=round(delay, 1),
                **attempts,
            )
        else:
            log.warning(
                f"{action.op.value} failed again",
                adapter=action.adapter_id,
                source=action.source,
                retry_in_seconds=round(delay, 1),
                **attempts,
            )

    # --- remote sources (--adapter-cache) --------------------------------------------------

    def _resolved(self, config: AdaptersConfig) -> Resolved:
        """Declared remote sources already in the cache -> their directories (no filesystem access).

        A declared source not in the cache yet gets its fetcher ready now (for s3://, boto3 is
        imported and the client made in a background thread) so the download does not wait for it.
        """
        cache = self.cache
        if cache is None:
            return {}
        memo = self._resolved_memo
        if memo is not None and memo[0] is config and memo[1] == cache.generation:
            return memo[2]
        out: dict[str, str] = {}
        for d in config.ensure_exist:
            if is_remote(d.source):
                try:
                    found = cache.lookup(d.source, d.checksum, verify=False)
                except SourceError:
                    continue  # refused by the plan with its reason
                if found is not None:
                    out[d.id] = str(found.path)
                else:
                    cache.prepare(d.source)
        self._resolved_memo = (config, cache.generation, out)
        return out

    def _start_download(self, action: Action, a: AdapterStatus) -> str | None:
        """The cached directory to load now, or None: the download runs in the background.

        Downloads are single-flight per declaration (adapters declaring one source share it, and
        all show its bytes), bounded by the cache, and never block a pass; when one ends, a pass
        is triggered that loads what it published (or the adapters it served are failed).
        """
        cache = self.cache
        assert cache is not None and action.source is not None
        try:
            found = cache.lookup(action.source, action.checksum)
            if found is not None:  # landed since the plan was made
                return str(found.path)
            flight = cache.begin(action.source, action.checksum)
        except SourceError as exc:
            self._fail(a, action, exc.message, exc.reason)
            return None
        current = self._downloads.get(action.adapter_id)
        if current is not None and current.flight is flight:
            return None
        self._detach(action.adapter_id)

        def progress(done: int, total: int | None) -> None:
            a.apply(Downloaded(done, total))

        self._downloads[action.adapter_id] = _Download(flight, action, progress)
        flight.listen(progress)  # a later joiner shows the bytes already done, not 0
        assert flight.task is not None
        if flight not in self._watched:
            self._watched.add(flight)
            flight.task.add_done_callback(lambda task: self._download_ended(flight, task))
        log.info(
            "download started" if flight.done == 0 else "download joined",
            adapter=action.adapter_id,
            source=redact_url(action.source),
        )
        return None

    def _longest_backoff(self, _failures: int) -> float:
        return self.options.backoff.maximum

    def _detach(self, adapter_id: str) -> None:
        d = self._downloads.pop(adapter_id, None)
        if d is not None:
            d.flight.unlisten(d.progress)

    def _follow_downloads(self, plan: Plan, due: list[Action]) -> list[Action]:
        """Detach adapters whose declaration no longer needs their download; skip those still waiting."""
        wanted = {x.adapter_id: (x.source, x.checksum) for x in plan.actions if x.fetch}
        for adapter_id, d in list(self._downloads.items()):
            if wanted.get(adapter_id) != (d.flight.source, d.flight.checksum):
                self._detach(adapter_id)
        return [x for x in due if not (x.fetch and x.adapter_id in self._downloads)]

    def _download_ended(self, flight: Flight, task: asyncio.Task[Any]) -> None:
        """A download ended: fail the adapters it served if it failed, and reconcile either way."""
        self._watched.discard(flight)
        waiting = [aid for aid, d in self._downloads.items() if d.flight is flight]
        error = None if task.cancelled() else task.exception()
        for adapter_id in waiting:
            d = self._downloads.pop(adapter_id)
            flight.unlisten(d.progress)
            a = self.status.adapters.get(adapter_id)
            if error is None or a is None:
                continue
            if isinstance(error, ChecksumMismatch):
                # The content will not change by itself: retry only at the longest backoff.
                self._fail(a, d.action, error.message, error.reason, delay_of=self._longest_backoff)
            elif isinstance(error, SourceError):
                self._fail(a, d.action, error.message, error.reason)
            elif isinstance(error, OSError):
                where = self.cache.root if self.cache is not None else "the adapter cache"
                message = f"adapter cache {where}: {error.strerror or error}"
                self._fail(a, d.action, message, "cache_error")
            else:
                log.error("download failed unexpectedly", adapter=adapter_id, error=repr(error))
                self._fail(a, d.action, f"download failed: {type(error).__name__}", "error")
        if not task.cancelled():
            self.trigger("download failed" if error is not None else "downloaded")

    async def _collect_cache(self, config: AdaptersConfig, models: list[ObservedModel]) -> None:
        """Record which cached versions vLLM lists, then delete what GC allows; report the figures."""
        cache = self.cache
        if cache is None:
            return
        cache.observe([m.root for m in models if m.parent is not None and m.root])
        # Declared versions: what this pass's file and the file in force now (it may have changed
        # during the pass) resolve to, including versions published during the pass. Only GC over
        # the budget needs them.
        declared: set[str] = set()
        if cache.over_budget:
            current = self.source.current
            for c in {id(x): x for x in (config, current.value if current else config)}.values():
                declared.update(os.path.basename(path) for path in self._resolved(c).values())
        try:
            report = await cache.collect(declared)
        except OSError as exc:  # a full or read-only volume must not stop syncing
            log.error("adapter cache GC failed", error=str(exc))
            return
        self.metrics.cache_bytes.set(report.kept_bytes)
        self.metrics.cache_overflow_bytes.set(report.overflow_bytes)
        self.status.adapter_cache = {
            "totalBytes": report.kept_bytes,
            "maxBytes": report.max_bytes,
            "overflowBytes": report.overflow_bytes,
            "versions": cache.count,
        }


@dataclass(frozen=True)
class _Download:
    """An adapter waiting for a download: the flight, the action that started it, its progress tap."""

    flight: Flight
    action: Action
    progress: Callable[[int, int | None], None]
