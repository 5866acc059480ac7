"""vLLM's HTTP API as lora-syncer relies on it, checked against the emulator and the real server.

Every test runs twice, ``[emulator]`` and ``[real]`` (the latter needs the real-vLLM environment).
Assertions cover what clients depend on: status, content type, error type and message (with the
path the test sent replaced by ``<path>``), list order and fields. Incidental values (ids,
timestamps, generated text) are not compared. When the two disagree, the emulator is wrong.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from conftest import Backend


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read completely."""

    status: int
    content_type: str | None
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def call(client: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Answer:
    """Send a request (JSON body if given) and read the whole answer."""
    async with client.request(method, url, json=body) as resp:
        text = await resp.text()
        # The raw header: aiohttp reports a missing one as application/octet-stream.
        raw = resp.headers.get("Content-Type")
        content_type = raw.split(";")[0].strip().lower() if raw else None
        return Answer(resp.status, content_type, text)


async def load(client: aiohttp.ClientSession, backend: Backend, name: str, path: str, **extra: Any) -> Answer:
    return await call(
        client, "POST", f"{backend.url}/v1/load_lora_adapter", {"lora_name": name, "lora_path": path, **extra}
    )


async def unload(client: aiohttp.ClientSession, backend: Backend, name: str) -> Answer:
    return await call(client, "POST", f"{backend.url}/v1/unload_lora_adapter", {"lora_name": name})


async def models(client: aiohttp.ClientSession, backend: Backend) -> list[dict[str, Any]]:
    answer = await call(client, "GET", f"{backend.url}/v1/models")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    body = answer.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


def with_placeholders(message: str, *paths: str) -> str:
    """`message` with each path the test sent replaced by `<path>` (servers may scrub paths)."""
    for path in sorted(paths, key=len, reverse=True):
        message = message.replace(path, "<path>")
    return message


def assert_error(
    answer: Answer,
    status: int,
    type_: str,
    message: str,
    *,
    param: str | None = None,
    paths: tuple[str, ...] = (),
) -> None:
    """`answer` is vLLM's JSON error `{"error": {message, type, param, code}}` with these values.

    `paths` the test sent are compared as `<path>`, whether or not the server scrubbed them.
    """
    assert answer.status == status, answer.text
    assert answer.content_type == "application/json"
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["code"] == status
    assert error["param"] == param
    assert with_placeholders(error["message"], *paths) == message


def assert_plain_success(answer: Answer, text: str) -> None:
    """200 with exactly `text` as a non-JSON body (vLLM sends no JSON on admin success)."""
    assert answer.status == 200, answer.text
    assert answer.content_type != "application/json"
    assert answer.text == text


def added(name: str) -> str:
    return f"Success: LoRA adapter '{name}' added successfully."


def removed(name: str) -> str:
    return f"Success: LoRA adapter '{name}' removed successfully."


def already_loaded(name: str) -> str:
    return (
        f"The lora adapter '{name}' has already been loaded. "
        "If you want to load the adapter in place, set 'load_inplace' to True."
    )


def unknown_model(name: str, backend: Backend) -> str:
    return f"The model `{name}` does not exist. Valid aliases: {backend.served_name}."


NameFactory = Callable[[str], str]


class TestProbes:
    """`/health` and `/version`."""

    async def test_health_is_200_with_empty_body(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """`GET /health` answers 200 with an empty body while the engine is alive."""
        answer = await call(client, "GET", f"{backend.url}/health")
        assert answer.status == 200
        assert answer.text == ""

    async def test_version_is_a_json_object_with_the_version(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """`GET /version` answers `{"version": "0.32.0"}` (the emulator's default is that version)."""
        answer = await call(client, "GET", f"{backend.url}/version")
        assert answer.status == 200
        assert answer.content_type == "application/json"
        body = answer.json()
        assert set(body) == {"version"}
        assert body["version"] == "0.32.0"


class TestModelsList:
    """`GET /v1/models` shapes."""

    async def test_base_model_entry(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """The base entry has id = served name, root = --model, parent null, the configured max_model_len."""
        data = await models(client, backend)
        assert len(data) == 1
        base = data[0]
        assert base["id"] == backend.served_name
        assert base["object"] == "model"
        assert base["owned_by"] == "vllm"
        assert base["root"] == backend.model_root
        assert base["parent"] is None
        assert base["max_model_len"] == 256
        assert isinstance(base["created"], int)
        assert isinstance(base["permission"], list)

    async def test_adapters_follow_the_base_in_load_order(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Adapters are listed after the base in load order, root = lora_path as sent, parent = base."""
        names = [unique_name("zeta"), unique_name("alpha"), unique_name("mid")]
        # A trailing slash must survive: root is the path exactly as sent.
        paths = [backend.adapter_dirs[0], backend.adapter_dirs[1] + "/", backend.adapter_dirs[2]]
        for name, path in zip(names, paths, strict=True):
            assert_plain_success(await load(client, backend, name, path), added(name))
        data = await models(client, backend)
        assert [m["id"] for m in data] == [backend.served_name, *names]
        for entry, path in zip(data[1:], paths, strict=True):
            assert entry["root"] == path
            assert entry["parent"] == backend.served_name
            assert entry["max_model_len"] is None
            assert entry["object"] == "model"
            assert entry["owned_by"] == "vllm"

    async def test_unload_removes_only_that_entry(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Unloading the middle adapter keeps the others in their order."""
        names = [unique_name("a"), unique_name("b"), unique_name("c")]
        for name, path in zip(names, backend.adapter_dirs, strict=False):
            assert (await load(client, backend, name, path)).status == 200
        assert_plain_success(await unload(client, backend, names[1]), removed(names[1]))
        assert [m["id"] for m in await models(client, backend)] == [backend.served_name, names[0], names[2]]


class TestAdminSuccess:
    """Successful load and unload answers."""

    async def test_load_and_unload_answer_plain_text(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Load and unload answer 200 with vLLM's exact plain-text sentences."""
        name = unique_name("plain")
        assert_plain_success(await load(client, backend, name, backend.adapter_dirs[0]), added(name))
        assert_plain_success(await unload(client, backend, name), removed(name))
        assert [m["id"] for m in await models(client, backend)] == [backend.served_name]

    async def test_unknown_fields_are_ignored(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """A load carrying the old sidecar's `base_model_name` still succeeds."""
        name = unique_name("legacy")
        answer = await load(
            client, backend, name, backend.adapter_dirs[0], base_model_name=backend.served_name
        )
        assert_plain_success(answer, added(name))

    async def test_load_inplace_swaps_root_and_keeps_position(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """`load_inplace` on a loaded name answers "added", keeps its place, and updates `root`."""
        first, second = unique_name("inplace"), unique_name("after")
        assert (await load(client, backend, first, backend.adapter_dirs[0])).status == 200
        assert (await load(client, backend, second, backend.adapter_dirs[1])).status == 200
        answer = await load(client, backend, first, backend.adapter_dirs[2], load_inplace=True)
        assert_plain_success(answer, added(first))
        data = await models(client, backend)
        assert [(m["id"], m["root"]) for m in data[1:]] == [
            (first, backend.adapter_dirs[2]),
            (second, backend.adapter_dirs[1]),
        ]

    async def test_load_inplace_on_an_unknown_name_loads_it(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """`load_inplace` for a name not yet registered is an ordinary load."""
        name = unique_name("fresh")
        answer = await load(client, backend, name, backend.adapter_dirs[0], load_inplace=True)
        assert_plain_success(answer, added(name))
        assert [m["id"] for m in await models(client, backend)] == [backend.served_name, name]

    async def test_concurrent_loads_of_one_name_give_one_success(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Six simultaneous loads of the same name: exactly one 200, five "already loaded" 400s."""
        name = unique_name("race")
        answers = await asyncio.gather(
            *(load(client, backend, name, backend.adapter_dirs[0]) for _ in range(6))
        )
        assert sorted(a.status for a in answers) == [200, 400, 400, 400, 400, 400]
        for answer in answers:
            if answer.status == 200:
                assert_plain_success(answer, added(name))
            else:
                assert_error(answer, 400, "InvalidUserInput", already_loaded(name))
        assert [m["id"] for m in await models(client, backend)] == [backend.served_name, name]

    async def test_concurrent_loads_of_different_names_all_succeed(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Loads of different names may run at the same time and all succeed."""
        names = [unique_name("par") for _ in range(4)]
        answers = await asyncio.gather(
            *(load(client, backend, n, p) for n, p in zip(names, backend.adapter_dirs, strict=False))
        )
        assert [a.status for a in answers] == [200] * 4
        assert sorted(m["id"] for m in (await models(client, backend))[1:]) == sorted(names)


class TestAdminErrors:
    """Every row of the error table in VLLM_FACTS.md, plus the validation answers seen on 0.32.

    Rows: already loaded, empty name or path, base model name, path not found, not on the hub,
    rank too high, unknown name on unload (here); unknown model on inference (`TestInference`).
    """

    async def test_already_loaded(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Loading a registered name without load_inplace: 400 InvalidUserInput, root unchanged."""
        name = unique_name("dup")
        assert (await load(client, backend, name, backend.adapter_dirs[0])).status == 200
        answer = await load(client, backend, name, backend.adapter_dirs[1])
        assert_error(answer, 400, "InvalidUserInput", already_loaded(name))
        assert (await models(client, backend))[1]["root"] == backend.adapter_dirs[0]

    @pytest.mark.parametrize(
        ("name", "use_path"), [("", True), ("no-path", False)], ids=["empty-name", "empty-path"]
    )
    async def test_empty_name_or_path(
        self, backend: Backend, client: aiohttp.ClientSession, name: str, use_path: bool
    ) -> None:
        """An empty lora_name or lora_path: 400 InvalidUserInput."""
        answer = await load(client, backend, name, backend.adapter_dirs[0] if use_path else "")
        assert_error(answer, 400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided.")
        assert len(await models(client, backend)) == 1

    async def test_missing_path_field_is_a_validation_error(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """A body without lora_path: 400 "Bad Request" naming `body.lora_path`."""
        answer = await call(client, "POST", f"{backend.url}/v1/load_lora_adapter", {"lora_name": "x"})
        assert answer.status == 400
        assert answer.content_type == "application/json"
        error = answer.json()["error"]
        assert error["type"] == "Bad Request"
        assert error["param"] == "body.lora_path"
        assert error["code"] == 400
        assert error["message"].startswith("1 validation error:")
        assert "'loc': 'body.lora_path'" in error["message"]
        assert "'msg': 'Field required'" in error["message"]

    async def test_name_of_the_base_model(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """An adapter named like the served base model: 400 InvalidUserInput."""
        answer = await load(client, backend, backend.served_name, backend.adapter_dirs[0])
        message = f"The lora adapter '{backend.served_name}' conflicts with a served base model."
        assert_error(answer, 400, "InvalidUserInput", message)

    async def test_path_that_does_not_exist(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """A local path that does not exist: 404 NotFoundError; nothing registered."""
        name = unique_name("missing")
        answer = await load(client, backend, name, backend.missing_dir)
        message = f"Loading lora {name} failed: No adapter found for <path>"
        assert_error(answer, 404, "NotFoundError", message, paths=(backend.missing_dir,))
        assert len(await models(client, backend)) == 1

    async def test_hub_id_that_cannot_be_fetched(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """A hub-style id that is not available (offline server): 404 with the id in the message."""
        name = unique_name("hub")
        answer = await load(client, backend, name, "some-org/no-such-adapter")
        assert_error(
            answer,
            404,
            "NotFoundError",
            f"Loading lora {name} failed: No adapter found for some-org/no-such-adapter",
        )

    async def test_rank_above_max_lora_rank(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """An adapter of rank 64 on a server with --max-lora-rank 8: 500 InternalServerError, not registered."""
        name = unique_name("rank")
        answer = await load(client, backend, name, backend.bad_rank_dir)
        message = (
            "Call to add_lora method failed: Worker failed with error "
            "'LoRA rank 64 is greater than max_lora_rank 8.', please check the stack trace above for the root cause"
        )
        assert_error(answer, 500, "InternalServerError", message)
        assert len(await models(client, backend)) == 1
        # The server keeps working after the failed load.
        good = unique_name("after-rank")
        assert_plain_success(await load(client, backend, good, backend.adapter_dirs[0]), added(good))

    async def test_unload_of_an_unknown_name(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Unloading a name that is not registered: 404 NotFoundError."""
        name = unique_name("ghost")
        assert_error(
            await unload(client, backend, name),
            404,
            "NotFoundError",
            f"The lora adapter '{name}' cannot be found.",
        )

    async def test_unload_of_the_base_model(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """Unloading the base model's name: 404, the base model is not an adapter."""
        answer = await unload(client, backend, backend.served_name)
        assert_error(
            answer, 404, "NotFoundError", f"The lora adapter '{backend.served_name}' cannot be found."
        )
        assert len(await models(client, backend)) == 1

    async def test_unload_with_an_empty_name(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """Unloading with an empty lora_name: 400 InvalidUserInput."""
        answer = await unload(client, backend, "")
        assert_error(
            answer, 400, "InvalidUserInput", "'lora_name' needs to be provided to unload a LoRA adapter."
        )

    async def test_second_unload_is_not_found(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Unload twice: the second answers 404 (the syncer treats it as success)."""
        name = unique_name("twice")
        assert (await load(client, backend, name, backend.adapter_dirs[0])).status == 200
        assert (await unload(client, backend, name)).status == 200
        assert_error(
            await unload(client, backend, name),
            404,
            "NotFoundError",
            f"The lora adapter '{name}' cannot be found.",
        )


class TestRoutes:
    """Unknown routes and methods (FastAPI's bodies)."""

    async def test_unknown_route_is_404_detail(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """An unknown path: 404 `{"detail": "Not Found"}`."""
        answer = await call(client, "GET", f"{backend.url}/v1/no-such-route")
        assert answer.status == 404
        assert answer.content_type == "application/json"
        assert answer.json() == {"detail": "Not Found"}

    async def test_wrong_method_is_405_detail(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """GET on the load route: 405 `{"detail": "Method Not Allowed"}`."""
        answer = await call(client, "GET", f"{backend.url}/v1/load_lora_adapter")
        assert answer.status == 405
        assert answer.content_type == "application/json"
        assert answer.json() == {"detail": "Method Not Allowed"}


CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}]})
COMPLETION = ("/v1/completions", {"prompt": "hello"})


@pytest.mark.parametrize(("route", "payload"), [CHAT, COMPLETION], ids=["chat", "completion"])
class TestInference:
    """Completions and chat completions: who served the request, and the streaming format."""

    async def test_answer_names_the_adapter(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        unique_name: NameFactory,
        route: str,
        payload: dict[str, Any],
    ) -> None:
        """A request naming an adapter answers JSON with `model` = that adapter name."""
        name = unique_name("infer")
        assert (await load(client, backend, name, backend.adapter_dirs[0])).status == 200
        answer = await call(
            client, "POST", f"{backend.url}{route}", {**payload, "model": name, "max_tokens": 3}
        )
        assert answer.status == 200, answer.text
        assert answer.content_type == "application/json"
        body = answer.json()
        assert body["model"] == name
        assert body["object"] == ("chat.completion" if route == CHAT[0] else "text_completion")
        assert len(body["choices"]) == 1
        assert body["usage"]["completion_tokens"] >= 1

    async def test_answer_names_the_base_model(
        self, backend: Backend, client: aiohttp.ClientSession, route: str, payload: dict[str, Any]
    ) -> None:
        """A request naming the base model answers with `model` = the served name."""
        answer = await call(
            client,
            "POST",
            f"{backend.url}{route}",
            {**payload, "model": backend.served_name, "max_tokens": 2},
        )
        assert answer.status == 200, answer.text
        assert answer.json()["model"] == backend.served_name

    async def test_stream_is_sse_ending_with_done(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        unique_name: NameFactory,
        route: str,
        payload: dict[str, Any],
    ) -> None:
        """`stream: true`: text/event-stream of `data: {...}` events, each naming the adapter, then `data: [DONE]`."""
        name = unique_name("stream")
        assert (await load(client, backend, name, backend.adapter_dirs[1])).status == 200
        body = {**payload, "model": name, "max_tokens": 3, "stream": True}
        answer = await call(client, "POST", f"{backend.url}{route}", body)
        assert answer.status == 200, answer.text
        assert answer.content_type == "text/event-stream"
        assert answer.text.endswith("data: [DONE]\n\n")
        events = answer.text.split("\n\n")
        assert events[-1] == ""
        events = events[:-1]
        assert all(e.startswith("data: ") for e in events)
        chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
        assert len(chunks) >= 2
        expected_object = "chat.completion.chunk" if route == CHAT[0] else "text_completion"
        for chunk in chunks:
            assert chunk["model"] == name
            assert chunk["object"] == expected_object
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    async def test_unknown_model_is_404(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        unique_name: NameFactory,
        route: str,
        payload: dict[str, Any],
        stream: bool,
    ) -> None:
        """A request naming a model that is not served: 404 NotFoundError with `param: model`, even streamed."""
        name = unique_name("nobody")
        body = {**payload, "model": name, "max_tokens": 2, "stream": stream}
        answer = await call(client, "POST", f"{backend.url}{route}", body)
        assert_error(answer, 404, "NotFoundError", unknown_model(name, backend), param="model")

    async def test_unloaded_adapter_is_unknown(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        unique_name: NameFactory,
        route: str,
        payload: dict[str, Any],
    ) -> None:
        """After an unload, inference naming that adapter is a 404 (valid aliases list only the base)."""
        name = unique_name("gone")
        assert (await load(client, backend, name, backend.adapter_dirs[0])).status == 200
        assert (await unload(client, backend, name)).status == 200
        answer = await call(
            client, "POST", f"{backend.url}{route}", {**payload, "model": name, "max_tokens": 2}
        )
        assert_error(answer, 404, "NotFoundError", unknown_model(name, backend), param="model")

    async def test_valid_aliases_list_only_base_models(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        unique_name: NameFactory,
        route: str,
        payload: dict[str, Any],
    ) -> None:
        """The 404 message's "Valid aliases" lists the base model names, never the loaded adapters."""
        loaded, missing = unique_name("present"), unique_name("absent")
        assert (await load(client, backend, loaded, backend.adapter_dirs[0])).status == 200
        answer = await call(
            client, "POST", f"{backend.url}{route}", {**payload, "model": missing, "max_tokens": 2}
        )
        assert_error(answer, 404, "NotFoundError", unknown_model(missing, backend), param="model")


class TestRestart:
    """Nothing persists across a server restart."""

    async def test_restart_forgets_runtime_adapters(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """After a restart only the base model is listed, and the same name loads again with 200."""
        names = [unique_name("before"), unique_name("before")]
        for name, path in zip(names, backend.adapter_dirs, strict=False):
            assert (await load(client, backend, name, path)).status == 200
        await backend.restart()
        assert [m["id"] for m in await models(client, backend)] == [backend.served_name]
        assert_plain_success(await load(client, backend, names[0], backend.adapter_dirs[0]), added(names[0]))
