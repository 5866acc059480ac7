"""Write a directory exactly the way kubelet updates a ConfigMap volume.

Layout: `..<timestamp>/` holds the real files, `..data -> ..<timestamp>`, and one symlink per
key `<key> -> ..data/<key>`. An update writes a new timestamped directory, points
`..data_tmp` at it, renames `..data_tmp` over `..data` (the one atomic step), adds/removes the
per-key symlinks, then deletes the old directory. The demo and the tests use this so the
watcher sees what it sees in a pod.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path


class ConfigMapVolume:
    """A directory managed like a ConfigMap volume mount."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter = 0

    def path(self, key: str) -> Path:
        return self.directory / key

    def _new_dir_name(self) -> str:
        self._counter += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        return f"..{stamp}.{time.time_ns() % 1_000_000_000:09d}{self._counter:03d}"

    def write(self, files: Mapping[str, str | bytes]) -> None:
        """Atomically replace the whole set of keys with `files`."""
        data_link = self.directory / "..data"
        old_target = os.readlink(data_link) if data_link.is_symlink() else None
        new_dir = self.directory / self._new_dir_name()
        new_dir.mkdir()
        for key, content in files.items():
            target = new_dir / key
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        tmp_link = self.directory / "..data_tmp"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, data_link)
        for key in files:
            link = self.directory / key
            if not link.is_symlink():
                if link.exists():
                    link.unlink()
                os.symlink(f"..data/{key}", link)
        # Keys that disappeared lose their symlink, as kubelet does.
        for entry in self.directory.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
                entry.unlink()
        if old_target is not None and old_target != new_dir.name:
            shutil.rmtree(self.directory / old_target, ignore_errors=True)

    def remove_key(self, key: str) -> None:
        """The ConfigMap lost `key` (or was deleted): the file disappears."""
        current = self.read_all()
        current.pop(key, None)
        self.write(current)

    def read_all(self) -> dict[str, str | bytes]:
        data = self.directory / "..data"
        if not data.exists():
            return {}
        return {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
