"""WatchedFile keeps the last good parse in force whatever happens to the file."""

from __future__ import annotations

from pathlib import Path

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
from lora_syncer.config.source import MAX_FILE_BYTES, WatchedFile
from lora_syncer.kubelet import ConfigMapVolume

GOOD = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: a, source: s}\n"
GOOD2 = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: b, source: s}\n"


def make(tmp_path: Path) -> tuple[ConfigMapVolume, WatchedFile[AdaptersConfig]]:
    vol = ConfigMapVolume(tmp_path / "cm")
    return vol, WatchedFile(vol.path("configmap.yaml"), parse_adapters)


class TestWatchedFile:
    async def test_changed_then_unchanged(self, tmp_path: Path) -> None:
        """A new good file is `changed`; the same content again is `unchanged`."""
        vol, wf = make(tmp_path)
        vol.write({"configmap.yaml": GOOD})
        assert await wf.reload() == "changed"
        first = wf.current
        vol.write({"configmap.yaml": GOOD})  # a new kubelet swap of identical content
        assert await wf.reload() == "unchanged"
        assert wf.current is first

    async def test_bad_file_keeps_last_good(self, tmp_path: Path) -> None:
        """Invalid YAML, a missing file, binary and oversized content all keep the last good value."""
        vol, wf = make(tmp_path)
        vol.write({"configmap.yaml": GOOD})
        await wf.reload()
        good = wf.current
        assert good is not None
        for content in ["vLLMLoRAConfig: [", b"\x00\xff\xfe", "x" * (MAX_FILE_BYTES + 10)]:
            vol.write({"configmap.yaml": content})
            assert await wf.reload() == "error"
            assert wf.current is good
            assert wf.error is not None
        vol.remove_key("configmap.yaml")
        assert await wf.reload() == "error"
        assert wf.error is not None and "file not found" in str(wf.error)
        assert wf.current is good
        vol.write({"configmap.yaml": GOOD2})
        assert await wf.reload() == "changed"
        assert wf.error is None
        assert wf.current is not None and wf.current.value.ensure_exist[0].id == "b"

    async def test_missing_at_start(self, tmp_path: Path) -> None:
        """A file missing at start gives an error and no value; it loads when it appears."""
        vol, wf = make(tmp_path)
        assert await wf.reload() == "error"
        assert wf.current is None
        vol.write({"configmap.yaml": GOOD})
        assert await wf.reload() == "changed"

    def test_reload_sync(self, tmp_path: Path) -> None:
        """The synchronous variant behaves the same for command-line tools."""
        vol, wf = make(tmp_path)
        vol.write({"configmap.yaml": GOOD})
        assert wf.reload_sync() == "changed"
        assert wf.reload_sync() == "unchanged"


class TestFileErrors:
    async def test_missing_file_names_the_file_and_says_nothing_is_in_force_yet(self, tmp_path: Path) -> None:
        """At start-up there is no last good file to keep: the message says so, and names the file."""
        _, wf = make(tmp_path)
        assert await wf.reload() == "error"
        assert wf.error is not None
        assert wf.error.summary() == (
            f"{wf.path}: error: file not found; there is no last good configuration yet"
        )

    async def test_missing_after_a_good_file_keeps_the_last_good(self, tmp_path: Path) -> None:
        vol, wf = make(tmp_path)
        vol.write({"configmap.yaml": GOOD})
        await wf.reload()
        vol.remove_key("configmap.yaml")
        assert await wf.reload() == "error"
        assert wf.error is not None
        assert wf.error.summary() == (
            f"{wf.path}: error: file not found; keeping the last good configuration in force"
        )

    async def test_unreadable_file_names_the_file(self, tmp_path: Path) -> None:
        """A directory where the file should be cannot be read: `<file>: error: cannot read file: ...`."""
        (tmp_path / "cm").mkdir()
        target = tmp_path / "cm" / "configmap.yaml"
        target.mkdir()
        wf = WatchedFile(target, parse_adapters)
        assert await wf.reload() == "error"
        assert wf.error is not None
        summary = wf.error.summary()
        assert summary.startswith(f"{target}: error: cannot read file: ") and "<input>" not in summary
