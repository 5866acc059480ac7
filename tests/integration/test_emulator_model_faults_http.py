"""Per-model faults over real HTTP: one adapter made bad while the base model and other adapters stay fine."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig
from lora_syncer.proxy.answer import AnswerFacts
from tests.support.emulator import running_emulator
from tests.support.fixtures import EmulatorProcessFactory
from tests.support.http import client_session

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with running_emulator(
        EmulatorConfig(served_model_name="base"), {"v1": "org/v1", "v2": "org/v2"}
    ) as e:
        yield e


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a broken answer must not leave a half-read connection in the pool
    async with client_session(force_close=True) as session:
        yield session


async def set_faults(http: aiohttp.ClientSession, emu: Emulator, models: dict[str, Any]) -> dict[str, Any]:
    async with http.post(emu.url + "/_emulator/faults", json={"models": models}) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def ask(
    http: aiohttp.ClientSession, emu: Emulator, model: str, path: str = CHAT, **extra: Any
) -> tuple[int, bytes]:
    body: dict[str, Any] = {"model": model, **extra}
    body.update({"messages": MESSAGES} if path == CHAT else {"prompt": "hello"})
    async with http.post(emu.url + path, json=body) as resp:
        return resp.status, await resp.read()


def events(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_error_rate_fails_exactly_that_share_of_one_model(
    http: aiohttp.ClientSession, emu: Emulator
) -> None:
    """error_rate 0.5 on v2: exactly 10 of 20 requests answer vLLM's 500; v1 and the base never fail."""
    await set_faults(http, emu, {"v2": {"error_rate": 0.5}})
    statuses = [(await ask(http, emu, "v2"))[0] for _ in range(20)]
    assert statuses.count(500) == 10 and statuses.count(200) == 10
    status, raw = await ask(http, emu, "v2")
    if status == 500:
        error = json.loads(raw)["error"]
        assert (error["type"], error["code"], error["param"]) == ("InternalServerError", 500, None)
        assert "v2" in error["message"]
    for model in ("v1", "base"):
        assert [(await ask(http, emu, model))[0] for _ in range(4)] == [200] * 4
    counters = emu.call_log.counters()
    assert counters["model_faults"]["v2"]["error"] == 10 + (status == 500)
    assert "v1" not in counters["model_faults"]


@pytest.mark.parametrize("reason", ["length", "stop"])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_empty_answers(http: aiohttp.ClientSession, emu: Emulator, reason: str, path: str) -> None:
    """empty: content "", the finish_reason asked for, 0 completion tokens; plain and streamed."""
    await set_faults(http, emu, {"v2": {"empty": reason}})
    status, raw = await ask(http, emu, "v2", path, max_tokens=5)
    assert status == 200
    body = json.loads(raw)
    choice = body["choices"][0]
    assert (choice["message"]["content"] if path == CHAT else choice["text"]) == ""
    assert choice["finish_reason"] == reason and body["usage"]["completion_tokens"] == 0
    status, raw = await ask(http, emu, "v2", path, stream=True, stream_options={"include_usage": True})
    chunks = events(raw)
    assert status == 200 and chunks[-1] == "[DONE]"
    text = "".join(
        (c["choices"][0]["delta"].get("content", "") if path == CHAT else c["choices"][0]["text"])
        for c in chunks[:-1]
        if c["choices"]
    )
    assert text == ""
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] == reason
    assert chunks[-2]["usage"]["completion_tokens"] == 0
    facts = AnswerFacts()
    facts.feed_sse(raw)
    assert (facts.finish_reason, facts.completion_tokens, facts.error) == (reason, 0, False)
    assert json.loads((await ask(http, emu, "v1", path, max_tokens=5))[1])["usage"]["completion_tokens"] == 5


async def test_sse_error_event_inside_a_200_stream(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """sse_error_after 2: two chunks, then vLLM's error event and [DONE], in a 200 answer."""
    await set_faults(http, emu, {"v2": {"sse_error_after": 2}})
    status, raw = await ask(http, emu, "v2", stream=True, max_tokens=8)
    chunks = events(raw)
    assert status == 200
    assert len(chunks) == 4 and chunks[-1] == "[DONE]"
    assert chunks[2]["error"]["type"] == "InternalServerError" and chunks[2]["error"]["code"] == 500
    facts = AnswerFacts()
    facts.feed_sse(raw)
    assert facts.error
    status, raw = await ask(http, emu, "v2", max_tokens=8)  # not streamed: unaffected
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 8


async def test_break_mid_stream_and_mid_body(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """break_after 3: a stream stops after 3 chunks without [DONE]; a plain answer stops halfway."""
    await set_faults(http, emu, {"v2": {"break_after": 3}})
    got: list[bytes] = []

    async def read_stream() -> None:
        body = {"model": "v2", "messages": MESSAGES, "stream": True, "max_tokens": 8}
        async with http.post(emu.url + CHAT, json=body) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                got.append(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_stream()
    assert len(events(b"".join(got))) == 3 and b"[DONE]" not in b"".join(got)
    with pytest.raises(aiohttp.ClientPayloadError):
        await ask(http, emu, "v2", COMPLETIONS)
    assert emu.call_log.counters()["model_faults"]["v2"]["break"] == 2
    assert (await ask(http, emu, "v1", stream=True))[0] == 200


async def test_latency_before_first_byte_and_between_chunks(
    http: aiohttp.ClientSession, emu: Emulator
) -> None:
    """latency 0.2 on v2: the answer head waits; a 3-chunk stream takes at least 4 pauses; v1 is not held."""
    await set_faults(http, emu, {"v2": {"latency": 0.2}})
    start = time.monotonic()
    status, raw = await ask(http, emu, "v2", stream=True, max_tokens=2)
    slow = time.monotonic() - start
    assert status == 200 and events(raw)[-1] == "[DONE]"
    # Lower bounds only (sleeps never end early): role chunk + 2 tokens + [DONE] = 1 + 3 pauses.
    assert slow >= 0.2 * 4
    assert emu.call_log.counters()["model_faults"]["v2"]["latency"] == 1


async def test_clearing_and_resetting(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """null clears one model's faults; DELETE /_emulator/faults clears them all; bad input is a 400 with no change."""
    shown = await set_faults(http, emu, {"v2": {"error_rate": 1}, "v1": {"error_rate": 1}})
    assert set(shown["models"]) == {"v1", "v2"}
    async with http.post(emu.url + "/_emulator/faults", json={"models": {"v1": {"error_rate": 5}}}) as resp:
        assert resp.status == 400
        assert "models['v1'].error_rate" in (await resp.json())["error"]
    shown = await set_faults(http, emu, {"v1": None})
    assert set(shown["models"]) == {"v2"}
    assert (await ask(http, emu, "v1"))[0] == 200 and (await ask(http, emu, "v2"))[0] == 500
    async with http.delete(emu.url + "/_emulator/faults") as resp:
        assert (await resp.json())["models"] == {}
    assert (await ask(http, emu, "v2"))[0] == 200


async def test_model_fault_flag_of_the_emulator_command(
    emulator_process_factory: EmulatorProcessFactory, http: aiohttp.ClientSession
) -> None:
    """`--model-fault` from the variable (comma-separated) is in force at start, for the base model too."""
    child = await emulator_process_factory(
        "--served-model-name", "base", env={"LORA_SYNCER_MODEL_FAULT": "base:error_rate=1,other:latency=1"}
    )
    async with http.get(child.url + "/_emulator/faults") as resp:
        models = (await resp.json())["models"]
    assert models["base"]["error_rate"] == 1.0 and models["other"]["latency"] == 1.0
    async with http.post(child.url + CHAT, json={"messages": MESSAGES}) as resp:
        assert resp.status == 500
