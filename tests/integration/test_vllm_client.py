"""The vLLM client against a real HTTP server (the emulator) on loopback: typed outcomes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.sync.errors import (
    AdapterRejected,
    AuthenticationFailed,
    RuntimeUpdatingDisabled,
    ServerError,
    ServerTimeout,
    ServerUnavailable,
)
from lora_syncer.sync.vllm_client import LoadOutcome, RetryPolicy, Timeouts, UnloadOutcome, VLLMClient

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.02)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(served_model_name="base", max_lora_rank=8)) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[VLLMClient]:
    async with VLLMClient(emu.url, retry=FAST) as c:
        yield c


def adapter_dir(tmp_path: Path, name: str, rank: int = 8) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": 16,
                "target_modules": ["q_proj", "v_proj"],
                "base_model_name_or_path": "base",
            }
        )
    )
    return str(d)


class TestOutcomes:
    async def test_load_list_unload(self, client: VLLMClient, tmp_path: Path) -> None:
        """A load shows in list_models with root = path; unload removes it."""
        path = adapter_dir(tmp_path, "a")
        assert await client.load("a", path) == LoadOutcome.LOADED
        models = await client.list_models()
        assert [(m.id, m.root, m.is_adapter) for m in models] == [
            ("base", models[0].root, False),
            ("a", path, True),
        ]
        assert await client.unload("a") == UnloadOutcome.UNLOADED
        assert [m.id for m in await client.list_models()] == ["base"]

    async def test_already_loaded_is_success(self, client: VLLMClient) -> None:
        """Loading a name that is already loaded counts as success."""
        await client.load("a", "org/a")
        assert await client.load("a", "org/a") == LoadOutcome.ALREADY_LOADED

    async def test_unload_unknown_is_success(self, client: VLLMClient) -> None:
        """Unloading a name the server does not know counts as success."""
        assert await client.unload("nope") == UnloadOutcome.NOT_FOUND

    async def test_inplace_reload_changes_root(self, client: VLLMClient, emu: Emulator) -> None:
        """load(inplace=True) swaps the source of a loaded name."""
        await client.load("a", "org/a-v1")
        assert await client.load("a", "org/a-v2", inplace=True) == LoadOutcome.LOADED
        assert emu.loaded() == {"a": "org/a-v2"}

    async def test_version(self, client: VLLMClient) -> None:
        """version() reads GET /version."""
        assert await client.version() == "0.32.0"


class TestErrors:
    async def test_bad_path_is_adapter_rejected(self, client: VLLMClient, tmp_path: Path) -> None:
        """A missing local path is that adapter's rejection, with vLLM's message."""
        with pytest.raises(AdapterRejected) as info:
            await client.load("a", str(tmp_path / "missing"))
        assert info.value.status == 404
        assert "No adapter found" in info.value.message

    async def test_rank_too_high_is_server_error_after_retries(
        self, client: VLLMClient, emu: Emulator, tmp_path: Path
    ) -> None:
        """vLLM's 500 for a rank above the maximum is retried within the call, then raised."""
        path = adapter_dir(tmp_path, "big", rank=64)
        with pytest.raises(ServerError) as info:
            await client.load("big", path)
        assert "max_lora_rank" in info.value.message
        assert len([c for c in emu.calls if c.op == "load"]) == FAST.attempts

    async def test_name_clash_with_base_model(self, client: VLLMClient) -> None:
        """A name equal to the base model is rejected (400)."""
        with pytest.raises(AdapterRejected) as info:
            await client.load("base", "org/x")
        assert "conflicts with a served base model" in info.value.message

    async def test_runtime_updating_disabled(self, client: VLLMClient, emu: Emulator) -> None:
        """404 {"detail":"Not Found"} on the admin route means updating is disabled, and says how to enable it."""
        emu.faults.runtime_lora_updating = False
        with pytest.raises(RuntimeUpdatingDisabled) as info:
            await client.load("a", "org/a")
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true" in info.value.message

    async def test_transient_500_is_retried(self, client: VLLMClient, emu: Emulator) -> None:
        """Two injected 500s are retried and the third attempt succeeds, with precise retry logs."""
        emu.faults.fail_next = {"load": 2}
        with capture_logs() as logs:
            assert await client.load("a", "org/a") == LoadOutcome.LOADED
        retries = [e["event"] for e in logs if "will retry" in e["event"]]
        assert retries == ["attempt 1/3 failed; will retry", "attempt 2/3 failed; will retry"]

    async def test_dropped_connection_is_retried(self, client: VLLMClient, emu: Emulator) -> None:
        """A dropped connection is transient: retried, then succeeds."""
        emu.faults.failure_mode = "drop"
        emu.faults.fail_next = {"models": 1}
        assert [m.id for m in await client.list_models()] == ["base"]

    async def test_server_down_is_unavailable(self, emu: Emulator) -> None:
        """A server that refuses connections raises ServerUnavailable (a ConnectionError)."""
        url = emu.url
        await emu.go_down()
        async with VLLMClient(url, retry=FAST) as c:
            with pytest.raises(ServerUnavailable) as info:
                await c.list_models()
            assert isinstance(info.value, ConnectionError)
            assert await c.health() is False
        await emu.come_up()

    async def test_timeout(self, emu: Emulator) -> None:
        """A call slower than the read timeout raises ServerTimeout (a TimeoutError)."""
        emu.faults.latency = {"models": 0.5}
        async with VLLMClient(emu.url, retry=RetryPolicy(attempts=1), timeouts=Timeouts(read=0.05)) as c:
            with pytest.raises(ServerTimeout) as info:
                await c.list_models()
            assert isinstance(info.value, TimeoutError)


class TestAuth:
    async def test_api_key_sent_and_refusal_typed(self, unused_tcp_port: int) -> None:
        """The API key goes out as a Bearer token; a 401 is AuthenticationFailed, naming the flag."""
        seen: list[str | None] = []

        async def models(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization")
            seen.append(auth)
            if auth != "Bearer sekrit":
                return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
            return web.json_response(
                {"object": "list", "data": [{"id": "base", "root": "/m", "parent": None}]}
            )

        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
        await site.start()
        try:
            url = f"http://127.0.0.1:{unused_tcp_port}"
            async with VLLMClient(url, api_key="sekrit", retry=FAST) as c:
                assert [m.id for m in await c.list_models()] == ["base"]
            async with VLLMClient(url, api_key="wrong", retry=FAST) as c:
                with pytest.raises(AuthenticationFailed) as info:
                    await c.list_models()
                assert "--api-key" in info.value.message
                assert "wrong" not in info.value.message
            assert seen[0] == "Bearer sekrit"
        finally:
            await runner.cleanup()
