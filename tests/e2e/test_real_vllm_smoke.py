"""Smoke test of the real-vLLM fixture: the launched server does what the rest of the tier needs."""

from __future__ import annotations

import aiohttp

from lora_syncer.realvllm.launcher import RealVLLM

_TIMEOUT = aiohttp.ClientTimeout(total=60)


async def _model_ids(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/v1/models") as resp:
        assert resp.status == 200
        body = await resp.json()
    return [m["id"] for m in body["data"]]


async def test_load_infer_restart_forget(vllm: RealVLLM) -> None:
    """A runtime-loaded adapter serves chat completions and is forgotten after a restart."""
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        async with session.post(
            f"{vllm.url}/v1/load_lora_adapter",
            json={"lora_name": "smoke-a", "lora_path": str(vllm.adapter_dirs[0])},
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.text() == "Success: LoRA adapter 'smoke-a' added successfully."
        assert await _model_ids(session, vllm.url) == [vllm.served_model_name, "smoke-a"]

        async with session.post(
            f"{vllm.url}/v1/chat/completions",
            json={"model": "smoke-a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["model"] == "smoke-a"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] >= 1

        url_before = vllm.url
        await vllm.restart()
        assert vllm.url == url_before
        assert vllm.running
        assert await _model_ids(session, vllm.url) == [vllm.served_model_name]
