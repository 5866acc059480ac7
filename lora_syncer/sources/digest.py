"""The `sha256:<hex>` checksum of an adapter.

- An archive: the sha256 of the archive file.
- A directory: the sha256 of the text lines `<file sha256 hex>  <relative path>\\n`, one per
  regular file, paths `/`-separated and sorted by byte. That is exactly what

      cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum

  prints. Symlinks, other non-regular files and names containing a newline or a backslash are
  refused (sha256sum escapes such names, so the recipe would no longer be plain); an empty
  directory is refused too (there is nothing to verify).

`DirectoryDigest` is the streaming form: feed it each file's hash as the file is written (an
S3 download) and read the result at the end.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from lora_syncer.sources.errors import InvalidSource, UnsafeContent

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checksum:
    hex: str

    def __str__(self) -> str:
        return PREFIX + self.hex


def parse_checksum(text: str) -> Checksum:
    """`sha256:<64 hex>` (hex case-insensitive). Raises InvalidSource."""
    value = text.strip()
    if not value.startswith(PREFIX):
        raise InvalidSource(f"checksum {text!r}: expected 'sha256:<64 hex digits>'")
    hex_part = value[len(PREFIX) :].lower()
    if not _HEX.fullmatch(hex_part):
        raise InvalidSource(f"checksum {text!r}: expected 64 hex digits after 'sha256:'")
    return Checksum(hex_part)


def check_relative_name(rel: str) -> None:
    """Refuse a relative file name the recipe cannot represent plainly, or that could escape."""
    if not rel or rel.startswith("/"):
        raise UnsafeContent(f"{rel!r}: file names must be relative and non-empty")
    if "\n" in rel or "\\" in rel:
        raise UnsafeContent(f"{rel!r}: file names must not contain a newline or a backslash")
    if any(seg in ("", ".", "..") for seg in rel.split("/")):
        raise UnsafeContent(f"{rel!r}: file names must not contain empty, '.' or '..' segments")


class DirectoryDigest:
    """Accumulates (relative path, file sha256) pairs in any order; `result()` sorts them."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}

    def add(self, rel: str, file_hex: str) -> None:
        check_relative_name(rel)
        if rel in self._files:
            raise UnsafeContent(f"{rel!r}: the same file name appears twice")
        self._files[rel] = file_hex

    def __len__(self) -> int:
        return len(self._files)

    def result(self) -> Checksum:
        if not self._files:
            raise UnsafeContent("the adapter has no files")
        outer = hashlib.sha256()
        # Byte order, as `LC_ALL=C sort`; surrogateescape keeps undecodable names' raw bytes.
        for rel in sorted(self._files, key=os.fsencode):
            outer.update(self._files[rel].encode("ascii") + b"  " + os.fsencode(rel) + b"\n")
        return Checksum(outer.hexdigest())


def file_sha256(path: Path) -> str:
    """The hex sha256 of one file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def archive_checksum(path: Path) -> Checksum:
    return Checksum(file_sha256(path))


def _walk(root: Path, rel: str, digest: DirectoryDigest) -> None:
    with os.scandir(root / rel if rel else root) as entries:
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeContent(f"{child!r}: symlinks are refused")
            if stat.S_ISDIR(mode):
                _walk(root, child, digest)
            elif stat.S_ISREG(mode):
                check_relative_name(child)
                digest.add(child, file_sha256(Path(entry.path)))
            else:
                raise UnsafeContent(f"{child!r}: only regular files and directories are allowed")


def directory_checksum(root: Path) -> Checksum:
    """The checksum of a directory tree (see the module docstring). Raises UnsafeContent."""
    if root.is_symlink() or not root.is_dir():
        raise InvalidSource(f"{root}: not a directory")
    digest = DirectoryDigest()
    _walk(root, "", digest)
    return digest.result()


def tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
