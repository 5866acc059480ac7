"""Generic fixtures shared by every test tier.

- Every async test running in the default function-scoped event loop fails if it leaves asyncio
  tasks behind (servers not stopped, background loops not cancelled).
- The fixtures of tests/support/fixtures.py (``free_port``, ``http``, ``emulator``,
  ``emulator_factory``, ``emulator_process_factory``, ``volume_factory``) are registered for every
  tier; their helpers are importable as ``tests.support.*`` (pyproject puts the checkout on
  pytest's ``pythonpath``).
- ``real_vllm``: the one real vLLM server of the session. It is defined here, not in
  tests/e2e/conftest.py, only because pytest shows a conftest's fixtures to the tests below it
  and both tests/contract and tests/e2e must share the same server (one ~30 s start-up per run).
  Locally it skips when the vLLM environment is missing; with ``CI=true`` that is a failure.

Nothing else belongs here; tier fixtures live in each tier's conftest.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from lora_syncer.realvllm.launcher import SETUP_HINT, RealVLLM, default_venv, find_venv

pytest_plugins = ("tests.support.fixtures",)

# Loop iterations granted after teardown so tasks that are already finishing can do so.
_SETTLE_ITERATIONS = 20


def _describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({name})"


@pytest_asyncio.fixture(loop_scope="function")
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves tasks running in its event loop."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    for _ in range(_SETTLE_ITERATIONS):
        leftover = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
        if not leftover:
            return
        await asyncio.sleep(0)
    names = sorted(_describe(t) for t in leftover)
    # Cancel them so one leaky test does not break the next ones in the same loop.
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)
    pytest.fail(f"test left {len(names)} asyncio task(s) running: {', '.join(names)}")


@pytest.fixture(autouse=True)
def _task_leak_guard(request: pytest.FixtureRequest) -> None:
    """Enable the task-leak check for async tests in the function-scoped loop.

    Sync tests skip it (no loop to inspect). Tests that run in a wider loop scope share that
    loop with long-lived fixtures, so a before/after comparison would not mean "leaked".
    """
    marker = request.node.get_closest_marker("asyncio")
    if marker is None:
        return
    loop_scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") or "function"
    if loop_scope == "function":
        request.getfixturevalue("_no_leaked_tasks")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def real_vllm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealVLLM]:
    """The session's real vLLM (served name ``base``, LoRA on, max rank 8), started once.

    Tests may load adapters (use names unique to the test and unload them) and may restart it,
    but must leave it running.
    """
    venv = find_venv()
    if venv is None:
        message = f"real vLLM environment not found at {default_venv()}; create it with: {SETUP_HINT}"
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    server = RealVLLM(venv, tmp_path_factory.mktemp("real-vllm"))
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
