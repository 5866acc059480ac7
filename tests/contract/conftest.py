"""The two servers the contract suite runs against, behind one `Backend` interface.

``emulator``: lora-syncer's emulator, in-process, configured the way the real server is started
(served name ``base``, ``--max-lora-rank 8``, ``--max-loras 4``, ``--max-model-len 256``,
offline: hub ids fail).
``real``: the session's real vLLM (root fixture ``real_vllm``), marked ``real_vllm``.

Each test gets a server with only the base model loaded and leaves it that way.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.realvllm.launcher import RealVLLM

SERVED_NAME = "base"
MAX_LORA_RANK = 8
MAX_LORAS = 4
MAX_MODEL_LEN = 256
_TIMEOUT = aiohttp.ClientTimeout(total=60)
_names = itertools.count()


@dataclass(frozen=True)
class Backend:
    """A server under contract: where it is, what it serves, and how to restart it."""

    kind: str
    url: str
    served_name: str
    max_model_len: int
    max_loras: int
    model_root: str
    adapter_dirs: tuple[str, ...]
    bad_rank_dir: str
    missing_dir: str
    restart: Callable[[], Awaitable[None]]


def _write_fake_adapter(directory: Path, rank: int) -> str:
    """An adapter folder the emulator accepts: only the config is read (for the rank)."""
    directory.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "tiny-llama",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return str(directory)


async def _unload_all(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/v1/models") as resp:
        models = (await resp.json())["data"]
    for model in models:
        if model.get("parent") is not None:
            async with session.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": model["id"]}) as r:
                await r.read()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session with a generous overall timeout."""
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        yield session


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Adapter names unique within the session (the real server is shared by every test)."""

    def make(prefix: str = "lora") -> str:
        return f"{prefix}-{next(_names)}"

    return make


async def _emulator_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    model_root = tmp_path / "model"
    model_root.mkdir()
    adapters = tuple(
        _write_fake_adapter(tmp_path / "adapters" / f"adapter-{i}", MAX_LORA_RANK) for i in range(4)
    )
    bad_rank = _write_fake_adapter(tmp_path / "adapters" / "adapter-rank64", 64)
    config = EmulatorConfig(
        served_model_name=SERVED_NAME,
        model=str(model_root),
        max_lora_rank=MAX_LORA_RANK,
        max_loras=MAX_LORAS,
        max_model_len=MAX_MODEL_LEN,
        allow_hub_ids=False,  # the real server here is offline: hub ids are not found
    )
    emulator = Emulator(config)
    await emulator.start("127.0.0.1", 0)
    try:
        yield Backend(
            kind="emulator",
            url=emulator.url,
            served_name=SERVED_NAME,
            max_model_len=MAX_MODEL_LEN,
            max_loras=MAX_LORAS,
            model_root=str(model_root),
            adapter_dirs=adapters,
            bad_rank_dir=bad_rank,
            missing_dir=str(tmp_path / "no-such-adapter"),
            restart=emulator.restart,
        )
    finally:
        await emulator.stop()


async def _real_backend(server: RealVLLM, tmp_path: Path) -> AsyncIterator[Backend]:
    if not server.running:
        await server.start()  # an earlier test left it down; bring it back
    yield Backend(
        kind="real",
        url=server.url,
        served_name=server.served_model_name,
        max_model_len=server.max_model_len,
        max_loras=server.max_loras,
        model_root=str(server.model_dir),
        adapter_dirs=tuple(str(p) for p in server.adapter_dirs),
        bad_rank_dir=str(server.bad_rank_adapter_dir),
        missing_dir=str(tmp_path / "no-such-adapter"),
        restart=server.restart,
    )
    if not server.running:
        await server.start()
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        await _unload_all(session, server.url)


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.real_vllm)])
def real_server(request: pytest.FixtureRequest) -> RealVLLM | None:
    """The session's real vLLM for the ``real`` run, None for the ``emulator`` run.

    Sync on purpose: the async session fixture must not be set up from inside a running loop.
    """
    if request.param == "real":
        server: RealVLLM = request.getfixturevalue("real_vllm")
        return server
    return None


@pytest_asyncio.fixture
async def backend(real_server: RealVLLM | None, tmp_path: Path) -> AsyncIterator[Backend]:
    """The server under contract, with only the base model loaded."""
    source = _emulator_backend(tmp_path) if real_server is None else _real_backend(real_server, tmp_path)
    async for b in source:
        yield b
