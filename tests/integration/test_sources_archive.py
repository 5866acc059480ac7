"""Safe extraction against real crafted archives: every hostile case is refused, nothing escapes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lora_syncer.sources.archive import ArchiveLimits, extract_archive
from lora_syncer.sources.errors import TooLarge, UnsafeContent


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def _zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, outside): extraction goes to dest; nothing may ever appear in `outside`."""
    outside = tmp_path / "outside"
    dest = outside / "cache" / "dest"
    dest.mkdir(parents=True)
    return dest, outside


def _snapshot(outside: Path, dest: Path) -> set[str]:
    return {str(p) for p in outside.rglob("*") if dest not in (p, *p.parents)}


def test_good_tar_and_zip_extract(tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [
            (_info("./adapter", tarfile.DIRTYPE), None),
            (_info("./adapter/config.json"), b"{}"),
            (_info("w.bin"), b"12"),
        ],
    )
    got = extract_archive(archive, dest, "tar.gz")
    assert (got.files, got.bytes) == (2, 4)
    assert (dest / "adapter" / "config.json").read_bytes() == b"{}"

    zdest = tmp_path / "zdest"
    zdest.mkdir()
    zarchive = _zip(
        tmp_path / "ok.zip", [("d/", b"", None), ("d/a.bin", b"abc", 0o100644), ("b", b"x", None)]
    )
    assert extract_archive(zarchive, zdest, "zip").files == 2
    assert (zdest / "d" / "a.bin").read_bytes() == b"abc"


TAR_CASES: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "dotdot": ([(_info("../escape"), b"x")], "'..' is refused"),
    "nested dotdot": ([(_info("a/../../escape"), b"x")], "'..' is refused"),
    "absolute": ([(_info("/tmp/escape"), b"x")], "absolute paths are refused"),
    "symlink": ([(_info("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "links are refused"),
    "symlink then write through": (
        [(_info("d", tarfile.SYMTYPE, ".."), None), (_info("d/escape"), b"x")],
        "links are refused",
    ),
    "hardlink": (
        [(_info("f"), b"x"), (_info("h", tarfile.LNKTYPE, "/etc/passwd"), None)],
        "links are refused",
    ),
    "char device": ([(_info("dev", tarfile.CHRTYPE), None)], "device files, fifos"),
    "block device": ([(_info("dev", tarfile.BLKTYPE), None)], "device files, fifos"),
    "fifo": ([(_info("fifo", tarfile.FIFOTYPE), None)], "device files, fifos"),
    "backslash": ([(_info("..\\escape"), b"x")], "newline or a backslash"),
    "duplicate": ([(_info("a"), b"1"), (_info("a"), b"2")], "appears twice"),
    "empty": ([(_info("d", tarfile.DIRTYPE), None)], "no files"),
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_hostile_tar_is_refused(case: str, tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, outside = sandbox
    members, needle = TAR_CASES[case]
    before = _snapshot(outside, dest)
    with pytest.raises(UnsafeContent) as info:
        extract_archive(_tar(tmp_path / "bad.tar.gz", members), dest, "tar.gz")
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert _snapshot(outside, dest) == before
    assert not (tmp_path / "escape").exists()
    assert list(dest.iterdir()) == []


ZIP_CASES: dict[str, tuple[list[tuple[str, bytes, int | None]], str]] = {
    "dotdot": ([("../escape", b"x", None)], "'..' is refused"),
    "absolute": ([("/tmp/escape", b"x", None)], "absolute paths are refused"),
    "drive letter": ([("C:/escape", b"x", None)], "absolute paths are refused"),
    "symlink": ([("link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "links are refused"),
    "fifo": ([("fifo", b"", stat.S_IFIFO | 0o644)], "device files, fifos"),
    "char device": ([("dev", b"", stat.S_IFCHR | 0o644)], "device files, fifos"),
    "duplicate": ([("a", b"1", None), ("a", b"2", None)], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_hostile_zip_is_refused(case: str, tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, outside = sandbox
    entries, needle = ZIP_CASES[case]
    before = _snapshot(outside, dest)
    with pytest.warns(UserWarning, match="Duplicate name") if case == "duplicate" else _no_warning():
        archive = _zip(tmp_path / "bad.zip", entries)
    with pytest.raises(UnsafeContent) as info:
        extract_archive(archive, dest, "zip")
    assert needle in str(info.value)
    assert _snapshot(outside, dest) == before
    assert list(dest.iterdir()) == []


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


BombMaker = Callable[[Path], Path]


def _tar_bomb(path: Path) -> Path:
    # 16 MiB of zeros compresses to a few KiB.
    return _tar(path, [(_info("zeros"), bytes(16 * 1024 * 1024))])


def _zip_bomb(path: Path) -> Path:
    return _zip(path, [("zeros", bytes(16 * 1024 * 1024), None)])


@pytest.mark.parametrize(("maker", "fmt"), [(_tar_bomb, "tar.gz"), (_zip_bomb, "zip")])
def test_size_bomb_is_refused(maker: BombMaker, fmt: str, tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    archive = maker(tmp_path / f"bomb.{fmt}")
    assert archive.stat().st_size < 1024 * 1024
    with pytest.raises(TooLarge, match="expands to more than 1048576 bytes"):
        extract_archive(archive, dest, fmt, ArchiveLimits(max_bytes=1024 * 1024))  # type: ignore[arg-type]
    assert list(dest.iterdir()) == []


def test_zip_that_lies_about_its_size_is_stopped_by_bytes_written(
    tmp_path: Path, sandbox: tuple[Path, Path]
) -> None:
    dest, _ = sandbox
    archive = _zip(tmp_path / "liar.zip", [("zeros", bytes(4 * 1024 * 1024), None)])
    # Rewrite the declared uncompressed size (central directory and local header) to 10 bytes.
    raw = bytearray(archive.read_bytes())
    real = (4 * 1024 * 1024).to_bytes(4, "little")
    raw[:] = raw.replace(real, (10).to_bytes(4, "little"))
    archive.write_bytes(bytes(raw))
    with pytest.raises((TooLarge, UnsafeContent)):
        extract_archive(archive, dest, "zip", ArchiveLimits(max_bytes=1024 * 1024))
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_file_count_bomb_is_refused(fmt: str, tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    if fmt == "zip":
        archive = _zip(tmp_path / "many.zip", [(f"f{i}", b"", None) for i in range(50)])
    else:
        archive = _tar(tmp_path / "many.tar.gz", [(_info(f"f{i}"), b"") for i in range(50)])
    with pytest.raises(TooLarge, match="more than 10 files"):
        extract_archive(archive, dest, fmt, ArchiveLimits(max_files=10))  # type: ignore[arg-type]
    assert list(dest.iterdir()) == []


def test_garbage_is_not_an_archive(tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    dest, _ = sandbox
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(UnsafeContent, match=r"not a valid \.tar\.gz archive"):
        extract_archive(junk, dest, "tar.gz")
    with pytest.raises(UnsafeContent, match=r"not a valid \.zip archive"):
        extract_archive(junk, dest, "zip")
