"""The `--adapter-cache DIR` directory: one directory per adapter version, shared with vLLM.

Layout:

    DIR/.tmp/<random>/            downloads in progress (removed at start)
    DIR/<slug>-<32 hex>/          a published version: the path handed to vLLM
    DIR/<slug>-<32 hex>.complete  its completion marker (JSON), beside it, written last

A version's name comes from the source and its content checksum (declared, or computed after
download), so different content always gets a different path (vLLM keeps stale prefix-cache
blocks when one path is reloaded with new files). Downloads are single-flight per declaration
(source + checksum): every caller joins the same `Flight` (one task, one progress figure that
every waiter sees), and at most `max_downloads` run at once. A download is verified while it
streams, then published by a rename that never replaces an existing version; the marker is
written after the rename, so a directory without one is a leftover and is removed at start.

An unpinned source (no checksum) is fetched again only when its declaration is new or its
version has left the cache. GC: see `gc.plan_gc`; this module feeds it and applies it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from lora_syncer.sources.digest import Checksum, parse_checksum, tree_size
from lora_syncer.sources.errors import DownloadError, InvalidSource
from lora_syncer.sources.fetch import Fetched
from lora_syncer.sources.fetch_http import ProgressCallback
from lora_syncer.sources.gc import GcDecision, VersionUsage, plan_gc
from lora_syncer.sources.uri import ArchiveSource, RemoteSource, S3Source, parse_source, redact_url

log = structlog.get_logger(__name__)

TMP_DIR = ".tmp"
MARKER_SUFFIX = ".complete"
_SLUG_MAX = 48
_VERSION_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*-[0-9a-f]{32}")


class Fetcher(Protocol):
    async def fetch(
        self,
        source: RemoteSource,
        dest: Path,
        expected: Checksum | None,
        progress: ProgressCallback | None = None,
    ) -> Fetched: ...

    def prepare(self, source: RemoteSource) -> None:
        """Get ready to fetch `source` soon (e.g. make the S3 client in the background)."""
        ...


class Flight:
    """One download in progress: its task, and its bytes done / total for every waiter."""

    def __init__(self, source: str, checksum: str | None) -> None:
        self.source = source
        self.checksum = checksum
        self.done = 0
        self.total: int | None = None
        self.task: asyncio.Task[CachedVersion] | None = None
        self._listeners: list[ProgressCallback] = []

    def listen(self, callback: ProgressCallback) -> None:
        """Call `callback(done, total)` now and on every progress (a late waiter sees the bytes so far)."""
        self._listeners.append(callback)
        callback(self.done, self.total)

    def unlisten(self, callback: ProgressCallback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def progress(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        for callback in list(self._listeners):
            callback(done, total)


def version_name(source: str, checksum: Checksum) -> str:
    """`<slug>-<32 hex>`: filesystem-safe, at most 81 characters, unique per (source, content)."""
    shown = redact_url(source) if "://" in source else source
    slug = re.sub(r"[^a-z0-9._-]+", "-", shown.split("://", 1)[-1].lower()).strip("-._")[:_SLUG_MAX]
    key = hashlib.sha256(f"{source}\n{checksum}".encode()).hexdigest()[:32]
    return f"{slug.rstrip('-._') or 'adapter'}-{key}"


@dataclass(frozen=True)
class CachedVersion:
    name: str
    path: Path
    source: str
    checksum: Checksum
    pinned: bool  # the declaration carried this checksum
    revision: str | None
    size: int


@dataclass
class _Entry:
    version: CachedVersion
    last_used: float
    listed: bool = False
    unlisted_since: float | None = None


@dataclass(frozen=True)
class StartupReport:
    versions: int
    removed: tuple[str, ...]  # leftovers removed: temp dirs, unmarked dirs, orphan markers


@dataclass(frozen=True)
class GcReport:
    deleted: tuple[str, ...]
    total_bytes: int
    kept_bytes: int
    overflow_bytes: int  # for /status and a metric: bytes over budget that could not be freed
    max_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted": list(self.deleted),
            "total_bytes": self.total_bytes,
            "kept_bytes": self.kept_bytes,
            "overflow_bytes": self.overflow_bytes,
            "max_bytes": self.max_bytes,
        }


class AdapterCache:
    def __init__(
        self,
        root: Path,
        fetcher: Fetcher,
        *,
        max_bytes: int | None = None,
        gc_grace: float = 300.0,
        max_downloads: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._fetcher = fetcher
        self._max_bytes = max_bytes
        self._grace = gc_grace
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._by_declaration: dict[tuple[str, str | None], str] = {}
        self._flights: dict[tuple[str, str | None], Flight] = {}
        # Made on first use: an AdapterCache may be built before the event loop runs.
        self._max_downloads = max(1, max_downloads)
        self._slots: asyncio.Semaphore | None = None
        self._prepared: set[str] = set()
        self._publish_lock = threading.Lock()
        self._overflow_logged = 0
        self._total = 0  # bytes of every indexed version, kept as versions come and go
        # Bumped whenever a version is added or forgotten: callers may memoise lookups on it.
        self.generation = 0
        self._listed_roots: list[str] | None = None
        self._observed_generation = -1

    # --- start-up ------------------------------------------------------------------------------

    def open(self) -> StartupReport:
        """Create the cache, remove leftovers of an interrupted run and load the published versions."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed: list[str] = []
        tmp = self.root / TMP_DIR
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(TMP_DIR)
        tmp.mkdir()
        names = {p.name for p in self.root.iterdir()}
        for name in sorted(names):
            base = name.removesuffix(MARKER_SUFFIX)
            if not _VERSION_NAME.fullmatch(base):
                continue  # not ours (lost+found, files an operator put there): leave it alone
            path = self.root / name
            if name.endswith(MARKER_SUFFIX):
                if base not in names or not self._load_marker(base):
                    path.unlink(missing_ok=True)
                    removed.append(name)
            elif name + MARKER_SUFFIX not in names:
                self._remove_tree(path)
                removed.append(name)
        for name in [n for n in self._entries if not (self.root / n).is_dir()]:
            self._forget(name)
        if removed:
            log.info("adapter_cache_cleaned", removed=removed)
        return StartupReport(versions=len(self._entries), removed=tuple(removed))

    def _load_marker(self, name: str) -> bool:
        marker = self.root / (name + MARKER_SUFFIX)
        try:
            data = json.loads(marker.read_text())
            version = CachedVersion(
                name=name,
                path=self.root / name,
                source=str(data["source"]),
                checksum=parse_checksum(str(data["checksum"])),
                pinned=bool(data["pinned"]),
                revision=data.get("revision"),
                size=int(data["size"]),
            )
            last_used = float(data.get("last_used", marker.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError, InvalidSource):
            # A torn or foreign marker: the version cannot be trusted, drop both.
            self._remove_tree(self.root / name)
            return False
        self._add(version, last_used)
        return True

    # --- lookups and downloads -----------------------------------------------------------------

    def _add(self, version: CachedVersion, last_used: float) -> None:
        old = self._entries.get(version.name)
        if old is not None:
            self._total -= old.version.size
        self._entries[version.name] = _Entry(version, last_used)
        self._total += version.size
        self.generation += 1
        self._by_declaration[(version.source, str(version.checksum))] = version.name
        if not version.pinned:
            self._by_declaration[(version.source, None)] = version.name

    def _forget(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._total -= entry.version.size
            self.generation += 1
        for key in [k for k, v in self._by_declaration.items() if v == name]:
            del self._by_declaration[key]

    def lookup(self, source: str, checksum: str | None, *, verify: bool = True) -> CachedVersion | None:
        """The cached version for this declaration, without any download.

        `verify=False` trusts the index (no filesystem access): what every pass's planning uses,
        so a no-op pass costs no stat per cached version. Loading verifies.
        """
        # Fast path: a checksum already in canonical form (as the adapters file gives it).
        name = self._by_declaration.get((source, checksum))
        expected = None
        if name is None and checksum:
            expected = parse_checksum(checksum)
            name = self._by_declaration.get((source, str(expected)))
        if name is None and expected is not None:
            name = version_name(source, expected)
        entry = self._entries.get(name) if name else None
        if entry is None or (verify and not entry.version.path.is_dir()):
            if entry is not None:
                self._forget(entry.version.name)
            return None
        return entry.version

    def prepare(self, source: str) -> None:
        """A source that will be fetched soon was declared: let its fetcher get ready (once per scheme).

        For s3:// this imports boto3 and makes the client in a background thread, so the import
        happens when an s3:// source is declared, never before, and off the event loop.
        """
        scheme = source.split("://", 1)[0].lower()
        if scheme in self._prepared:
            return
        self._prepared.add(scheme)
        try:
            parsed = parse_source(source)
        except InvalidSource:
            return  # refused by the plan with its reason
        if isinstance(parsed, S3Source | ArchiveSource):
            self._fetcher.prepare(parsed)

    def begin(self, source: str, checksum: str | None = None) -> Flight:
        """Start this declaration's download, or join the one in flight (never waits).

        Raises InvalidSource for a source that is not remote or a malformed checksum. The
        flight's task ends with the published version, or raises ChecksumMismatch and the other
        SourceErrors of the fetchers; it is cancelled only by `close`.
        """
        parsed = parse_source(source)
        if not isinstance(parsed, S3Source | ArchiveSource):
            raise InvalidSource(f"{source}: only s3:// and http(s):// sources go through the cache")
        expected = parse_checksum(checksum) if checksum else None
        key = (source, str(expected) if expected else None)
        flight = self._flights.get(key)
        if flight is None:
            flight = Flight(source, checksum)
            task = asyncio.create_task(self._download(parsed, source, expected, flight))
            flight.task = task
            self._flights[key] = flight
            task.add_done_callback(lambda t: self._landed(key, t))
        return flight

    async def ensure(
        self, source: str, checksum: str | None = None, progress: ProgressCallback | None = None
    ) -> CachedVersion:
        """The local directory holding this declaration's content, downloading it if needed.

        Raises InvalidSource for a source that is not remote, ChecksumMismatch, and the other
        SourceErrors of the fetchers. Cancelling one caller does not cancel a shared download.
        """
        found = self.lookup(source, checksum)
        if found is not None:
            self._entries[found.name].last_used = self._clock()
            return found
        flight = self.begin(source, checksum)
        assert flight.task is not None
        if progress is not None:
            flight.listen(progress)
        try:
            return await asyncio.shield(flight.task)
        finally:
            if progress is not None:
                flight.unlisten(progress)

    def _landed(self, key: tuple[str, str | None], task: asyncio.Task[CachedVersion]) -> None:
        self._flights.pop(key, None)
        if not task.cancelled():
            # Retrieved here so a failure whose callers all went away is not reported as unhandled.
            task.exception()

    async def _download(
        self, parsed: RemoteSource, source: str, expected: Checksum | None, flight: Flight
    ) -> CachedVersion:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_downloads)
        async with self._slots:
            work = Path(tempfile.mkdtemp(prefix="dl-", dir=self.root / TMP_DIR))
            dest = work / "content"
            dest.mkdir()
            cleaned = False
            try:
                got = await self._fetcher.fetch(parsed, dest, expected, flight.progress)
                name = version_name(source, got.checksum)
                size = got.size if got.size is not None else await asyncio.to_thread(tree_size, dest)
                version = CachedVersion(
                    name=name,
                    path=self.root / name,
                    source=source,
                    checksum=got.checksum,
                    pinned=expected is not None,
                    revision=got.revision,
                    size=size,
                )
                for _attempt in range(2):
                    # Files in a worker thread (rename, marker, the emptied work dir), the index here.
                    published_at = await asyncio.to_thread(self._publish_files, dest, version, work)
                    cleaned = published_at is not None
                    if published_at is not None:
                        self._add(version, published_at)
                        log.info(
                            "adapter_version_published",
                            version=version.name,
                            source=redact_url(version.source),
                            checksum=str(version.checksum),
                            bytes=version.size,
                        )
                        return version
                    existing = self._existing(version)
                    if existing is not None:
                        return existing
                    # Its marker was torn (and the version removed with it): publish ours instead.
                raise DownloadError(f"{redact_url(source)}: could not publish {version.name} in {self.root}")
            finally:
                if not cleaned:
                    await asyncio.to_thread(shutil.rmtree, work, True)

    def _existing(self, version: CachedVersion) -> CachedVersion | None:
        """The same content already published (e.g. declared pinned and unpinned): keep that one."""
        existing = self._entries.get(version.name)
        if existing is None and self._load_marker(version.name):
            existing = self._entries.get(version.name)
        if existing is None:
            return None
        if not version.pinned:
            self._by_declaration[(version.source, None)] = version.name
        existing.last_used = self._clock()
        return existing.version

    def _publish_files(self, dest: Path, version: CachedVersion, work: Path) -> float | None:
        """Rename `dest` into place and write its marker; None when the version already exists.

        In a worker thread: touches files only, never the index (the loop owns it).
        """
        # Two declarations of one content (pinned and unpinned) may finish together: one at a time.
        with self._publish_lock:
            marker = self.root / (version.name + MARKER_SUFFIX)
            if version.path.is_dir() and marker.exists():
                return None
            if os.path.lexists(version.path):
                self._remove_tree(version.path)  # unmarked: a leftover, never a published version
            os.rename(dest, version.path)
            now = self._clock()
            payload = {
                "source": version.source,
                "checksum": str(version.checksum),
                "pinned": version.pinned,
                "revision": version.revision,
                "size": version.size,
                "last_used": now,
            }
            tmp_marker = work / (version.name + MARKER_SUFFIX)
            tmp_marker.write_text(json.dumps(payload))
            os.replace(tmp_marker, marker)
            shutil.rmtree(work, ignore_errors=True)  # emptied by the renames
            return now

    async def close(self) -> None:
        """Cancel downloads in flight (on shutdown); their temp dirs are removed as they unwind."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def downloading(self) -> list[str]:
        """Sources being downloaded now (for the `downloading` state)."""
        return sorted({source for source, _ in self._flights})

    # --- GC -----------------------------------------------------------------------------------

    @property
    def over_budget(self) -> bool:
        """More bytes than --adapter-cache-max-bytes: GC has work to weigh."""
        return self._max_bytes is not None and self._total > self._max_bytes

    @property
    def count(self) -> int:
        """Versions in the cache."""
        return len(self._entries)

    def versions(self) -> list[CachedVersion]:
        return [e.version for e in self._entries.values()]

    def observe(self, listed_roots: Sequence[str], now: float | None = None) -> None:
        """Record which versions vLLM lists now (its `/v1/models` roots, in its order)."""
        now = self._clock() if now is None else now
        if self.generation == self._observed_generation and listed_roots == self._listed_roots:
            # Nothing changed since the last pass: every entry's state still holds. A list
            # comparison, not a set: new strings from each answer would all be hashed again.
            return
        self._listed_roots, self._observed_generation = list(listed_roots), self.generation
        # String operations, not Path objects: this runs for every listed adapter.
        prefix = str(self.root).rstrip("/") + "/"
        listed = {r[len(prefix) :].rstrip("/") for r in listed_roots if r.startswith(prefix)}
        for name, entry in self._entries.items():
            if name in listed:
                entry.listed, entry.unlisted_since, entry.last_used = True, None, now
            else:
                if entry.listed:
                    entry.last_used = now  # in use until now: LRU counts from here
                if entry.listed or entry.unlisted_since is None:
                    entry.unlisted_since = now
                entry.listed = False

    def usage(self, declared: Collection[str]) -> list[VersionUsage]:
        return [
            VersionUsage(
                name=name,
                size=e.version.size,
                last_used=e.last_used,
                declared=name in declared,
                listed=e.listed,
                unlisted_since=e.unlisted_since,
            )
            for name, e in self._entries.items()
        ]

    async def collect(self, declared: Collection[str], now: float | None = None) -> GcReport:
        """Delete what `plan_gc` allows. `declared`: the version names the adapters file needs now.

        Call `observe` first with vLLM's current list.
        """
        now = self._clock() if now is None else now
        if self._max_bytes is None or self._total <= self._max_bytes:
            # Within budget (the common case): nothing may go, no per-version work.
            decision = GcDecision(
                delete=(), total_bytes=self._total, kept_bytes=self._total, overflow_bytes=0
            )
        else:
            decision = plan_gc(self.usage(declared), max_bytes=self._max_bytes, grace=self._grace, now=now)
        for name in decision.delete:
            # Marker first: a crash half-way leaves an unmarked directory, removed at next start.
            (self.root / (name + MARKER_SUFFIX)).unlink(missing_ok=True)
            self._forget(name)
            await asyncio.to_thread(self._remove_tree, self.root / name)
        if decision.delete:
            log.info("adapter_cache_gc", deleted=list(decision.delete), kept_bytes=decision.kept_bytes)
        if decision.overflow_bytes != self._overflow_logged:
            # Once per change, not once per pass: the figure stays in /status and a metric.
            if decision.overflow_bytes:
                log.warning(
                    "adapter_cache_over_budget",
                    overflow_bytes=decision.overflow_bytes,
                    max_bytes=self._max_bytes,
                    hint="declared or loaded versions alone exceed --adapter-cache-max-bytes",
                )
            else:
                log.info("adapter_cache_within_budget", kept_bytes=decision.kept_bytes)
            self._overflow_logged = decision.overflow_bytes
        return GcReport(
            deleted=decision.delete,
            total_bytes=decision.total_bytes,
            kept_bytes=decision.kept_bytes,
            overflow_bytes=decision.overflow_bytes,
            max_bytes=self._max_bytes,
        )

    @staticmethod
    def _remove_tree(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
