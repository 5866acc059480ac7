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
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

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


async def post(client: aiohttp.ClientSession, backend: Backend, route: str, body: Any) -> Answer:
    """POST `body` (JSON) to `route` of the server."""
    return await call(client, "POST", f"{backend.url}{route}", body)


async def load(client: aiohttp.ClientSession, backend: Backend, name: str, path: str, **extra: Any) -> Answer:
    return await post(
        client, backend, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path, **extra}
    )


async def unload(client: aiohttp.ClientSession, backend: Backend, name: str) -> Answer:
    return await post(client, backend, "/v1/unload_lora_adapter", {"lora_name": name})


async def models(client: aiohttp.ClientSession, backend: Backend) -> list[dict[str, Any]]:
    answer = await call(client, "GET", f"{backend.url}/v1/models")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    body = answer.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


async def loaded(client: aiohttp.ClientSession, backend: Backend, name: str, adapter: int = 0) -> str:
    """`name`, once loaded from the server's `adapter`-th adapter directory (asserted)."""
    assert (await load(client, backend, name, backend.adapter_dirs[adapter])).status == 200
    return name


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

    async def test_success_answers_have_no_content_type(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Load, unload, POST /adapters and DELETE /adapters/X succeed with a bare sentence and no Content-Type."""
        name, other = unique_name("bare"), unique_name("sage")
        path = backend.adapter_dirs[0]
        answers = [
            (await load(client, backend, name, path), added(name)),
            (await unload(client, backend, name), removed(name)),
            (
                await call(client, "POST", f"{backend.url}/adapters", {"name": other, "src": path}),
                f"Adapter {other} registered",
            ),
            (
                await call(client, "DELETE", f"{backend.url}/adapters/{other}"),
                f"Adapter {other} unregistered",
            ),
        ]
        for answer, text in answers:
            assert_plain_success(answer, text)
            assert answer.content_type is None  # no header at all (clients read application/octet-stream)
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
    """Every row of the error table in docs/vllm-api.md, plus the validation answers seen on 0.32.

    Rows: already loaded, empty name or path, base model name, path not found, not on the hub,
    rank too high, unknown name on unload (here); unknown model on inference (`TestInference`).
    """

    async def test_already_loaded(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """Loading a registered name without load_inplace: 400 InvalidUserInput, root unchanged."""
        name = await loaded(client, backend, unique_name("dup"))
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
        answer = await post(client, backend, "/v1/load_lora_adapter", {"lora_name": "x"})
        assert answer.status == 400
        assert answer.content_type == "application/json"
        error = answer.json()["error"]
        assert error["type"] == "Bad Request"
        assert error["param"] == "body.lora_path"
        assert error["code"] == 400
        assert error["message"].startswith("1 validation error:")
        assert "'loc': 'body.lora_path'" in error["message"]
        assert "'msg': 'Field required'" in error["message"]

    async def test_load_inplace_null_is_a_validation_error(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """`"load_inplace": null` is not "false": 400 "Bad Request" at `body.load_inplace`, nothing loaded."""
        answer = await load(client, backend, unique_name("null"), backend.adapter_dirs[0], load_inplace=None)
        message = (
            "1 validation error:\n  {'type': 'bool_type', 'loc': 'body.load_inplace', "
            "'msg': 'Input should be a valid boolean', 'input': 'None'}"
        )
        assert_error(answer, 400, "Bad Request", message, param="body.load_inplace")
        assert len(await models(client, backend)) == 1

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
        name = await loaded(client, backend, unique_name("twice"))
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
        name = await loaded(client, backend, unique_name("infer"))
        answer = await post(client, backend, route, {**payload, "model": name, "max_tokens": 3})
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
        answer = await post(
            client, backend, route, {**payload, "model": backend.served_name, "max_tokens": 2}
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
        name = await loaded(client, backend, unique_name("stream"), 1)
        body = {**payload, "model": name, "max_tokens": 3, "stream": True}
        answer = await post(client, backend, route, body)
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
        answer = await post(client, backend, route, body)
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
        name = await loaded(client, backend, unique_name("gone"))
        assert (await unload(client, backend, name)).status == 200
        answer = await post(client, backend, route, {**payload, "model": name, "max_tokens": 2})
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
        await loaded(client, backend, unique_name("present"))
        missing = unique_name("absent")
        answer = await post(client, backend, route, {**payload, "model": missing, "max_tokens": 2})
        assert_error(answer, 404, "NotFoundError", unknown_model(missing, backend), param="model")


# Keys of the answers (values aside): vLLM 0.32 sends these null extras, clients must tolerate them.
CHAT_KEYS = {
    "id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
    "prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics",
}  # fmt: skip
CHAT_CHOICE_KEYS = {
    "index",
    "message",
    "logprobs",
    "finish_reason",
    "stop_reason",
    "token_ids",
    "routed_experts",
}
COMPLETION_KEYS = {
    "id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
    "kv_transfer_params", "ec_transfer_params", "metrics",
}  # fmt: skip
COMPLETION_CHOICE_KEYS = {
    "index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids", "prompt_logprobs",
    "prompt_token_ids", "routed_experts",
}  # fmt: skip
CHUNK_KEYS = {"id", "object", "created", "model", "choices"}


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE answer (the final `[DONE]` left out)."""
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


class TestAnswerShapes:
    """The exact key sets of inference answers, extras included."""

    @pytest.mark.parametrize(
        ("route", "payload", "top", "choice"),
        [(*CHAT, CHAT_KEYS, CHAT_CHOICE_KEYS), (*COMPLETION, COMPLETION_KEYS, COMPLETION_CHOICE_KEYS)],
        ids=["chat", "completion"],
    )
    async def test_plain_answer_keys(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        route: str,
        payload: dict[str, Any],
        top: set[str],
        choice: set[str],
    ) -> None:
        """A non-streamed answer has exactly vLLM's top-level and per-choice keys."""
        answer = await post(client, backend, route, {**payload, "max_tokens": 2})
        assert answer.status == 200, answer.text
        body = answer.json()
        assert set(body) == top
        assert set(body["choices"][0]) == choice
        assert body["choices"][0]["routed_experts"] is None
        assert body["ec_transfer_params"] is None
        assert body["metrics"] is None

    @pytest.mark.parametrize(
        ("route", "payload", "first"),
        [(*CHAT, CHUNK_KEYS | {"prompt_token_ids", "prompt_text"}), (*COMPLETION, CHUNK_KEYS)],
        ids=["chat", "completion"],
    )
    async def test_stream_chunk_keys(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        route: str,
        payload: dict[str, Any],
        first: set[str],
    ) -> None:
        """Streamed: the first chunk (chat: with null prompt_token_ids/prompt_text), plain middle chunks,
        and the last one adding system_fingerprint."""
        body = {**payload, "max_tokens": 3, "stream": True, "ignore_eos": True}
        answer = await post(client, backend, route, body)
        assert answer.status == 200, answer.text
        chunks = sse_chunks(answer.text)
        assert set(chunks[0]) == first
        if route == CHAT[0]:
            assert chunks[0]["prompt_token_ids"] is None
            assert chunks[0]["prompt_text"] is None
        for chunk in chunks[1:-1]:
            assert set(chunk) == CHUNK_KEYS
        assert set(chunks[-1]) == CHUNK_KEYS | {"system_fingerprint"}


def too_many(param: str, value: int, backend: Backend) -> str:
    return (
        f"{param}={value} cannot be greater than max_model_len={backend.max_model_len}. "
        f"Please request fewer output tokens. (parameter={param}, value={value})"
    )


class TestInferenceValidation:
    """vLLM's own request checks (400 BadRequestError, `param` naming the field)."""

    @pytest.mark.parametrize("prompt", [None, "", "absent"], ids=["null", "empty", "absent"])
    async def test_completion_needs_a_prompt(
        self, backend: Backend, client: aiohttp.ClientSession, prompt: str | None
    ) -> None:
        """A completion without a prompt (absent, null or "") is refused, even before the model is looked up."""
        body: dict[str, Any] = {"model": "no-such-model", "max_tokens": 2}
        if prompt != "absent":
            body["prompt"] = prompt
        answer = await post(client, backend, "/v1/completions", body)
        message = "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)"
        assert_error(answer, 400, "BadRequestError", message, param="prompt")

    @pytest.mark.parametrize(("route", "payload"), [CHAT, COMPLETION], ids=["chat", "completion"])
    @pytest.mark.parametrize("value", [0, -3])
    async def test_max_tokens_below_one(
        self, backend: Backend, client: aiohttp.ClientSession, route: str, payload: dict[str, Any], value: int
    ) -> None:
        """`max_tokens` 0 or negative: 400 naming max_tokens and the value."""
        answer = await post(client, backend, route, {**payload, "max_tokens": value})
        message = f"max_tokens must be at least 1, got {value}. (parameter=max_tokens, value={value})"
        assert_error(answer, 400, "BadRequestError", message, param="max_tokens")

    @pytest.mark.parametrize(("route", "payload"), [CHAT, COMPLETION], ids=["chat", "completion"])
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    async def test_max_tokens_above_max_model_len(
        self,
        backend: Backend,
        client: aiohttp.ClientSession,
        route: str,
        payload: dict[str, Any],
        stream: bool,
    ) -> None:
        """`max_tokens` above the server's max_model_len: 400 before anything is streamed."""
        body = {**payload, "max_tokens": 1000, "stream": stream}
        answer = await post(client, backend, route, body)
        assert_error(
            answer, 400, "BadRequestError", too_many("max_tokens", 1000, backend), param="max_tokens"
        )

    async def test_max_tokens_equal_to_max_model_len_is_accepted(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """`max_tokens` = max_model_len is allowed (the answer is cut to the context left)."""
        body = {**COMPLETION[1], "max_tokens": backend.max_model_len}
        answer = await post(client, backend, "/v1/completions", body)
        assert answer.status == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] < backend.max_model_len

    async def test_chat_names_max_completion_tokens_when_it_is_set(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """For chat, max_completion_tokens wins over max_tokens and is the field named in the 400."""
        body = {**CHAT[1], "max_completion_tokens": 1000, "max_tokens": 3}
        answer = await post(client, backend, "/v1/chat/completions", body)
        message = too_many("max_completion_tokens", 1000, backend)
        assert_error(answer, 400, "BadRequestError", message, param="max_completion_tokens")

    async def test_empty_conversation(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """Chat with `messages: []`: 400 without a param."""
        body = {"messages": [], "max_tokens": 2}
        answer = await post(client, backend, "/v1/chat/completions", body)
        message = "Cannot apply chat template to an empty conversation. Provide at least one message."
        assert_error(answer, 400, "BadRequestError", message)

    async def test_empty_prompt_list(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """A completion with `prompt: []`: 400 without a param."""
        answer = await post(client, backend, "/v1/completions", {"prompt": [], "max_tokens": 2})
        assert_error(answer, 400, "BadRequestError", "You must pass at least one prompt")

    async def test_lax_integers(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """Like pydantic's lax mode, `max_tokens` "2" is 2; 2.5 is a 400 "Bad Request"."""
        answer = await post(client, backend, "/v1/completions", {**COMPLETION[1], "max_tokens": "2"})
        assert answer.status == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] <= 2
        answer = await post(client, backend, "/v1/completions", {**COMPLETION[1], "max_tokens": 2.5})
        message = (
            "1 validation error:\n  {'type': 'int_from_float', 'loc': 'body.max_tokens', "
            "'msg': 'Input should be a valid integer, got a number with a fractional part', 'input': '2.5'}"
        )
        assert_error(answer, 400, "Bad Request", message, param="body.max_tokens")


async def scrape(client: aiohttp.ClientSession, backend: Backend) -> dict[str, list[Sample]]:
    """`GET /metrics` parsed: family name -> samples (checks status and content type)."""
    answer = await call(client, "GET", f"{backend.url}/metrics")
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    families: dict[str, list[Sample]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(answer.text):
        families[family.name] = list(family.samples)
        types[family.name] = family.type
    for name, kind in EXPECTED_FAMILIES.items():
        assert types.get(name) == kind, name
    return families


EXPECTED_FAMILIES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:lora_requests_info": "gauge",
}


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels`."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


class TestMetrics:
    """`GET /metrics`: vLLM's Prometheus series that dashboards and the sidecar docs name."""

    async def test_engine_series_of_an_idle_server(
        self, backend: Backend, client: aiohttp.ClientSession
    ) -> None:
        """An idle server reports nothing running or waiting, per engine and served model name."""
        families = await scrape(client, backend)
        labels = {"engine": "0", "model_name": backend.served_name}
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            assert [(s.name, s.labels, s.value) for s in families[name]] == [(name, labels, 0.0)]
        reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"]}
        assert {"stop", "length", "abort", "error"} <= reasons

    async def test_any_method_is_answered(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """`POST /metrics` is answered like GET (vLLM mounts prometheus_client's app on the path)."""
        answer = await call(client, "POST", f"{backend.url}/metrics")
        assert answer.status == 200
        assert "# TYPE vllm:num_requests_running gauge" in answer.text

    async def test_lora_requests_info(self, backend: Backend, client: aiohttp.ClientSession) -> None:
        """`vllm:lora_requests_info` carries max_lora and the running/waiting adapter sets; idle means empty."""
        samples = (await scrape(client, backend))["vllm:lora_requests_info"]
        assert samples
        for sample in samples:
            assert set(sample.labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
            assert sample.labels["max_lora"] == str(backend.max_loras)
        assert any(s.labels["running_lora_adapters"] == "" for s in samples)

    async def test_counters_follow_a_request(
        self, backend: Backend, client: aiohttp.ClientSession, unique_name: NameFactory
    ) -> None:
        """One 3-token completion on an adapter adds 3 generation tokens and one finished-by-length request."""
        name = await loaded(client, backend, unique_name("metrics"))
        labels = {"model_name": backend.served_name}
        before = await scrape(client, backend)
        body = {**COMPLETION[1], "model": name, "max_tokens": 3, "ignore_eos": True}
        answer = await post(client, backend, "/v1/completions", body)
        assert answer.status == 200, answer.text
        after = await scrape(client, backend)
        generated = "vllm:generation_tokens_total"
        assert (
            value_of(after["vllm:generation_tokens"], generated, **labels)
            == value_of(before["vllm:generation_tokens"], generated, **labels) + 3
        )
        success = "vllm:request_success_total"
        assert (
            value_of(after["vllm:request_success"], success, finished_reason="length", **labels)
            == value_of(before["vllm:request_success"], success, finished_reason="length", **labels) + 1
        )
        assert value_of(after["vllm:prompt_tokens"], "vllm:prompt_tokens_total", **labels) > value_of(
            before["vllm:prompt_tokens"], "vllm:prompt_tokens_total", **labels
        )


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
