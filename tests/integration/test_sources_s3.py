"""S3 prefixes against a real S3-compatible server (moto in server mode, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lora_syncer.cli import main
from lora_syncer.sources.cache import MARKER_SUFFIX, TMP_DIR, AdapterCache
from lora_syncer.sources.digest import directory_checksum
from lora_syncer.sources.errors import (
    ChecksumMismatch,
    DownloadError,
    ForbiddenSource,
    TooLarge,
    UnsafeContent,
)
from lora_syncer.sources.fetch import RemoteFetcher
from lora_syncer.sources.fetch_s3 import S3Fetcher, S3Object
from lora_syncer.sources.retry import RetryPolicy
from lora_syncer.sources.uri import S3Source, parse_source, remote_source_allowed
from tests.support.sources_servers import ACCESS_KEY, SECRET_KEY, s3_client, s3_env

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FAST_RETRY = RetryPolicy(attempts=2, initial=0.01, max_delay=0.05)
BUCKET = "adapters"
OBJECTS = {
    "team/v1/adapter_config.json": b'{"r": 8}',
    "team/v1/adapter_model.safetensors": os.urandom(300_000),
    "team/v1/with space/ünï.txt": b"awkward",
    "team/v1/sub/": b"",  # a folder marker: skipped
    "team/v10/other.json": b"must not be fetched with v1",
    "elsewhere/x": b"x",
}


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Client:
    return s3_client(moto_endpoint, monkeypatch, BUCKET, OBJECTS)


def _src(text: str) -> S3Source:
    src = parse_source(text)
    assert isinstance(src, S3Source)
    return src


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _shell_digest(root: Path) -> str:
    pipeline = "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
    out = subprocess.run(
        ["bash", "-c", pipeline], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return "sha256:" + out.split()[0]


async def test_fetch_a_prefix(s3: S3Client, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    got = await S3Fetcher(concurrency=2, retry=FAST_RETRY).download(
        _src(f"s3://{BUCKET}/team/v1"), tmp_path, lambda d, t: seen.append((d, t))
    )
    files = _files(tmp_path)
    assert files == ["adapter_config.json", "adapter_model.safetensors", "with space/ünï.txt"]
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == OBJECTS[
        "team/v1/adapter_model.safetensors"
    ]
    # The streaming checksum equals the directory checksum and the documented shell pipeline.
    assert got.checksum == directory_checksum(tmp_path)
    assert str(got.checksum) == _shell_digest(tmp_path)
    total = sum(len(v) for k, v in OBJECTS.items() if k.startswith("team/v1/"))
    assert (got.files, got.size) == (3, total)
    assert seen[-1] == (total, total)


async def test_cache_verifies_and_publishes(s3: S3Client, tmp_path: Path) -> None:
    expected = tmp_path / "expected"
    expected.mkdir()
    await S3Fetcher(retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/team/v1/"), expected)
    checksum = str(directory_checksum(expected))
    cache = AdapterCache(tmp_path / "cache", RemoteFetcher(http=None, s3=S3Fetcher(retry=FAST_RETRY)))
    cache.open()
    v = await cache.ensure(f"s3://{BUCKET}/team/v1/", checksum)
    assert str(v.checksum) == checksum
    assert directory_checksum(v.path) == v.checksum
    assert v.path.with_name(v.name + MARKER_SUFFIX).is_file()


async def test_checksum_mismatch_publishes_nothing(s3: S3Client, tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path / "cache", RemoteFetcher(http=None, s3=S3Fetcher(retry=FAST_RETRY)))
    cache.open()
    with pytest.raises(ChecksumMismatch, match="checksum mismatch: declared sha256:0000"):
        await cache.ensure(f"s3://{BUCKET}/team/v1/", "sha256:" + "0" * 64)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [TMP_DIR]
    assert list((tmp_path / "cache" / TMP_DIR).iterdir()) == []


async def test_concurrent_declarations_share_one_listing(s3: S3Client, tmp_path: Path) -> None:
    fetcher = S3Fetcher(retry=FAST_RETRY)
    calls = 0
    real = fetcher.download

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    fetcher.download = counting  # type: ignore[method-assign,assignment]
    cache = AdapterCache(tmp_path / "cache", RemoteFetcher(http=None, s3=fetcher))
    cache.open()
    a, b = await asyncio.gather(*(cache.ensure(f"s3://{BUCKET}/team/v1/") for _ in range(2)))
    assert a == b
    assert calls == 1


async def test_errors_never_carry_credentials(s3: S3Client, tmp_path: Path) -> None:
    fetcher = S3Fetcher(retry=FAST_RETRY)
    with pytest.raises(DownloadError) as info:
        await fetcher.download(_src("s3://no-such-bucket/x/"), tmp_path)
    assert str(info.value) == "s3://no-such-bucket/x/: S3 error NoSuchBucket (HTTP 404)"
    with pytest.raises(DownloadError, match="no objects under this prefix") as empty:
        await fetcher.download(_src(f"s3://{BUCKET}/nothing/here/"), tmp_path)
    for exc in (info.value, empty.value):
        assert ACCESS_KEY not in str(exc) and SECRET_KEY not in str(exc)


async def test_unreachable_endpoint_is_a_transient_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in s3_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DownloadError, match="talking to S3") as info:
        await S3Fetcher(retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/team/v1/"), tmp_path)
    assert info.value.transient
    assert SECRET_KEY not in str(info.value)


async def test_limits_and_unsafe_keys(s3: S3Client, tmp_path: Path) -> None:
    with pytest.raises(TooLarge, match="byte limit"):
        await S3Fetcher(max_bytes=1000, retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/team/v1/"), tmp_path)
    with pytest.raises(TooLarge, match="more than 1 objects"):
        await S3Fetcher(max_files=1, retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/team/v1/"), tmp_path)
    s3.put_object(Bucket=BUCKET, Key="hostile/v1/a\\b", Body=b"x")
    with pytest.raises(UnsafeContent, match="newline or a backslash"):
        await S3Fetcher(retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/hostile/v1/"), tmp_path)
    assert _files(tmp_path) == []


async def test_fetcher_refuses_what_the_rules_refuse(s3: S3Client, tmp_path: Path) -> None:
    fetcher = S3Fetcher(allowed_sources=[f"s3://{BUCKET}/other"], retry=FAST_RETRY)
    with pytest.raises(ForbiddenSource, match=f"source s3://{BUCKET}/team/v1/ is not allowed"):
        await fetcher.download(_src(f"s3://{BUCKET}/team/v1/"), tmp_path)
    assert _files(tmp_path) == []


def test_allowed_sources_for_s3() -> None:
    assert remote_source_allowed(_src(f"s3://{BUCKET}/team/v1/"), [f"s3://{BUCKET}/team"])
    assert not remote_source_allowed(_src(f"s3://{BUCKET}/teamx/v1/"), [f"s3://{BUCKET}/team"])
    assert not remote_source_allowed(_src(f"s3://{BUCKET}/team/v1/"), ["https://models.corp"])
    assert not remote_source_allowed(_src("s3://other/x/"), [f"s3://{BUCKET}"])


def test_digest_command_downloads_an_s3_prefix(
    s3: S3Client, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["digest", f"s3://{BUCKET}/team/v1/"]) == 0
    printed = capsys.readouterr().out.strip()
    target = tmp_path / "copy"
    for key, data in OBJECTS.items():
        if key.startswith("team/v1/") and not key.endswith("/"):
            path = target / key.removeprefix("team/v1/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    assert printed == _shell_digest(target)


async def test_an_object_replaced_after_listing_fails_instead_of_mixing_versions(
    s3: S3Client, tmp_path: Path
) -> None:
    s3.put_object(Bucket=BUCKET, Key="race/v1/a", Body=b"first")
    s3.put_object(Bucket=BUCKET, Key="race/v1/b", Body=b"first")

    class Racing(S3Fetcher):
        async def list_objects(self, source: S3Source) -> list[S3Object]:
            listed = await super().list_objects(source)
            s3.put_object(Bucket=BUCKET, Key="race/v1/a", Body=b"second")
            return listed

    with pytest.raises(
        DownloadError, match=r"s3://adapters/race/v1/a: S3 error PreconditionFailed \(HTTP 412\)"
    ):
        await Racing(retry=FAST_RETRY).download(_src(f"s3://{BUCKET}/race/v1/"), tmp_path)
