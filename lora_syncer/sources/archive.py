"""Safe extraction of .tar.gz / .tgz / .zip adapter archives into a given directory.

Only regular files and directories are extracted. Refused, with a one-line reason: absolute
names, `..` segments, backslashes and newlines in names, symlinks, hard links, device files,
fifos, encrypted zip entries, duplicate names, more than `max_files` files or more than
`max_bytes` uncompressed bytes (counted as written, not as the archive claims). Files are
created with O_EXCL|O_NOFOLLOW below `dest`, so nothing is written outside it. On any error
the partial contents of `dest` are removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lora_syncer.sources.digest import check_relative_name
from lora_syncer.sources.errors import SourceError, TooLarge, UnsafeContent
from lora_syncer.sources.uri import ArchiveFormat

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 20 * 1024**3
    max_files: int = 10_000


@dataclass(frozen=True)
class Extracted:
    files: int
    bytes: int


def format_of(name: str) -> ArchiveFormat | None:
    lowered = name.lower()
    if lowered.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lowered.endswith(".zip"):
        return "zip"
    return None


def _clean_name(raw: str) -> str:
    """The entry's relative name, `./` prefixes dropped; raises UnsafeContent."""
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafeContent(f"archive entry {raw!r}: absolute paths are refused")
    name = raw
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return ""
    if ".." in name.split("/"):
        raise UnsafeContent(f"archive entry {raw!r}: '..' is refused")
    check_relative_name(name)
    return name


class _Writer:
    """Creates directories and files below `dest`, enforcing the limits on bytes actually written."""

    def __init__(self, dest: Path, limits: ArchiveLimits) -> None:
        self.dest = dest
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def directory(self, name: str) -> None:
        if name:
            self._mkdirs(name.split("/"))

    def _mkdirs(self, parts: list[str]) -> Path:
        path = self.dest
        for part in parts:
            path = path / part
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                # An earlier entry may have made it; anything but a real directory is a clash.
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise UnsafeContent(f"archive entry {'/'.join(parts)!r}: clashes with a file") from None
        return path

    def file(self, name: str, stream: IO[bytes]) -> None:
        if not name:
            raise UnsafeContent("archive entry with an empty name")
        self.files += 1
        if self.files > self.limits.max_files:
            raise TooLarge(f"archive has more than {self.limits.max_files} files")
        parts = name.split("/")
        parent = self._mkdirs(parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(parent / parts[-1], flags, 0o644)
        except FileExistsError:
            raise UnsafeContent(f"archive entry {name!r}: appears twice") from None
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.limits.max_bytes:
                    raise TooLarge(f"archive expands to more than {self.limits.max_bytes} bytes")
                out.write(chunk)


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tf
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeContent(f"not a valid .tar.gz archive: {exc}") from None


def _extract_tar(archive: Path, writer: _Writer) -> None:
    try:
        # Stream mode: one pass, members are never all held in memory.
        tf = tarfile.open(archive, mode="r|gz")  # noqa: SIM115 - closed by `with tf:` below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeContent(f"not a valid .tar.gz archive: {exc}") from None
    with tf:
        for member in _tar_members(tf):
            name = _clean_name(member.name)
            if member.issym() or member.islnk():
                raise UnsafeContent(f"archive entry {member.name!r}: links are refused")
            if member.isdir():
                writer.directory(name)
            elif member.isreg():
                stream = tf.extractfile(member)
                if stream is None:
                    raise UnsafeContent(f"archive entry {member.name!r}: cannot be read")
                try:
                    writer.file(name, stream)
                except (tarfile.TarError, EOFError, OSError) as exc:
                    if isinstance(exc, FileExistsError | PermissionError):
                        raise
                    raise UnsafeContent(
                        f"archive entry {member.name!r}: truncated or corrupt: {exc}"
                    ) from None
            else:
                raise UnsafeContent(
                    f"archive entry {member.name!r}: device files, fifos and other special files are refused"
                )


def _extract_zip(archive: Path, writer: _Writer) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeContent(f"not a valid .zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        # Cheap refusals first, from what the archive claims; the writer re-checks real bytes.
        if sum(1 for i in infos if not i.is_dir()) > writer.limits.max_files:
            raise TooLarge(f"archive has more than {writer.limits.max_files} files")
        if sum(i.file_size for i in infos) > writer.limits.max_bytes:
            raise TooLarge(f"archive expands to more than {writer.limits.max_bytes} bytes")
        for info in infos:
            name = _clean_name(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise UnsafeContent(f"archive entry {info.filename!r}: links are refused")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeContent(
                    f"archive entry {info.filename!r}: device files, fifos and other special files are refused"
                )
            if info.flag_bits & 0x1:
                raise UnsafeContent(f"archive entry {info.filename!r}: encrypted entries are refused")
            if info.is_dir() or kind == stat.S_IFDIR:
                writer.directory(name)
                continue
            try:
                with zf.open(info) as stream:
                    writer.file(name, stream)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise UnsafeContent(
                    f"archive entry {info.filename!r}: corrupt or unsupported: {exc}"
                ) from None


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def extract_archive(
    archive: Path, dest: Path, fmt: ArchiveFormat, limits: ArchiveLimits | None = None
) -> Extracted:
    """Extract `archive` into the existing empty directory `dest`. Raises SourceError subclasses."""
    writer = _Writer(dest, limits or ArchiveLimits())
    try:
        if fmt == "zip":
            _extract_zip(archive, writer)
        else:
            _extract_tar(archive, writer)
        if writer.files == 0:
            raise UnsafeContent("archive has no files")
    except SourceError:
        _empty(dest)
        raise
    except OSError as exc:
        _empty(dest)
        raise UnsafeContent(f"cannot extract archive: {exc.strerror or exc}") from None
    return Extracted(files=writer.files, bytes=writer.bytes)
