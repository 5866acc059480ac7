"""A user's mistakes, made the way a user makes them: a real file, `lora-syncer` as a child
process, the emulated vLLM on 127.0.0.1. Each test checks the message and that nothing was
unloaded or misrouted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sync_harness import adapters_yaml

from lora_syncer.emulator import Emulator
from tests.support.emulator import running_emulator
from tests.support.net import free_port
from tests.support.processes import Child, run_args
from tests.support.wait import eventually

THREE = [("ad-a", "org/adapter-a"), ("ad-b", "org/adapter-b"), ("ad-c", "org/adapter-c")]


@pytest_asyncio.fixture
async def vllm() -> AsyncIterator[Emulator]:
    async with running_emulator() as emulator:
        yield emulator


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, None


async def _start(tmp_path: Path, config: Path, server: str, *extra: str) -> Child:
    port = free_port()
    return await Child.spawn(run_args(config, server, port, *extra), tmp_path / "syncer.log", port)


def _unloads(vllm: Emulator) -> list[str]:
    return [c.name for c in vllm.calls if c.op == "unload"]


async def _synced(http: aiohttp.ClientSession, child: Child, vllm: Emulator, names: set[str]) -> None:
    async def ready() -> bool:
        status, _ = await _json(http, child.url + "/readyz")
        return status == 200 and set(vllm.loaded()) == names

    await eventually(ready, message=lambda: child.log_text()[-3000:])


async def _passes(http: aiohttp.ClientSession, child: Child) -> int:
    _, body = await _json(http, child.url + "/status")
    return int(body["syncer"]["sync"]["passes"]) if isinstance(body, dict) else 0


async def _more_passes(http: aiohttp.ClientSession, child: Child, count: int) -> None:
    """Wait until `count` more reconcile passes (resyncs included) have run."""
    start = await _passes(http, child)

    async def enough() -> bool:
        return await _passes(http, child) >= start + count

    await eventually(enough, message=lambda: child.log_text()[-3000:])


@pytest.mark.asyncio
async def test_slow_writer_is_not_acted_on_until_it_closes_the_file(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """An editor writes a valid prefix declaring one adapter, flushes, pauses, then writes the rest."""
    config = tmp_path / "adapters.yaml"
    full = adapters_yaml(THREE)
    config.write_text(full)
    # --prune-max 100%: only the close-write wait stands between the prefix and two unloads.
    child = await _start(tmp_path, config, vllm.url, "--prune", "--prune-max", "100%")
    try:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        cut = full.index("    - id: ad-b")
        prefix, rest = full[:cut], full[cut:]
        with config.open("w") as handle:  # ONE open handle, as an editor or `cat > file` holds it
            handle.write(prefix)
            handle.flush()
            await _more_passes(http, child, 3)  # several resyncs see the half-written file
            assert _unloads(vllm) == []
            assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}
            handle.write(rest)
        await _more_passes(http, child, 3)
        assert _unloads(vllm) == [], child.log_text()[-3000:]
        assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}
    finally:
        await child.stop()


@pytest.mark.asyncio
async def test_truncated_file_is_held_by_prune_max_and_withdrawn_when_fixed(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """A file cut short (closed, valid) would prune two of three adapters: held, reported, then fixed."""
    config = tmp_path / "adapters.yaml"
    config.write_text(adapters_yaml(THREE))
    # A long resync: the hold cannot be confirmed while the test looks at it.
    child = await _start(tmp_path, config, vllm.url, "--prune", "--reconcile-trigger", "300")
    try:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:1]))

        async def held() -> Any:
            _, body = await _json(http, child.url + "/status")
            return body["syncer"]["sync"]["pruneHold"] if isinstance(body, dict) else None

        hold = await eventually(held, message=lambda: child.log_text()[-3000:])
        assert hold["adapters"] == ["ad-b", "ad-c"]
        assert hold["limit"] == 1  # 50% of 3 loaded, rounded down
        assert "--prune-max" in hold["reason"]
        _, metrics = await _json(http, child.url + "/metrics")
        assert "lora_syncer_prune_held_adapters 2.0" in metrics
        lines = [e for e in child.logs() if str(e.get("event", "")).startswith("prune held")]
        assert len(lines) == 1 and lines[0]["adapters"] == ["ad-b", "ad-c"]

        config.write_text(adapters_yaml(THREE))  # the user notices and restores the file

        async def released() -> bool:
            return await held() is None

        await eventually(released, message=lambda: child.log_text()[-3000:])
        assert _unloads(vllm) == []
        assert set(vllm.loaded()) == {"ad-a", "ad-b", "ad-c"}
        assert any(str(e.get("event", "")).startswith("prune hold withdrawn") for e in child.logs())
    finally:
        await child.stop()


@pytest.mark.asyncio
async def test_prune_hold_is_confirmed_by_one_more_unchanged_resync(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    """A deliberate cut (the file stays as it is) goes through after one more resync."""
    config = tmp_path / "adapters.yaml"
    config.write_text(adapters_yaml(THREE))
    child = await _start(tmp_path, config, vllm.url, "--prune")
    try:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:1]))
        await eventually(lambda: set(vllm.loaded()) == {"ad-a"}, message=lambda: child.log_text()[-3000:])
        assert sorted(_unloads(vllm)) == ["ad-b", "ad-c"]
        events = [str(e.get("event", "")) for e in child.logs()]
        held = next(i for i, e in enumerate(events) if e.startswith("prune held"))
        confirmed = next(i for i, e in enumerate(events) if e.startswith("prune confirmed"))
        assert held < confirmed
    finally:
        await child.stop()


@pytest.mark.asyncio
async def test_small_prune_within_the_limit_is_not_held(
    tmp_path: Path, vllm: Emulator, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "adapters.yaml"
    config.write_text(adapters_yaml(THREE))
    child = await _start(
        tmp_path, config, vllm.url, "--prune", "--prune-max", "1", "--reconcile-trigger", "300"
    )
    try:
        await _synced(http, child, vllm, {"ad-a", "ad-b", "ad-c"})
        config.write_text(adapters_yaml(THREE[:2]))
        await eventually(lambda: _unloads(vllm) == ["ad-c"], message=lambda: child.log_text()[-3000:])
        assert not any(str(e.get("event", "")).startswith("prune held") for e in child.logs())
    finally:
        await child.stop()
