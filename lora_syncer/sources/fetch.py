"""Fetch a remote source into a directory and verify it: one entry point for both schemes.

An archive is downloaded beside the target directory, its sha256 checked against the declared
checksum before anything is extracted, then extracted safely and deleted. An S3 prefix is
downloaded straight into the target directory and its directory checksum checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from lora_syncer.sources.archive import ArchiveLimits, extract_archive
from lora_syncer.sources.digest import Checksum
from lora_syncer.sources.errors import ChecksumMismatch
from lora_syncer.sources.fetch_http import HttpFetcher, ProgressCallback
from lora_syncer.sources.fetch_s3 import S3Fetcher
from lora_syncer.sources.uri import ArchiveSource, RemoteSource, S3Source, redact_url


@dataclass(frozen=True)
class Fetched:
    checksum: Checksum  # of the content: the archive file, or the S3 directory
    revision: str | None  # ETag (archive) or listing hash (S3): detects change, verifies nothing
    size: int | None = None  # bytes written into the directory, when known without a walk


class RemoteFetcher:
    """Fetches S3 prefixes and HTTP(S) archives. `http` may be None when only S3 is used."""

    def __init__(
        self, *, http: HttpFetcher | None, s3: S3Fetcher | None, limits: ArchiveLimits | None = None
    ) -> None:
        self._http = http
        self._s3 = s3
        self._limits = limits or ArchiveLimits()

    def prepare(self, source: RemoteSource) -> None:
        """An s3:// source was declared: make the S3 client (importing boto3) in the background."""
        if isinstance(source, S3Source) and self._s3 is not None:
            self._s3.prepare()

    async def download_archive(
        self, source: ArchiveSource, archive_file: Path, progress: ProgressCallback | None = None
    ) -> Fetched:
        """Only download (no extraction): for `lora-syncer digest`."""
        if self._http is None:
            raise RuntimeError("RemoteFetcher built without an HttpFetcher")
        got = await self._http.download(source, archive_file, progress)
        return Fetched(got.checksum, got.etag)

    async def fetch(
        self,
        source: RemoteSource,
        dest: Path,
        expected: Checksum | None,
        progress: ProgressCallback | None = None,
    ) -> Fetched:
        """Fill the existing empty directory `dest`. Raises ChecksumMismatch and other SourceErrors."""
        if isinstance(source, ArchiveSource):
            archive_file = dest.with_name(dest.name + ".archive")
            try:
                got = await self.download_archive(source, archive_file, progress)
                if expected is not None and got.checksum != expected:
                    raise ChecksumMismatch(redact_url(source.url), str(expected), str(got.checksum))
                await asyncio.to_thread(extract_archive, archive_file, dest, source.format, self._limits)
            finally:
                archive_file.unlink(missing_ok=True)
            return got
        if self._s3 is None:
            raise RuntimeError("RemoteFetcher built without an S3Fetcher")
        s3 = await self._s3.download(source, dest, progress)
        if expected is not None and s3.checksum != expected:
            raise ChecksumMismatch(source.text, str(expected), str(s3.checksum))
        return Fetched(s3.checksum, s3.revision, s3.size)
