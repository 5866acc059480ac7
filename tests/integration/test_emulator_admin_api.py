"""The emulator's LoRA admin routes over real HTTP: every row of docs/vllm-api.md's table, vLLM's wording."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lora_syncer.emulator import Emulator, EmulatorConfig, Faults

LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"


def write_adapter(root: Path, name: str, rank: int = 8) -> str:
    path = root / name
    path.mkdir()
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(served_model_name="base", served_model_aliases=("alias",), max_lora_rank=8)
    async with Emulator(config) as e:
        yield e


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, str | None, str]:
    async with http.request(method, url, json=body, **kw) as resp:
        return resp.status, resp.headers.get("Content-Type"), await resp.text()


def error(text: str) -> dict[str, Any]:
    body = json.loads(text)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


async def model_roots(http: aiohttp.ClientSession, emu: Emulator) -> list[tuple[str, str | None]]:
    async with http.get(f"{emu.url}/v1/models") as resp:
        return [(c["id"], c["root"]) for c in (await resp.json())["data"]]


class TestLoad:
    async def test_success_is_plain_text(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """A good load answers 200 with vLLM's sentence and no Content-Type, and the adapter is listed."""
        path = write_adapter(tmp_path, "a1")
        status, ctype, text = await call(http, "POST", emu.url + LOAD, {"lora_name": "a1", "lora_path": path})
        assert (status, text) == (200, "Success: LoRA adapter 'a1' added successfully.")
        assert ctype is None
        assert emu.loaded() == {"a1": path}

    async def test_already_loaded(self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
        """A second load of the same name without load_inplace is 400 InvalidUserInput."""
        path = write_adapter(tmp_path, "a1")
        await call(http, "POST", emu.url + LOAD, {"lora_name": "a1", "lora_path": path})
        status, ctype, text = await call(http, "POST", emu.url + LOAD, {"lora_name": "a1", "lora_path": path})
        assert (status, ctype) == (400, "application/json")
        assert error(text) == {
            "message": "The lora adapter 'a1' has already been loaded. If you want to load the adapter in place, "
            "set 'load_inplace' to True.",
            "type": "InvalidUserInput",
            "param": None,
            "code": 400,
        }

    @pytest.mark.parametrize(
        "body", [{"lora_name": "", "lora_path": "x"}, {"lora_name": "x", "lora_path": ""}]
    )
    async def test_empty_name_or_path(
        self, emu: Emulator, http: aiohttp.ClientSession, body: dict[str, str]
    ) -> None:
        """An empty name or path is 400 asking for both."""
        status, _, text = await call(http, "POST", emu.url + LOAD, body)
        assert status == 400
        assert error(text)["message"] == "Both 'lora_name' and 'lora_path' must be provided."

    @pytest.mark.parametrize("name", ["base", "alias"])
    async def test_base_model_name(self, emu: Emulator, http: aiohttp.ClientSession, name: str) -> None:
        """Any served base name is refused as an adapter name (400)."""
        status, _, text = await call(http, "POST", emu.url + LOAD, {"lora_name": name, "lora_path": "org/x"})
        assert status == 400
        assert error(text) == {
            "message": f"The lora adapter '{name}' conflicts with a served base model.",
            "type": "InvalidUserInput",
            "param": None,
            "code": 400,
        }

    async def test_missing_path(self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
        """A path that does not exist is 404 NotFoundError with the path scrubbed."""
        status, _, text = await call(
            http, "POST", emu.url + LOAD, {"lora_name": "nope", "lora_path": str(tmp_path / "missing")}
        )
        assert status == 404
        assert error(text) == {
            "message": "Loading lora nope failed: No adapter found for <path>",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
        assert emu.loaded() == {}

    async def test_directory_without_adapter_config(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """A directory without adapter_config.json is 404."""
        (tmp_path / "empty").mkdir()
        status, _, _ = await call(
            http, "POST", emu.url + LOAD, {"lora_name": "e", "lora_path": str(tmp_path / "empty")}
        )
        assert status == 404

    async def test_hub_id_when_disallowed(self, http: aiohttp.ClientSession) -> None:
        """With hub ids disallowed an org/name source is 404 naming it as sent."""
        async with Emulator(EmulatorConfig(allow_hub_ids=False)) as emu:
            status, _, text = await call(
                http, "POST", emu.url + LOAD, {"lora_name": "h", "lora_path": "org/name"}
            )
        assert status == 404
        assert error(text)["message"] == "Loading lora h failed: No adapter found for org/name"

    async def test_hub_id_when_allowed(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """By default an org/name source loads and is listed with that root."""
        status, _, _ = await call(
            http, "POST", emu.url + LOAD, {"lora_name": "h", "lora_path": "ttt421/nec119-small-segment-lora"}
        )
        assert status == 200
        assert (await model_roots(http, emu))[-1] == ("h", "ttt421/nec119-small-segment-lora")

    async def test_rank_above_maximum(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """An adapter whose r exceeds max_lora_rank is 500 InternalServerError with both numbers."""
        path = write_adapter(tmp_path, "big", rank=64)
        status, _, text = await call(http, "POST", emu.url + LOAD, {"lora_name": "big", "lora_path": path})
        assert status == 500
        assert error(text) == {
            "message": "Call to add_lora method failed: Worker failed with error 'LoRA rank 64 is greater than "
            "max_lora_rank 8.', please check the stack trace above for the root cause",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
        assert emu.loaded() == {}

    async def test_unknown_fields_are_ignored(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Fields vLLM does not know (the old sidecar's base_model_name) are ignored."""
        body = {"lora_name": "h", "lora_path": "org/h", "base_model_name": "whatever"}
        status, _, _ = await call(http, "POST", emu.url + LOAD, body)
        assert status == 200

    async def test_validation_error(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A missing field is 400 "Bad Request" naming the field, as FastAPI reports it in vLLM."""
        status, _, text = await call(http, "POST", emu.url + LOAD, {"lora_name": "x"})
        assert status == 400
        err = error(text)
        assert (err["type"], err["param"]) == ("Bad Request", "body.lora_path")

    async def test_wrong_content_type(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """A body not sent as application/json is refused with vLLM's media-type message."""
        status, _, text = await call(
            http,
            "POST",
            emu.url + LOAD,
            None,
            data=b'{"lora_name":"q","lora_path":"/x"}',
            headers={"Content-Type": "text/plain"},
        )
        assert status == 400
        assert "Unsupported Media Type" in error(text)["message"]


class TestInPlace:
    async def test_inplace_swaps_root_and_keeps_position(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """load_inplace on a registered name swaps its root and keeps its place in /v1/models."""
        p1, p2, pb = (
            write_adapter(tmp_path, "v1"),
            write_adapter(tmp_path, "v2"),
            write_adapter(tmp_path, "b"),
        )
        await call(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": p1})
        await call(http, "POST", emu.url + LOAD, {"lora_name": "b", "lora_path": pb})
        status, _, text = await call(
            http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": p2, "load_inplace": True}
        )
        assert (status, text) == (200, "Success: LoRA adapter 'a' added successfully.")
        assert await model_roots(http, emu) == [("base", "base"), ("alias", "base"), ("a", p2), ("b", pb)]

    async def test_inplace_on_unregistered_name_loads(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """load_inplace on a name that is not registered simply loads it."""
        path = write_adapter(tmp_path, "n")
        body = {"lora_name": "n", "lora_path": path, "load_inplace": True}
        assert (await call(http, "POST", emu.url + LOAD, body))[0] == 200
        assert emu.loaded() == {"n": path}

    async def test_failed_inplace_keeps_old_root(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """A failing in-place reload leaves the adapter registered with its previous root."""
        path = write_adapter(tmp_path, "ok")
        await call(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": path})
        body = {"lora_name": "a", "lora_path": str(tmp_path / "missing"), "load_inplace": True}
        assert (await call(http, "POST", emu.url + LOAD, body))[0] == 404
        assert emu.loaded() == {"a": path}


class TestUnload:
    async def test_unload(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Unloading a registered adapter answers vLLM's sentence (no Content-Type) and removes it from /v1/models."""
        await call(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"})
        status, ctype, text = await call(http, "POST", emu.url + UNLOAD, {"lora_name": "a"})
        assert (status, text) == (200, "Success: LoRA adapter 'a' removed successfully.")
        assert ctype is None
        assert [m for m, _ in await model_roots(http, emu)] == ["base", "alias"]

    async def test_unload_unknown(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Unloading a name that is not registered is 404 NotFoundError."""
        status, _, text = await call(http, "POST", emu.url + UNLOAD, {"lora_name": "zzz"})
        assert status == 404
        assert error(text) == {
            "message": "The lora adapter 'zzz' cannot be found.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }

    async def test_unload_empty_name(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """An empty name on unload is 400."""
        status, _, text = await call(http, "POST", emu.url + UNLOAD, {"lora_name": ""})
        assert status == 400
        assert error(text)["message"] == "'lora_name' needs to be provided to unload a LoRA adapter."


class TestRuntimeUpdatingDisabled:
    async def test_admin_routes_answer_fastapi_404(self, http: aiohttp.ClientSession) -> None:
        """Without runtime LoRA updating both admin routes answer 404 {"detail":"Not Found"}."""
        async with Emulator(EmulatorConfig(runtime_lora_updating=False)) as emu:
            for path, body in (
                (LOAD, {"lora_name": "a", "lora_path": "org/a"}),
                (UNLOAD, {"lora_name": "a"}),
            ):
                status, ctype, text = await call(http, "POST", emu.url + path, body)
                assert (status, ctype, json.loads(text)) == (404, "application/json", {"detail": "Not Found"})
            status, _, _ = await call(http, "POST", emu.url + "/adapters", {"name": "a", "src": "org/a"})
            assert status == 404
            assert emu.loaded() == {}

    async def test_toggle_at_runtime(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Switching the fault off and on again removes and restores the routes."""
        emu.faults.runtime_lora_updating = False
        assert (await call(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"}))[0] == 404
        emu.faults.runtime_lora_updating = True
        assert (await call(http, "POST", emu.url + LOAD, {"lora_name": "a", "lora_path": "org/a"}))[0] == 200


class TestSageMakerRoutes:
    async def test_register_and_unregister(
        self, emu: Emulator, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """POST /adapters and DELETE /adapters/{name} load and unload with their own sentences."""
        path = write_adapter(tmp_path, "s1")
        status, _, text = await call(http, "POST", emu.url + "/adapters", {"name": "s1", "src": path})
        assert (status, text) == (200, "Adapter s1 registered")
        assert emu.loaded() == {"s1": path}
        status, _, text = await call(http, "POST", emu.url + "/adapters", {"name": "s1", "src": path})
        assert status == 400
        assert "has already been loaded" in error(text)["message"]
        status, _, text = await call(http, "DELETE", emu.url + "/adapters/s1")
        assert (status, text) == (200, "Adapter s1 unregistered")
        status, _, text = await call(http, "DELETE", emu.url + "/adapters/s1")
        assert status == 404
        assert error(text)["message"] == "The lora adapter 's1' cannot be found."

    async def test_register_validation(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """An empty name is a 400 carrying pydantic's error list."""
        status, _, text = await call(http, "POST", emu.url + "/adapters", {"name": "", "src": "x"})
        assert status == 400
        err = error(text)
        assert err["type"] == "Bad Request"
        assert (
            json.loads(err["message"])[0]["msg"]
            == "Value error, The parameter name cannot be an empty string"
        )


class TestRoutingAndConcurrency:
    async def test_unknown_route_and_wrong_method(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Unknown paths are 404 and known paths with the wrong method 405, both FastAPI-shaped."""
        status, _, text = await call(http, "GET", emu.url + "/nonexistent")
        assert (status, json.loads(text)) == (404, {"detail": "Not Found"})
        async with http.get(emu.url + LOAD) as resp:
            assert (resp.status, await resp.json(), resp.headers["Allow"]) == (
                405,
                {"detail": "Method Not Allowed"},
                "POST",
            )

    async def test_concurrent_loads_of_one_name(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Concurrent loads of the same name give one 200 and 400s for the rest."""
        emu.faults.load_delay = 0.05
        body = {"lora_name": "same", "lora_path": "org/same"}
        results = await asyncio.gather(*(call(http, "POST", emu.url + LOAD, body) for _ in range(4)))
        assert sorted(status for status, _, _ in results) == [200, 400, 400, 400]

    async def test_concurrent_loads_of_different_names(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Loads of different names run concurrently and all succeed, listed in completion order."""
        emu.faults = Faults(load_delay=0.05)
        bodies = [{"lora_name": f"n{i}", "lora_path": f"org/n{i}"} for i in range(5)]
        results = await asyncio.gather(*(call(http, "POST", emu.url + LOAD, b) for b in bodies))
        assert [status for status, _, _ in results] == [200] * 5
        assert sorted(emu.loaded()) == [f"n{i}" for i in range(5)]
        assert emu.call_log.max_admin_in_flight > 1
