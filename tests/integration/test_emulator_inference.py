"""Inference through the emulator: answers name the serving model, SSE framing, token counts, 404s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(
        served_model_name="base", served_model_aliases=("alias",), lora_modules=(("a1", "org/a1"),)
    )
    async with Emulator(config) as e:
        yield e


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return resp.status, await resp.json()


async def stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """The content type and the raw SSE events (split on blank lines)."""
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        raw = await resp.read()
        ctype = resp.headers["Content-Type"]
    assert raw.endswith(b"\n\n")
    return ctype, [event + b"\n\n" for event in raw[:-2].split(b"\n\n")]


class TestPlain:
    async def test_chat_names_the_adapter(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A chat request for an adapter is answered with model = the adapter name."""
        status, body = await post(
            http, emu.url + CHAT, {"model": "a1", "messages": MESSAGES, "max_tokens": 3}
        )
        assert status == 200
        assert (body["object"], body["model"]) == ("chat.completion", "a1")
        assert body["id"].startswith("chatcmpl-")
        assert isinstance(body["created"], int)
        assert body["usage"]["completion_tokens"] == 3
        assert body["choices"][0]["message"]["role"] == "assistant"

    @pytest.mark.parametrize("model", ["base", "alias", None])
    async def test_base_model_answers_first_name(
        self, emu: Emulator, http: aiohttp.ClientSession, model: str | None
    ) -> None:
        """The base model, under any alias or with no model given, answers as the first served name."""
        body: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 1}
        if model is not None:
            body["model"] = model
        status, answer = await post(http, emu.url + CHAT, body)
        assert (status, answer["model"]) == (200, "base")

    async def test_completion(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A text completion names its model and honours max_tokens."""
        status, body = await post(
            http, emu.url + COMPLETIONS, {"model": "a1", "prompt": "hi", "max_tokens": 5}
        )
        assert status == 200
        assert (body["object"], body["model"], body["usage"]["completion_tokens"]) == (
            "text_completion",
            "a1",
            5,
        )
        assert body["id"].startswith("cmpl-")

    async def test_max_completion_tokens_wins(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """For chat, max_completion_tokens takes precedence over max_tokens."""
        body = {"model": "a1", "messages": MESSAGES, "max_tokens": 9, "max_completion_tokens": 2}
        assert (await post(http, emu.url + CHAT, body))[1]["usage"]["completion_tokens"] == 2

    @pytest.mark.parametrize("route", [CHAT, COMPLETIONS])
    async def test_unknown_model(self, emu: Emulator, http: aiohttp.ClientSession, route: str) -> None:
        """An unknown model is vLLM's 404 NotFoundError with param "model" and the valid aliases."""
        status, body = await post(
            http, emu.url + route, {"model": "nope", "messages": MESSAGES, "prompt": "x"}
        )
        assert status == 404
        assert body == {
            "error": {
                "message": "The model `nope` does not exist. Valid aliases: base, alias.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        }

    async def test_served_counter(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """The call log counts answers per serving model."""
        for model in ("a1", "a1", "alias"):
            await post(http, emu.url + CHAT, {"model": model, "messages": MESSAGES, "max_tokens": 1})
        assert emu.call_log.counters()["served"] == {"a1": 2, "base": 1}


class TestStreaming:
    async def test_chat_stream_format(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A streamed chat is text/event-stream, `data: {...}` events naming the model, ending `data: [DONE]`."""
        body = {"model": "a1", "messages": MESSAGES, "max_tokens": 4, "stream": True}
        ctype, events = await stream(http, emu.url + CHAT, body)
        assert ctype == "text/event-stream; charset=utf-8"
        assert events[-1] == b"data: [DONE]\n\n"
        chunks = [json.loads(e[len(b"data: ") : -2]) for e in events[:-1]]
        assert all(e.startswith(b"data: ") for e in events)
        assert len(chunks) == 1 + 4  # role chunk + one per token
        assert {c["model"] for c in chunks} == {"a1"}
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    async def test_chat_stream_usage(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """stream_options.include_usage adds a usage chunk before [DONE]."""
        body = {
            "model": "a1",
            "messages": MESSAGES,
            "max_completion_tokens": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        _, events = await stream(http, emu.url + CHAT, body)
        usage = json.loads(events[-2][len(b"data: ") : -2])
        assert (usage["choices"], usage["usage"]["completion_tokens"]) == ([], 2)

    async def test_completion_stream(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A streamed completion has one chunk per token, each naming the model, then [DONE]."""
        body = {"model": "alias", "prompt": "hi", "max_tokens": 3, "stream": True}
        _, events = await stream(http, emu.url + COMPLETIONS, body)
        assert events[-1] == b"data: [DONE]\n\n"
        chunks = [json.loads(e[len(b"data: ") : -2]) for e in events[:-1]]
        assert [c["model"] for c in chunks] == ["base"] * 3

    async def test_unknown_model_is_not_streamed(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """An unknown model with stream=true is still a plain JSON 404."""
        status, _ = await post(http, emu.url + CHAT, {"model": "nope", "messages": MESSAGES, "stream": True})
        assert status == 404


class TestEmbeddings:
    async def test_absent_by_default(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Like vLLM serving a generative model, /v1/embeddings does not exist by default."""
        async with http.post(emu.url + "/v1/embeddings", json={"input": "x"}) as resp:
            assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})

    async def test_enabled(self, http: aiohttp.ClientSession) -> None:
        """With embeddings enabled, one vector per input, naming the model."""
        async with Emulator(EmulatorConfig(enable_embeddings=True)) as emu:
            status, body = await post(http, emu.url + "/v1/embeddings", {"input": ["a", "b"]})
        assert status == 200
        assert body["model"] == emu.config.served_model_name
        assert [d["index"] for d in body["data"]] == [0, 1]


class TestOutputBudget:
    """vLLM's checks on max_tokens against max_model_len, and their order relative to other errors."""

    @pytest.fixture
    async def small(self) -> AsyncIterator[Emulator]:
        async with Emulator(EmulatorConfig(served_model_name="base", max_model_len=32)) as e:
            yield e

    async def test_above_max_model_len(self, small: Emulator, http: aiohttp.ClientSession) -> None:
        """max_tokens above max_model_len is a 400 naming the field, the value and the limit."""
        status, body = await post(http, small.url + COMPLETIONS, {"prompt": "hi", "max_tokens": 33})
        assert status == 400
        assert body["error"] == {
            "message": "max_tokens=33 cannot be greater than max_model_len=32. Please request fewer output "
            "tokens. (parameter=max_tokens, value=33)",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }

    async def test_answer_is_cut_to_the_context_left(
        self, small: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """max_tokens = max_model_len is accepted; the answer has what the prompt leaves of the context."""
        prompt = "x" * 40  # the emulator counts 4 characters a token: 10 prompt tokens
        status, body = await post(http, small.url + COMPLETIONS, {"prompt": prompt, "max_tokens": 32})
        assert status == 200
        assert body["usage"]["completion_tokens"] == 32 - 10

    async def test_refused_requests_are_not_served(
        self, small: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Requests refused by the budget checks do not count as served."""
        await post(http, small.url + CHAT, {"messages": MESSAGES, "max_tokens": 0})
        await post(http, small.url + CHAT, {"messages": [], "max_tokens": 1})
        assert small.call_log.counters()["served"] == {}

    async def test_validation_comes_before_a_dead_engine(
        self, small: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """With the engine dead, a bad request is still a 400; a good one is the 500."""
        small.faults.engine_dead = True
        assert (await post(http, small.url + CHAT, {"messages": MESSAGES, "max_tokens": 0}))[0] == 400
        assert (await post(http, small.url + CHAT, {"messages": MESSAGES, "max_tokens": 1}))[0] == 500

    async def test_prompt_checked_before_the_model(
        self, small: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A completion without a prompt is a 400 even for an unknown model; an empty list comes after it."""
        status, body = await post(http, small.url + COMPLETIONS, {"model": "nope"})
        assert (status, body["error"]["param"]) == (400, "prompt")
        status, body = await post(http, small.url + COMPLETIONS, {"model": "nope", "prompt": []})
        assert status == 404
