"""The directory watcher sees kubelet-style ConfigMap updates, with inotify and by polling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lora_syncer.filewatch import FileWatcher
from lora_syncer.kubelet import ConfigMapVolume
from tests.support.wait import eventually


class TestFileWatcher:
    @pytest.mark.parametrize("mode", ["inotify", "poll"])
    async def test_sees_symlink_swap(self, tmp_path: Path, mode: str) -> None:
        """A `..data` swap (the file itself never changes in place) triggers the callback."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"configmap.yaml": "a: 1\n"})
        events: list[int] = []
        watcher = FileWatcher(
            vol.path("configmap.yaml"), lambda: events.append(1), mode=mode, poll_interval=0.05
        )
        await watcher.start()
        try:
            assert watcher.backend == mode
            await asyncio.sleep(0.1)
            events.clear()
            vol.write({"configmap.yaml": "a: 2\n"})
            await eventually(lambda: events)
            assert (tmp_path / "cm" / "configmap.yaml").read_text() == "a: 2\n"
        finally:
            await watcher.stop()

    async def test_directory_missing_at_start_falls_back_to_polling(self, tmp_path: Path) -> None:
        """When the mount directory does not exist yet, polling notices the file appearing."""
        events: list[int] = []
        target = tmp_path / "later" / "configmap.yaml"
        watcher = FileWatcher(target, lambda: events.append(1), mode="auto", poll_interval=0.05)
        await watcher.start()
        try:
            assert watcher.backend == "poll"
            ConfigMapVolume(tmp_path / "later").write({"configmap.yaml": "a: 1\n"})
            await eventually(lambda: events)
        finally:
            await watcher.stop()

    async def test_stop_is_clean(self, tmp_path: Path) -> None:
        """After stop, further swaps call nothing: a second watcher sees a swap the stopped one never does."""
        vol = ConfigMapVolume(tmp_path / "cm")
        vol.write({"k": "1"})
        stopped: list[int] = []
        first = FileWatcher(vol.path("k"), lambda: stopped.append(1))
        await first.start()
        await first.stop()
        stopped.clear()
        # The same kind of watcher on the same file: when it has seen the swap, a live first one
        # would have been told too.
        seen: list[int] = []
        second = FileWatcher(vol.path("k"), lambda: seen.append(1))
        await second.start()
        try:
            assert second.backend == first.backend
            seen.clear()
            vol.write({"k": "2"})
            await eventually(lambda: seen, message="the second watcher never saw the swap")
            await asyncio.sleep(0)  # let callbacks queued with the same event run
            assert stopped == []
        finally:
            await second.stop()
