"""`ConfigMapVolume` writes a directory the way kubelet updates a ConfigMap volume."""

from __future__ import annotations

import os
from pathlib import Path

from lora_syncer.kubelet import ConfigMapVolume


def _timestamped(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith("..2") and p.is_dir() and not p.is_symlink()
    )


class TestConfigMapVolume:
    def test_first_write_builds_the_kubelet_layout(self, tmp_path: Path) -> None:
        """A write makes `..<timestamp>/` with the files, `..data` pointing at it, and `<key> -> ..data/<key>`."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": "a: 1\n"})
        d = tmp_path / "cm"
        dirs = _timestamped(d)
        assert len(dirs) == 1
        assert os.readlink(d / "..data") == dirs[0]
        assert os.readlink(d / "configmap.yaml") == "..data/configmap.yaml"
        assert (d / dirs[0] / "configmap.yaml").read_text() == "a: 1\n"
        assert vol.path("configmap.yaml").read_text() == "a: 1\n"
        assert not (d / "..data_tmp").exists() and not (d / "..data_tmp").is_symlink()

    def test_update_swaps_data_and_removes_the_old_directory(self, tmp_path: Path) -> None:
        """An update points `..data` at a new directory, deletes the old one, and leaves the key symlink as it was."""
        vol = ConfigMapVolume(tmp_path / "cm")
        d = tmp_path / "cm"
        vol.write({"configmap.yaml": "v: 1\n"})
        first = os.readlink(d / "..data")
        link_inode = os.lstat(d / "configmap.yaml").st_ino
        file_inode = os.stat(d / "configmap.yaml").st_ino
        vol.write({"configmap.yaml": "v: 2\n"})
        second = os.readlink(d / "..data")
        assert second != first
        assert _timestamped(d) == [second]  # the old directory is gone
        assert os.lstat(d / "configmap.yaml").st_ino == link_inode  # the user's path never changes itself
        assert os.stat(d / "configmap.yaml").st_ino != file_inode  # what it resolves to does
        assert vol.path("configmap.yaml").read_text() == "v: 2\n"

    def test_many_quick_updates_get_distinct_directories(self, tmp_path: Path) -> None:
        """Updates within the same second still get distinct timestamped directories, and only the last survives."""
        vol = ConfigMapVolume(tmp_path / "cm")
        for i in range(20):
            vol.write({"configmap.yaml": f"i: {i}\n"})
        assert len(_timestamped(tmp_path / "cm")) == 1
        assert vol.path("configmap.yaml").read_text() == "i: 19\n"

    def test_remove_key_drops_the_file_and_keeps_other_keys(self, tmp_path: Path) -> None:
        """Removing a key removes its symlink (the file disappears); other keys stay readable."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": "a: 1\n", "rules.yaml": "r: 1\n"})
        vol.remove_key("configmap.yaml")
        assert not vol.path("configmap.yaml").exists() and not vol.path("configmap.yaml").is_symlink()
        assert vol.path("rules.yaml").read_text() == "r: 1\n"
        assert vol.read_all() == {"rules.yaml": b"r: 1\n"}
        vol.write({"configmap.yaml": "a: 2\n", "rules.yaml": "r: 1\n"})
        assert vol.path("configmap.yaml").read_text() == "a: 2\n"

    def test_bytes_are_written_verbatim(self, tmp_path: Path) -> None:
        """Bytes content (e.g. a binary file) is written as is."""
        vol = ConfigMapVolume(tmp_path / "cm")
        raw = b"\xff\xfe\x00binary"
        vol.write({"configmap.yaml": raw})
        assert vol.path("configmap.yaml").read_bytes() == raw
        assert vol.read_all() == {"configmap.yaml": raw}

    def test_read_all_of_an_empty_volume(self, tmp_path: Path) -> None:
        """A volume never written holds no keys."""
        assert ConfigMapVolume(tmp_path / "cm").read_all() == {}
