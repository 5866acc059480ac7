"""The adapter cache as the sidecar runs it: fetchers built from the settings, metered, opened
at start and closed at shutdown.

boto3 stays unimported until an s3:// source is declared (the S3 client is then made in a
background thread); the HTTP session is made here, on the running loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog

from lora_syncer.sources.cache import AdapterCache, Fetcher, StartupReport
from lora_syncer.sources.digest import Checksum
from lora_syncer.sources.errors import SourceError
from lora_syncer.sources.fetch import Fetched, RemoteFetcher
from lora_syncer.sources.fetch_http import HttpFetcher, ProgressCallback
from lora_syncer.sources.fetch_s3 import S3Fetcher
from lora_syncer.sources.uri import RemoteSource

log = structlog.get_logger("lora_syncer.sources")

# A download may stall without failing; this bounds the silence, not the whole transfer.
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_read=120)


class DownloadMeter(Protocol):
    """Where download figures go (the syncer's Prometheus metrics)."""

    def downloaded(self, nbytes: int, seconds: float) -> None: ...

    def download_failed(self, reason: str, nbytes: int) -> None: ...


class MeteredFetcher:
    """A Fetcher that reports bytes, duration and failures of each download (not of each waiter)."""

    def __init__(self, inner: Fetcher, meter: DownloadMeter) -> None:
        self._inner = inner
        self._meter = meter

    async def fetch(
        self,
        source: RemoteSource,
        dest: Path,
        expected: Checksum | None,
        progress: ProgressCallback | None = None,
    ) -> Fetched:
        seen = 0

        def tap(done: int, total: int | None) -> None:
            nonlocal seen
            seen = max(seen, done)
            if progress is not None:
                progress(done, total)

        started = time.monotonic()
        try:
            got = await self._inner.fetch(source, dest, expected, tap)
        except SourceError as exc:
            self._meter.download_failed(exc.reason, seen)
            raise
        except asyncio.CancelledError:
            self._meter.download_failed("cancelled", seen)
            raise
        self._meter.downloaded(seen, time.monotonic() - started)
        return got

    def prepare(self, source: RemoteSource) -> None:
        self._inner.prepare(source)


@dataclass(frozen=True)
class CacheSettings:
    root: Path
    max_bytes: int | None
    gc_grace: float
    concurrency: int
    allowed_sources: tuple[str, ...]
    max_downloads: int = 4  # sources downloaded at once (the syncer passes --max-concurrency)


class CacheService:
    """Owns the cache and the clients it downloads with."""

    def __init__(self, settings: CacheSettings, meter: DownloadMeter) -> None:
        self.settings = settings
        self._meter = meter
        self._session: aiohttp.ClientSession | None = None
        self.cache: AdapterCache | None = None

    def open(self) -> StartupReport:
        """Make the clients and open the cache (removing what an interrupted run left). On the loop."""
        s = self.settings
        self._session = aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
        fetcher = RemoteFetcher(
            http=HttpFetcher(self._session, allowed_sources=s.allowed_sources),
            s3=S3Fetcher(concurrency=s.concurrency, allowed_sources=s.allowed_sources),
        )
        self.cache = AdapterCache(
            s.root,
            MeteredFetcher(fetcher, self._meter),
            max_bytes=s.max_bytes,
            gc_grace=s.gc_grace,
            max_downloads=s.max_downloads,
        )
        report = self.cache.open()
        log.info(
            "adapter cache opened",
            dir=str(s.root),
            versions=report.versions,
            removed=len(report.removed),
            max_bytes=s.max_bytes,
            gc_grace_seconds=s.gc_grace,
        )
        return report

    async def close(self) -> None:
        """Cancel downloads in flight (their temporary files go with them) and close the clients."""
        if self.cache is not None:
            await self.cache.close()
        if self._session is not None:
            await self._session.close()
