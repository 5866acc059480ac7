"""HTTP archive downloads and the version cache, against a local aiohttp file server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.sources.cache import MARKER_SUFFIX, TMP_DIR, AdapterCache, version_name
from lora_syncer.sources.digest import Checksum, archive_checksum, directory_checksum
from lora_syncer.sources.errors import ChecksumMismatch, DownloadError, ForbiddenSource, TooLarge
from lora_syncer.sources.fetch import RemoteFetcher
from lora_syncer.sources.fetch_http import HttpFetcher
from lora_syncer.sources.retry import RetryPolicy
from lora_syncer.sources.uri import ArchiveSource, parse_source
from tests.support.sources_servers import FileServer, tar_gz
from tests.support.wait import eventually

FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, max_delay=0.05)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


ADAPTER = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"\x00" * 5000}
TGZ = tar_gz(ADAPTER)


def _sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[FileServer]:
    srv = FileServer(files={"/a/adapter.tar.gz": TGZ, "/a/adapter.zip": _zip(ADAPTER)})
    await srv.start()
    yield srv
    await srv.stop()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


def _archive(url: str) -> ArchiveSource:
    src = parse_source(url)
    assert isinstance(src, ArchiveSource)
    return src


def _cache(root: Path, session: aiohttp.ClientSession, rules: tuple[str, ...], **kw: object) -> AdapterCache:
    http = HttpFetcher(session, allowed_sources=rules, retry=FAST_RETRY)
    cache = AdapterCache(root, RemoteFetcher(http=http, s3=None), **kw)  # type: ignore[arg-type]
    cache.open()
    return cache


async def test_download_reports_progress_and_checksum(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    got = await HttpFetcher(session, allowed_sources=[server.url("/")], retry=FAST_RETRY).download(
        _archive(server.url("/a/adapter.tar.gz")), tmp_path / "f", lambda d, t: seen.append((d, t))
    )
    assert str(got.checksum) == _sha(TGZ) == str(archive_checksum(tmp_path / "f"))
    assert got.etag == '"v1"'
    assert seen[-1] == (len(TGZ), len(TGZ))


async def test_gzip_content_encoding_is_not_undone(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.gzip_encoded.add("/a/adapter.tar.gz")
    got = await HttpFetcher(session, allowed_sources=[server.url("/")], retry=FAST_RETRY).download(
        _archive(server.url("/a/adapter.tar.gz")), tmp_path / "f"
    )
    assert str(got.checksum) == _sha(TGZ)
    assert (tmp_path / "f").read_bytes() == TGZ


async def test_redirect_within_allowed_sources_is_followed(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.redirects["/r/adapter.tar.gz"] = "/a/adapter.tar.gz"
    rules = [server.url("/r"), server.url("/a")]
    got = await HttpFetcher(session, allowed_sources=rules, retry=FAST_RETRY).download(
        _archive(server.url("/r/adapter.tar.gz")), tmp_path / "f"
    )
    assert str(got.checksum) == _sha(TGZ)


async def test_redirect_to_a_disallowed_host_is_refused(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Same server under another host name: the hop must be refused before it is requested.
    server.redirects["/r/adapter.tar.gz"] = server.url(
        "/a/adapter.tar.gz?X-Amz-Signature=SECRET", host="localhost"
    )
    fetcher = HttpFetcher(session, allowed_sources=[server.url("/")], retry=FAST_RETRY)
    with pytest.raises(ForbiddenSource) as info:
        await fetcher.download(_archive(server.url("/r/adapter.tar.gz")), tmp_path / "f")
    assert str(info.value) == (
        f"redirect to http://localhost:{server.port}/a/adapter.tar.gz?… is not allowed by --allowed-sources"
    )
    assert server.requests["/a/adapter.tar.gz"] == 0


async def test_redirect_outside_the_path_prefix_is_refused(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.redirects["/r/adapter.tar.gz"] = "/a/adapter.tar.gz"
    fetcher = HttpFetcher(session, allowed_sources=[server.url("/r")], retry=FAST_RETRY)
    with pytest.raises(ForbiddenSource, match="redirect to"):
        await fetcher.download(_archive(server.url("/r/adapter.tar.gz")), tmp_path / "f")
    assert server.requests["/a/adapter.tar.gz"] == 0


@pytest.mark.parametrize("chunked", [False, True])
async def test_size_limit(
    chunked: bool, server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    if chunked:
        server.chunked.add("/a/adapter.tar.gz")
    fetcher = HttpFetcher(
        session, allowed_sources=[server.url("/")], max_bytes=len(TGZ) - 1, retry=FAST_RETRY
    )
    with pytest.raises(TooLarge, match=f"{len(TGZ) - 1}-byte limit"):
        await fetcher.download(_archive(server.url("/a/adapter.tar.gz")), tmp_path / "f")
    assert server.requests["/a/adapter.tar.gz"] == 1


async def test_transient_errors_are_retried_and_404_is_not(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.failures["/a/adapter.tar.gz"] = 2
    fetcher = HttpFetcher(session, allowed_sources=[server.url("/")], retry=FAST_RETRY)
    got = await fetcher.download(_archive(server.url("/a/adapter.tar.gz")), tmp_path / "f")
    assert str(got.checksum) == _sha(TGZ)
    assert server.requests["/a/adapter.tar.gz"] == 3
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        await fetcher.download(_archive(server.url("/missing.tgz")), tmp_path / "g")
    assert not info.value.transient
    assert server.requests["/missing.tgz"] == 1


async def test_cache_publishes_with_a_marker_beside_the_directory(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    url = server.url("/a/adapter.zip")
    v = await cache.ensure(url, _sha(server.files["/a/adapter.zip"]))
    assert v.path == tmp_path / "cache" / version_name(url, Checksum(v.checksum.hex))
    assert (v.path / "adapter_config.json").read_bytes() == ADAPTER["adapter_config.json"]
    marker = v.path.with_name(v.name + MARKER_SUFFIX)
    assert json.loads(marker.read_text())["checksum"] == str(v.checksum)
    assert not list(v.path.glob("*.complete"))
    assert list((tmp_path / "cache" / TMP_DIR).iterdir()) == []
    assert str(directory_checksum(v.path)).startswith("sha256:")  # regular files only, no links
    # Declared again: no second request.
    assert await cache.ensure(url, _sha(server.files["/a/adapter.zip"])) == v
    assert server.requests["/a/adapter.zip"] == 1


async def test_checksum_mismatch_publishes_nothing(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumMismatch) as info:
        await cache.ensure(server.url("/a/adapter.tar.gz"), wrong)
    assert str(info.value) == (
        f"{server.url('/a/adapter.tar.gz')}: checksum mismatch: declared {wrong}, content is {_sha(TGZ)}"
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [TMP_DIR]
    assert list((tmp_path / "cache" / TMP_DIR).iterdir()) == []
    assert cache.versions() == []


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param((), "plain http:// needs an --allowed-sources rule", id="plain-http-needs-a-rule"),
        pytest.param(("https://models.corp",), "is not allowed by --allowed-sources", id="forbidden-source"),
    ],
)
async def test_refused_source_through_the_cache_is_never_requested(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path, rules: tuple[str, ...], message: str
) -> None:
    cache = _cache(tmp_path / "cache", session, rules)
    with pytest.raises(ForbiddenSource, match=message):
        await cache.ensure(server.url("/a/adapter.tar.gz"))
    assert server.requests["/a/adapter.tar.gz"] == 0


async def test_two_concurrent_declarations_share_one_download(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.hold = asyncio.Event()
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    url = server.url("/a/adapter.tar.gz")
    first = asyncio.create_task(cache.ensure(url))
    second = asyncio.create_task(cache.ensure(url))
    # Both callers are waiting once the server holds the first request's body.
    for _ in range(500):
        if server.requests["/a/adapter.tar.gz"] >= 1:
            break
        await asyncio.sleep(0.02)
    assert not first.done() and not second.done()
    server.hold.set()
    a, b = await asyncio.gather(first, second)
    assert a == b
    assert server.requests["/a/adapter.tar.gz"] == 1


async def test_unpinned_source_is_not_resolved_again_until_gone(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    url = server.url("/a/adapter.tar.gz")
    v1 = await _cache(root, session, (server.url("/"),)).ensure(url)
    assert (v1.checksum, v1.revision, v1.pinned) == (Checksum(_sha(TGZ)[7:]), '"v1"', False)
    # Content changes upstream; a restarted cache still serves the recorded version, no request.
    server.files["/a/adapter.tar.gz"] = tar_gz({"adapter_config.json": b'{"r": 16}'})
    server.etag = '"v2"'
    restarted = _cache(root, session, (server.url("/"),))
    assert await restarted.ensure(url) == v1
    assert server.requests["/a/adapter.tar.gz"] == 1
    # Gone from the cache: resolved again, to a new path (vLLM must never see new files at an old path).
    import shutil

    shutil.rmtree(v1.path)
    v2 = await restarted.ensure(url)
    assert v2.path != v1.path
    assert v2.revision == '"v2"'
    assert server.requests["/a/adapter.tar.gz"] == 2


async def test_start_removes_partials_and_unmarked_directories(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    url = server.url("/a/adapter.tar.gz")
    good = await _cache(root, session, (server.url("/"),)).ensure(url, _sha(TGZ))
    # What a kill mid-download leaves: a temp dir with a partial file, a renamed dir whose
    # marker was never written, and a marker whose directory is gone.
    partial = root / TMP_DIR / "dl-killed" / "content"
    partial.mkdir(parents=True)
    (partial / "adapter_model.safetensors").write_bytes(b"half")
    unmarked = root / version_name(url, Checksum("1" * 64))
    unmarked.mkdir()
    (unmarked / "adapter_config.json").write_text("{}")
    orphan = root / (version_name(url, Checksum("2" * 64)) + MARKER_SUFFIX)
    orphan.write_text("{}")
    foreign = root / "lost+found"
    foreign.mkdir()

    cache = AdapterCache(
        root, RemoteFetcher(http=HttpFetcher(session, allowed_sources=[server.url("/")]), s3=None)
    )
    report = cache.open()
    assert sorted(report.removed) == sorted([TMP_DIR, unmarked.name, orphan.name])
    assert report.versions == 1
    assert not unmarked.exists() and not orphan.exists()
    assert list((root / TMP_DIR).iterdir()) == []
    assert foreign.is_dir()
    assert await cache.ensure(url, _sha(TGZ)) == good
    assert server.requests["/a/adapter.tar.gz"] == 1


async def test_gc_never_touches_declared_or_listed_versions(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    now = [1000.0]
    root = tmp_path / "cache"
    for i in range(3):
        server.files[f"/v{i}.tar.gz"] = tar_gz({"w": bytes([i]) * 1000})
    cache = _cache(root, session, (server.url("/"),), max_bytes=1500, gc_grace=60.0, clock=lambda: now[0])
    declared = await cache.ensure(server.url("/v0.tar.gz"))
    listed = await cache.ensure(server.url("/v1.tar.gz"))
    idle = await cache.ensure(server.url("/v2.tar.gz"))

    cache.observe([str(listed.path)], now=now[0])
    report = await cache.collect([declared.name], now=now[0])
    assert report.deleted == ()  # idle is unlisted, but within its grace period
    assert report.overflow_bytes == 1500

    now[0] += 61
    cache.observe([str(listed.path)], now=now[0])
    report = await cache.collect([declared.name], now=now[0])
    assert report.deleted == (idle.name,)
    assert not idle.path.exists() and not idle.path.with_name(idle.name + MARKER_SUFFIX).exists()
    assert declared.path.is_dir() and listed.path.is_dir()
    assert (report.kept_bytes, report.overflow_bytes) == (2000, 500)
    assert report.as_dict()["overflow_bytes"] == 500

    # Unlisted by vLLM and undeclared: it goes only after its own grace period.
    cache.observe([], now=now[0])
    assert (await cache.collect([declared.name], now=now[0] + 59)).deleted == ()
    assert (await cache.collect([declared.name], now=now[0] + 60)).deleted == (listed.name,)
    assert declared.path.is_dir()


async def test_close_cancels_downloads_and_leaves_no_partial(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.hold = asyncio.Event()
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    url = server.url("/a/adapter.tar.gz")
    waiter = asyncio.create_task(cache.ensure(url))
    for _ in range(500):
        if server.requests["/a/adapter.tar.gz"] >= 1:
            break
        await asyncio.sleep(0.02)
    assert cache.downloading() == [url]
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cache.downloading() == []
    assert list((tmp_path / "cache" / TMP_DIR).iterdir()) == []
    assert cache.versions() == []


async def test_pinned_and_unpinned_declarations_of_one_content_share_one_version(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    url = server.url("/a/adapter.tar.gz")
    pinned, unpinned = await asyncio.gather(cache.ensure(url, _sha(TGZ)), cache.ensure(url))
    assert pinned.path == unpinned.path
    assert (pinned.path / "adapter_config.json").is_file()
    assert [v.name for v in cache.versions()] == [pinned.name]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [TMP_DIR, pinned.name, pinned.name + MARKER_SUFFIX]
    )


async def test_a_late_joiner_sees_the_bytes_already_downloaded(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Incompressible, so the archive spans many of the server's 64 KiB writes and the download
    # really stands still at half (a repeated pattern compressed to one write: the first download
    # could land before the joiner came, and the joiner then had nothing to join).
    big = tar_gz({"adapter_config.json": b"{}", "w": os.urandom(1 << 20)})
    assert len(big) > 4 * 65536
    server.files["/big.tar.gz"] = big
    server.midway = asyncio.Event()
    cache = _cache(tmp_path / "cache", session, (server.url("/"),))
    url = server.url("/big.tar.gz")
    first: list[tuple[int, int | None]] = []
    waiter = asyncio.create_task(cache.ensure(url, progress=lambda d, t: first.append((d, t))))
    for _ in range(1000):
        if first and first[-1][0] >= len(big) // 2:
            break
        await asyncio.sleep(0.01)
    assert first[-1] == (first[-1][0], len(big)) and first[-1][0] >= len(big) // 2
    second: list[tuple[int, int | None]] = []
    joiner = asyncio.create_task(cache.ensure(url, progress=lambda d, t: second.append((d, t))))
    # The server holds the rest of the body until `midway`, so the shared download stands still:
    # the joiner's first report must be where it stands, not 0 (a loaded machine may take a few ticks).
    await eventually(
        lambda: second,
        timeout=10.0,
        # On failure, say what the joiner and the shared download were doing.
        message=lambda: f"joiner {joiner!r}; first download {waiter!r}; first reports {first[-3:]}",
    )
    assert second[0] == first[-1]
    server.midway.set()
    a, b = await asyncio.gather(waiter, joiner)
    assert a == b and server.requests["/big.tar.gz"] == 1
    assert first[-1] == second[-1] == (len(big), len(big))


async def test_gc_evicts_only_over_the_budget_least_recently_used_first(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The issue's rule, exactly: removed only after unlisted for the grace, least recently used
    first, only to get under the budget; never without a budget; declared and listed kept."""
    now = [1000.0]
    for i in range(4):
        server.files[f"/v{i}.tar.gz"] = tar_gz({"w": bytes([i]) * 1000})
    urls = [server.url(f"/v{i}.tar.gz") for i in range(4)]

    # No budget: nothing is ever removed, however long unlisted.
    unbounded = _cache(tmp_path / "none", session, (server.url("/"),), gc_grace=60.0, clock=lambda: now[0])
    kept = [await unbounded.ensure(u) for u in urls]
    unbounded.observe([], now=now[0])
    assert (await unbounded.collect([], now=now[0] + 10**6)).deleted == ()
    assert all(v.path.is_dir() for v in kept)

    # A budget the versions fit in: nothing goes either.
    cache = _cache(
        tmp_path / "c", session, (server.url("/"),), max_bytes=10_000, gc_grace=60.0, clock=lambda: now[0]
    )
    vs = []
    for u in urls:
        vs.append(await cache.ensure(u))
        now[0] += 1  # v0 least recently used, v3 most
    cache.observe([str(vs[3].path)], now=now[0])
    report = await cache.collect([vs[2].name], now=now[0] + 10**6)
    assert report.deleted == () and report.overflow_bytes == 0

    # Over budget (4000 bytes > 3000): v2 is declared, v3 listed; v0 and v1 may go, least
    # recently used first and only as many as it takes. Not before their grace, though.
    cache._max_bytes = 3000
    assert (await cache.collect([vs[2].name], now=now[0] + 59)).deleted == ()
    report = await cache.collect([vs[2].name], now=now[0] + 60)
    assert report.deleted == (vs[0].name,)
    assert (report.kept_bytes, report.overflow_bytes) == (3000, 0)
    # A smaller budget: v1 goes too; the declared and listed versions stay, the excess is reported.
    cache._max_bytes = 1500
    report = await cache.collect([vs[2].name], now=now[0] + 61)
    assert report.deleted == (vs[1].name,)
    assert (report.kept_bytes, report.overflow_bytes) == (2000, 500)
    # vLLM stops listing v3: it goes once unlisted for the grace, not sooner.
    unlisted_at = now[0] + 100
    cache.observe([], now=unlisted_at)
    assert (await cache.collect([vs[2].name], now=unlisted_at + 59)).deleted == ()
    report = await cache.collect([vs[2].name], now=unlisted_at + 60)
    assert report.deleted == (vs[3].name,) and report.overflow_bytes == 0
    assert [v.path.is_dir() for v in vs] == [False, False, True, False]


async def test_downloads_at_once_are_bounded(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    for i in range(2):
        server.files[f"/d{i}.tar.gz"] = tar_gz({"w": os.urandom(300_000)})
    server.midway = asyncio.Event()
    cache = _cache(tmp_path / "cache", session, (server.url("/"),), max_downloads=1)
    first = cache.begin(server.url("/d0.tar.gz"))
    second = cache.begin(server.url("/d1.tar.gz"))
    assert first.task is not None and second.task is not None
    for _ in range(500):
        if first.done:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    # The first holds the only slot: the second has not even asked the server yet.
    assert server.requests["/d0.tar.gz"] == 1 and server.requests["/d1.tar.gz"] == 0
    assert sorted(cache.downloading()) == sorted([server.url("/d0.tar.gz"), server.url("/d1.tar.gz")])
    server.midway.set()
    await asyncio.gather(first.task, second.task)
    assert server.requests["/d1.tar.gz"] == 1 and len(cache.versions()) == 2
