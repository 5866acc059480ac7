"""Memory plumbing of long-running commands: one malloc arena unless the operator says otherwise,
heap trims that are safe to call anywhere, and uvloop only where the proxy runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from lora_syncer import memory, runtime
from lora_syncer.runtime import GC_YOUNG_THRESHOLD, run_async


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", (param, value)))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", (pad,)))
        return 1


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: fake)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    return fake


def test_one_arena_by_default(fake_libc: FakeLibc) -> None:
    memory.limit_malloc_arenas()
    assert fake_libc.calls == [("mallopt", (-8, 1))]  # M_ARENA_MAX


def test_operator_arena_setting_wins(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    memory.limit_malloc_arenas()
    assert fake_libc.calls == []


def test_trim_heap_trims_without_collecting(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    collected: list[Any] = []
    monkeypatch.setattr(memory.gc, "collect", lambda *a: collected.append(a) or 0)
    memory.trim_heap()
    assert fake_libc.calls == [("malloc_trim", (0,))] and collected == []
    memory.release_memory()
    assert len(collected) == 1


def test_real_libc_calls_do_not_fail() -> None:
    memory.trim_heap()  # glibc here; a no-op where there is none


def test_syncer_alone_runs_on_asyncio(fake_libc: FakeLibc) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_async(which(), fast_loop=False).startswith("asyncio")


def test_fast_loop_is_uvloop_when_installed(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    tuned: list[bool] = []
    # Not this test process's collector: the real effect is checked in a child process below.
    monkeypatch.setattr(runtime, "tune_gc_for_serving", lambda: tuned.append(True))
    try:
        import uvloop  # noqa: F401
    except ImportError:
        expected = "asyncio"  # without the `fast` extra every command runs on asyncio's loop
    else:
        expected = "uvloop"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_async(which()).startswith(expected)
    assert tuned == [True]  # the serving loop gets the serving collector settings


def test_gc_tuned_for_serving_in_a_real_process() -> None:
    code = (
        "import gc\n"
        "from lora_syncer.runtime import tune_gc_for_serving\n"
        "before = gc.get_freeze_count()\n"
        "tune_gc_for_serving()\n"
        "print(before, gc.get_freeze_count(), *gc.get_threshold())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, frozen, young, *_ = (int(word) for word in out.split())
    assert before == 0 and frozen > 1000  # the start-up objects are out of the collector's sight
    assert young == GC_YOUNG_THRESHOLD
