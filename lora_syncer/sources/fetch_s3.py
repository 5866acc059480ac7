"""Download every object under an S3 prefix into a directory.

boto3 (the optional `s3` extra) is imported only when an s3:// source is declared (`prepare`,
in a background thread) or fetched. The client is
configured the standard AWS way: environment, shared config and the credential chain,
`AWS_ENDPOINT_URL` for an S3-compatible server. Blocking client calls run in worker threads, at
most `concurrency` objects at a time per download. Keys ending in `/` (folder markers) are
skipped. Each object is hashed while written, so the directory checksum needs no second read.
Errors name the bucket, key and S3 error code, never credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_syncer.sources.digest import Checksum, DirectoryDigest, check_relative_name
from lora_syncer.sources.errors import DownloadError, ForbiddenSource, SourceError, TooLarge, UnsafeContent
from lora_syncer.sources.retry import RetryPolicy, with_retries
from lora_syncer.sources.uri import S3Source, remote_source_allowed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ProgressCallback = Callable[[int, int | None], None]

_CHUNK = 1 << 20
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


@dataclass(frozen=True)
class S3Object:
    key: str
    rel: str  # the key below the prefix: the file's path in the adapter directory
    size: int
    etag: str


@dataclass(frozen=True)
class S3Download:
    checksum: Checksum  # the directory checksum of what was written
    files: int
    size: int
    revision: str  # sha256 of the listing (keys, ETags, sizes): changes when any object does


def _describe(exc: BaseException, where: str) -> DownloadError:
    """A credential-free DownloadError for a botocore/boto3 failure."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return DownloadError(
            f"{where}: S3 error {code} (HTTP {status})",
            transient=code in _TRANSIENT_CODES or status >= 500,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return DownloadError(f"{where}: no usable AWS credentials found (environment, profile or role)")
    # Connection and read errors: only the class name, the text can carry an endpoint URL.
    return DownloadError(f"{where}: {type(exc).__name__} talking to S3", transient=True)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def default_client_factory(concurrency: int) -> Callable[[], S3Client]:
    def make() -> S3Client:
        import boto3
        from botocore.config import Config

        # One attempt per call: tenacity retries here, so backoff is the same for every source.
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max(10, concurrency),
            connect_timeout=10,
            read_timeout=60,
        )
        return boto3.session.Session().client("s3", config=config)

    return make


class S3Fetcher:
    def __init__(
        self,
        *,
        concurrency: int = 4,
        max_bytes: int = 20 * 1024**3,
        max_files: int = 10_000,
        retry: RetryPolicy | None = None,
        client_factory: Callable[[], S3Client] | None = None,
        allowed_sources: Sequence[str] = (),
    ) -> None:
        self._rules = tuple(allowed_sources)
        self._concurrency = max(1, concurrency)
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._retry = retry or RetryPolicy()
        self._factory = client_factory or default_client_factory(self._concurrency)
        self._client: S3Client | None = None
        self._lock = threading.Lock()
        self._preparing = False

    def prepare(self) -> None:
        """Import boto3 and make the client in a daemon thread, off the event loop (idempotent).

        Called when an s3:// source is declared: the first download then finds the client
        ready, or waits for it on the lock instead of making a second one.
        """
        if self._client is not None or self._preparing:
            return
        self._preparing = True

        def make() -> None:
            # A failure here is reported by the download that needs the client (it tries again).
            with contextlib.suppress(Exception):
                self._get_client()

        threading.Thread(target=make, name="s3-client", daemon=True).start()

    def _get_client(self) -> S3Client:
        # boto3 clients are thread-safe once made; making one is not, hence the lock.
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._factory()
                except ImportError:
                    raise DownloadError(
                        "s3:// sources need boto3: install lora-syncer with the 's3' extra"
                    ) from None
            return self._client

    async def list_objects(self, source: S3Source) -> list[S3Object]:
        # Checked here too, not only in the plan: a fetcher never reads what the rules refuse.
        if not remote_source_allowed(source, self._rules):
            raise ForbiddenSource(f"source {source.text} is not allowed by --allowed-sources")
        return await with_retries(self._retry, lambda: asyncio.to_thread(self._list_blocking, source))

    def _list_blocking(self, source: S3Source) -> list[S3Object]:
        where = source.text
        try:
            client = self._get_client()
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=source.bucket, Prefix=source.prefix
            )
            out: list[S3Object] = []
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue  # a "folder" placeholder, not a file
                    rel = key[len(source.prefix) :]
                    check_relative_name(rel)
                    out.append(S3Object(key, rel, int(item.get("Size", 0)), str(item.get("ETag", ""))))
                    if len(out) > self._max_files:
                        raise TooLarge(f"{where}: more than {self._max_files} objects")
        except SourceError:
            raise
        except Exception as exc:
            raise _describe(exc, where) from None
        if not out:
            raise DownloadError(f"{where}: no objects under this prefix")
        return out

    async def download(
        self, source: S3Source, dest: Path, progress: ProgressCallback | None = None
    ) -> S3Download:
        """Fetch every object under the prefix into the existing directory `dest`."""
        objects = await self.list_objects(source)
        total = sum(o.size for o in objects)
        if total > self._max_bytes:
            raise TooLarge(f"{source.text}: {total} bytes is over the {self._max_bytes}-byte limit")
        listing = hashlib.sha256()
        for o in sorted(objects, key=lambda o: o.key):
            listing.update(f"{o.key}\0{o.etag}\0{o.size}\n".encode())
        digest = DirectoryDigest()
        done = 0
        loop = asyncio.get_running_loop()

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        def report(n: int) -> None:
            loop.call_soon_threadsafe(on_bytes, n)

        limit = asyncio.Semaphore(self._concurrency)
        # Threads cannot be cancelled: when one object fails, the others stop at their next chunk.
        abort = threading.Event()

        async def one(obj: S3Object) -> None:
            async with limit:
                file_hex = await with_retries(
                    self._retry,
                    lambda: asyncio.to_thread(self._get_blocking, source, obj, dest, report, abort),
                )
            digest.add(obj.rel, file_hex)

        try:
            async with asyncio.TaskGroup() as group:
                for obj in objects:
                    group.create_task(one(obj))
        except BaseExceptionGroup as group_error:
            abort.set()
            # Callers expect one SourceError, as from the HTTP fetcher: raise the first failure.
            raise _first_leaf(group_error) from None
        except BaseException:
            abort.set()
            raise
        return S3Download(
            checksum=digest.result(), files=len(digest), size=total, revision=listing.hexdigest()
        )

    def _get_blocking(
        self,
        source: S3Source,
        obj: S3Object,
        dest: Path,
        report: Callable[[int], None],
        abort: threading.Event,
    ) -> str:
        where = f"s3://{source.bucket}/{obj.key}"
        target = dest.joinpath(*obj.rel.split("/"))
        try:
            if abort.is_set():
                raise DownloadError(f"{where}: download abandoned")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.parent.is_symlink():
                raise UnsafeContent(f"{where}: refusing to write through a symlink")
            client = self._get_client()
            # IfMatch: an object replaced since the listing fails instead of mixing versions.
            kwargs: dict[str, Any] = {"Bucket": source.bucket, "Key": obj.key}
            if obj.etag:
                kwargs["IfMatch"] = obj.etag
            body = client.get_object(**kwargs)["Body"]
            h = hashlib.sha256()
            written = 0
            try:
                with target.open("wb") as out:
                    while chunk := body.read(_CHUNK):
                        if abort.is_set():
                            raise DownloadError(f"{where}: download abandoned")
                        written += len(chunk)
                        if written > obj.size:
                            raise DownloadError(f"{where}: larger than listed ({obj.size} bytes)")
                        h.update(chunk)
                        out.write(chunk)
                        report(len(chunk))
            finally:
                body.close()
            if written != obj.size:
                raise DownloadError(f"{where}: got {written} of {obj.size} bytes", transient=True)
            return h.hexdigest()
        except SourceError:
            raise
        except OSError as exc:
            raise DownloadError(f"{where}: cannot write {obj.rel!r}: {exc.strerror or exc}") from None
        except Exception as exc:
            raise _describe(exc, where) from None
