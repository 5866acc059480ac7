"""Download an adapter archive over HTTP(S) with aiohttp.

Redirects are followed by hand so every hop is checked against `--allowed-sources` (and an
https → http downgrade is refused). The body is hashed while it arrives (in 1 MiB blocks, in a worker thread, overlapping the
next block's receipt); `max_bytes` caps it
(a Content-Length above it is refused before reading). Transient failures (connection errors,
timeouts, 429 and 5xx) are retried with backoff. Messages show URLs without query or userinfo.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from lora_syncer.sources.digest import Checksum
from lora_syncer.sources.errors import DownloadError, ForbiddenSource, TooLarge
from lora_syncer.sources.retry import RetryPolicy, with_retries
from lora_syncer.sources.uri import ArchiveSource, check_url_allowed, parse_http_url, redact_url

# (bytes done, total bytes or None when the server does not say)
ProgressCallback = Callable[[int, int | None], None]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
_BLOCK = 1 << 20  # bytes hashed and written per worker-thread hop


@dataclass(frozen=True)
class HttpDownload:
    checksum: Checksum  # sha256 of the bytes received
    size: int
    etag: str | None


class HttpFetcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allowed_sources: Sequence[str] = (),
        max_bytes: int = 20 * 1024**3,
        max_redirects: int = 5,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._rules = tuple(allowed_sources)
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._retry = retry or RetryPolicy()

    async def download(
        self, source: ArchiveSource, dest: Path, progress: ProgressCallback | None = None
    ) -> HttpDownload:
        """Write the archive to `dest` (a file path) and return its sha256, size and ETag."""
        return await with_retries(self._retry, lambda: self._once(source, dest, progress))

    async def _once(
        self, source: ArchiveSource, dest: Path, progress: ProgressCallback | None
    ) -> HttpDownload:
        url = source.url
        check_url_allowed(url, self._rules)
        for _hop in range(self._max_redirects + 1):
            try:
                # The bytes as stored: a .tar.gz served with Content-Encoding: gzip must not be
                # unpacked on the way, or its sha256 would not be the file's.
                async with self._session.get(
                    url, allow_redirects=False, auto_decompress=False, headers={"Accept-Encoding": "identity"}
                ) as resp:
                    if resp.status in _REDIRECTS:
                        url = self._next_hop(url, resp)
                        continue
                    if resp.status != 200:
                        raise DownloadError(
                            f"{redact_url(url)}: HTTP {resp.status}",
                            transient=resp.status == 429 or resp.status >= 500,
                        )
                    return await self._save(url, resp, dest, progress)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # aiohttp's own messages can include the full URL (query and all): name the class only.
                raise DownloadError(
                    f"{redact_url(url)}: {type(exc).__name__} while downloading", transient=True
                ) from None
        raise DownloadError(f"{redact_url(source.url)}: more than {self._max_redirects} redirects")

    def _next_hop(self, url: str, resp: aiohttp.ClientResponse) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise DownloadError(f"{redact_url(url)}: HTTP {resp.status} redirect without a Location")
        target = urljoin(url, location)
        if parse_http_url(url)[0] == "https" and parse_http_url(target)[0] != "https":
            raise ForbiddenSource(f"{redact_url(url)}: redirect from https to plain http is refused")
        check_url_allowed(target, self._rules, what="redirect to")
        return target

    async def _save(
        self, url: str, resp: aiohttp.ClientResponse, dest: Path, progress: ProgressCallback | None
    ) -> HttpDownload:
        total = resp.content_length
        if total is not None and total > self._max_bytes:
            raise TooLarge(f"{redact_url(url)}: {total} bytes is over the {self._max_bytes}-byte limit")
        digest = hashlib.sha256()
        done = 0
        pending: asyncio.Future[None] | None = None
        buffer = bytearray()

        def consume(block: bytes) -> None:
            # In a worker thread: hashlib and file writes release the GIL on blocks this large.
            digest.update(block)
            out.write(block)

        with dest.open("wb") as out:
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    done += len(chunk)
                    if done > self._max_bytes:
                        raise TooLarge(f"{redact_url(url)}: more than the {self._max_bytes}-byte limit")
                    buffer += chunk
                    if len(buffer) >= _BLOCK:
                        # Hash and write one block while the next one arrives (one in flight, in order).
                        if pending is not None:
                            await pending
                        pending = asyncio.ensure_future(asyncio.to_thread(consume, bytes(buffer)))
                        buffer.clear()
                    if progress is not None:
                        progress(done, total)
                if pending is not None:
                    await pending
                    pending = None
                if buffer:
                    await asyncio.to_thread(consume, bytes(buffer))
            finally:
                if pending is not None:
                    # Failed mid-way: let the thread finish before the file closes.
                    await asyncio.gather(pending, return_exceptions=True)
        if total is not None and done != total:
            raise DownloadError(f"{redact_url(url)}: got {done} of {total} bytes", transient=True)
        return HttpDownload(checksum=Checksum(digest.hexdigest()), size=done, etag=resp.headers.get("ETag"))
