"""The shared reloading file against real files swapped the way kubelet swaps them.

Used by both the adapters file and the proxy's rules file: a `..data` swap is seen, a burst of
swaps costs at most one extra read, a bad file keeps the last good one, and each rejected edit
is logged exactly once however often it is re-read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs
from sync_harness import SyncEnv, adapters_yaml, eventually, metric_value

from lora_syncer.config.adapters import AdaptersConfig, parse_adapters
from lora_syncer.config.source import Loaded, ReloadOutcome
from lora_syncer.kubelet import ConfigMapVolume
from lora_syncer.reloading import ReloadingFile, WatchOptions, Wording
from lora_syncer.supervisor import Supervisor

KEY = "configmap.yaml"
WORDING = Wording(
    rejected_keeping="rejected; keeping", rejected_nothing="rejected; nothing yet", valid_again="valid again"
)


def good(n: int) -> str:
    return adapters_yaml([(f"a-{n}", f"org/a-{n}")])


BAD_A = "vLLMLoRAConfig: [\n"
BAD_B = "vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - {id: x}\n"


class Recorder:
    """A `ReloadMetrics` that remembers what it was told."""

    def __init__(self) -> None:
        self.outcomes: list[ReloadOutcome] = []
        self.validity: list[bool] = []
        self.good_at: list[float] = []

    def reloaded(self, outcome: ReloadOutcome) -> None:
        self.outcomes.append(outcome)

    def valid(self, ok: bool) -> None:
        self.validity.append(ok)

    def good(self, at: float) -> None:
        self.good_at.append(at)


class CountingFile(ReloadingFile[AdaptersConfig]):
    """Counts the reload requests the watcher and the resync make."""

    requests = 0

    def request(self) -> None:
        self.requests += 1
        super().request()


class Rig:
    def __init__(self, tmp_path: Path, mode: str, resync: float) -> None:
        self.volume = ConfigMapVolume(tmp_path / "cm")
        self.metrics = Recorder()
        self.changes: list[Loaded[AdaptersConfig]] = []
        self.supervisor = Supervisor()
        self.file = CountingFile(
            self.volume.path(KEY),
            parse_adapters,
            name="test-file",
            wording=WORDING,
            metrics=self.metrics,
            options=WatchOptions(mode=mode, poll_interval=0.05, resync_interval=resync),
            on_change=self.changes.append,
        )

    def ids(self) -> set[str]:
        current = self.file.current
        return {a.id for a in current.value.ensure_exist} if current else set()


@pytest_asyncio.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[list[Rig]]:
    rigs: list[Rig] = []
    yield rigs
    for rig in rigs:
        await rig.file.stop()
        await rig.supervisor.stop()
        assert rig.supervisor.dead() == {}


async def started(rigs: list[Rig], tmp_path: Path, *, mode: str = "auto", resync: float = 60.0) -> Rig:
    rig = Rig(tmp_path, mode, resync)
    rigs.append(rig)
    rig.volume.write({KEY: good(0)})
    assert await rig.file.reload() == "changed"
    await rig.file.start(rig.supervisor)
    return rig


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_kubelet_swap_is_taken_into_force(make_rig: list[Rig], tmp_path: Path, mode: str) -> None:
    rig = await started(make_rig, tmp_path, mode=mode)
    assert rig.file.backend == mode
    rig.volume.write({KEY: good(1)})
    await eventually(lambda: rig.ids() == {"a-1"}, "the swapped file in force")
    assert [c.value.ensure_exist[0].id for c in rig.changes] == ["a-0", "a-1"]
    assert rig.metrics.validity[-1] is True and len(rig.metrics.good_at) == 2


async def quiet(rig: Rig) -> None:
    """Until the watcher has delivered every event (no new request for a while)."""
    while True:
        seen = rig.file.requests
        await asyncio.sleep(0.2)
        if rig.file.requests == seen:
            return


async def test_a_burst_of_swaps_costs_at_most_one_extra_read(make_rig: list[Rig], tmp_path: Path) -> None:
    rig = await started(make_rig, tmp_path, mode="inotify")
    before = len(rig.metrics.outcomes)
    async with rig.file.lock:  # a read in progress while the burst arrives
        for n in range(1, 11):
            rig.volume.write({KEY: good(n)})
        await eventually(lambda: rig.file.requests >= 10, "the watcher saw the burst")
        await quiet(rig)
    await eventually(lambda: rig.ids() == {"a-10"}, "the last file of the burst in force")
    await eventually(lambda: not rig.file.reload_requested and not rig.file.lock.locked(), "reloads settled")
    reads = rig.metrics.outcomes[before:]
    # Ten swaps, dozens of directory events: the read they woke, and at most one more.
    assert rig.file.requests >= 10
    assert reads in (["changed"], ["changed", "unchanged"]), reads
    assert [c.value.ensure_exist[0].id for c in rig.changes] == ["a-0", "a-10"]


async def rereads(rig: Rig, count: int = 5) -> None:
    """Until the file has been read `count` more times (by the resync)."""
    target = len(rig.metrics.outcomes) + count
    await eventually(lambda: len(rig.metrics.outcomes) >= target, f"{count} more reads")


async def test_bad_file_keeps_the_last_good_and_is_logged_once_per_edit(
    make_rig: list[Rig], tmp_path: Path
) -> None:
    rig = await started(make_rig, tmp_path, resync=0.05)
    last_good = rig.file.current
    with capture_logs() as logs:
        for content in (BAD_A, BAD_B):
            rig.volume.write({KEY: content})
            await eventually(lambda: rig.metrics.validity[-1] is False, "rejected")
            await rereads(rig)  # the same rejected edit, read again: no new log line
            assert rig.file.current is last_good
        rig.volume.write({KEY: good(1)})
        await eventually(lambda: rig.ids() == {"a-1"}, "the good file in force")
        rig.volume.write({KEY: BAD_A})  # the same bad content as before, but a new edit
        await eventually(lambda: rig.metrics.validity[-1] is False, "rejected again")
        await rereads(rig)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["rejected; keeping"] * 3
    assert errors[0]["file"] == str(rig.file.path)
    assert errors[0]["errors"][0].startswith(f"{rig.file.path}:")
    assert "models[0].source" in " ".join(errors[1]["errors"])
    assert [e["event"] for e in logs if e["log_level"] == "info"] == ["valid again"]
    assert rig.ids() == {"a-1"}


async def test_missing_file_at_start_says_there_is_nothing_in_force(
    make_rig: list[Rig], tmp_path: Path
) -> None:
    rig = Rig(tmp_path, "auto", 60.0)
    make_rig.append(rig)
    with capture_logs() as logs:
        assert await rig.file.reload() == "error"
        assert await rig.file.reload() == "error"
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "rejected; nothing yet"
    assert errors[0]["errors"] == [
        f"{rig.file.path}: error: file not found; there is no last good configuration yet"
    ]


async def test_sidecar_logs_a_rejected_adapters_file_once_across_passes(sync_env: SyncEnv) -> None:
    """The real sidecar: a bad adapters file re-read at every resync is one log line and config_valid 0."""
    env = sync_env
    env.write(adapters_yaml([("m-0", "org/m-0")]))
    with capture_logs() as logs:
        await env.start(reconcile_trigger=0.1)
        await env.wait_loaded({"m-0"})
        env.write(BAD_A)

        async def invalid() -> bool:
            return metric_value(await env.metrics(), "lora_syncer_config_valid") == 0

        await eventually(invalid, "config_valid 0")

        async def reads() -> float:
            return metric_value(await env.metrics(), "lora_syncer_config_reloads_total", result="error") or 0

        after = await reads()

        async def more_reads() -> bool:
            return await reads() >= after + 3

        await eventually(more_reads, "three more reads of the bad file")
    rejected = [e for e in logs if e["event"].startswith("adapters file rejected")]
    assert len(rejected) == 1, rejected
    assert rejected[0]["event"] == "adapters file rejected; the last good configuration stays in force"
    assert env.emulator.loaded() == {"m-0": "org/m-0"}
