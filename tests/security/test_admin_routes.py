"""Clients of the proxy cannot reach vLLM's adapter and control routes: by default they get a 403
in the OpenAI shape, whatever spelling of the path they try, and the request never reaches the
model server in a form the server would route to a control handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from yarl import URL

from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.service import ProxyService
from tests.support.http import is_openai_error
from tests.support.recorder import Recorder

# vLLM's control routes (0.32), and the SageMaker-style adapter routes.
CONTROL = [
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/adapters",
    "/adapters/some-adapter",
    "/sleep",
    "/wake_up",
    "/collective_rpc",
    "/reset_prefix_cache",
    "/start_profile",
    "/stop_profile",
    "/update_weights",
    "/pause",
    "/scale_elastic_ep",
    "/server_info",
]
# Ways to spell /v1/load_lora_adapter that a normaliser might miss but a server might still route.
TRICKS = [
    "//v1/load_lora_adapter",
    "/v1//load_lora_adapter",
    "/v1/load_lora_adapter/",
    "/v1/./load_lora_adapter",
    "/v1/x/../load_lora_adapter",
    "/v1%2Fload_lora_adapter",
    "/v1%2fload_lora_adapter",
    "/v1/load%5Flora%5Fadapter",
    "/%76%31/load_lora_adapter",
    "/v1/load_lora_adapter?lora_name=x",
    "/v1/load_lora_adapter%2F",
    "/V1/LOAD_LORA_ADAPTER",
    "/v1/Load_Lora_Adapter",
    "/./v1/load_lora_adapter",
    "/v1/load_lora_adapter/.",
    "/adapters%2Fx",
    "/ADAPTERS",
    "//adapters//x",
    "/%2Fsleep",
]
CASE_VARIANTS = {"/V1/LOAD_LORA_ADAPTER", "/v1/Load_Lora_Adapter", "/ADAPTERS"}
ROUTED = {p for p in CONTROL if not p.startswith("/adapters/")}


def server_would_route(raw_path: str) -> bool:
    """Whether vLLM (uvicorn decodes %XX, Starlette matches exactly, redirects a trailing slash) would run a control handler."""
    path = unquote(raw_path.split("?", 1)[0])
    candidates = {path, path.rstrip("/") or "/"}
    return any(c in ROUTED or c.startswith("/adapters/") for c in candidates)


@pytest_asyncio.fixture
async def proxy_factory(
    tmp_path: Path, recorder: Recorder
) -> AsyncIterator[Callable[..., Awaitable[ProxyService]]]:
    made: list[ProxyService] = []

    async def make(**overrides: Any) -> ProxyService:
        proxy = ProxyService(
            ProxyOptions(upstream=recorder.url, host="127.0.0.1", port=0, **overrides),
            registry=CollectorRegistry(),
        )
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.stop(1.0)


async def _send(http: aiohttp.ClientSession, port: int, method: str, raw: str) -> tuple[int, Any]:
    url = URL(f"http://127.0.0.1:{port}{raw}", encoded=True)  # exactly these bytes on the wire
    async with http.request(method, url, json={"lora_name": "x", "lora_path": "/etc"}) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, None


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_control_routes_are_refused(
    proxy_factory: Callable[..., Awaitable[ProxyService]],
    recorder: Recorder,
    http: aiohttp.ClientSession,
    method: str,
) -> None:
    """Every vLLM control route answers 403 in the OpenAI shape through the proxy and nothing reaches the server."""
    proxy = await proxy_factory()
    for path in CONTROL:
        status, body = await _send(http, proxy.port, method, path)
        assert status == 403, path
        assert is_openai_error(body) and body["error"]["type"] == "PermissionDeniedError"
    assert recorder.seen == []


async def test_path_tricks_never_reach_a_control_handler(
    proxy_factory: Callable[..., Awaitable[ProxyService]], recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    """Double slashes, dot segments, %2F, encoded letters, trailing slash, case: refused, or forwarded in a form vLLM does not route."""
    proxy = await proxy_factory()
    refused = []
    for raw in TRICKS:
        before = len(recorder.seen)
        status, body = await _send(http, proxy.port, "POST", raw)
        if status == 403:
            assert is_openai_error(body)
            assert len(recorder.seen) == before
            refused.append(raw)
    leaked = [raw for _, raw in recorder.seen if server_would_route(raw)]
    assert leaked == []
    # Routes are case-sensitive in vLLM, so other cases may pass (to a 404); everything else is refused.
    assert [t for t in TRICKS if t not in refused and t not in CASE_VARIANTS] == []


async def test_admin_routes_pass_only_when_allowed(
    proxy_factory: Callable[..., Awaitable[ProxyService]], recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    """With --allow-admin-routes the same request is forwarded (the 403 above is the proxy's choice, not an accident)."""
    proxy = await proxy_factory(allow_admin_routes=True)
    status, _ = await _send(http, proxy.port, "POST", "/v1/load_lora_adapter")
    assert status == 200
    assert recorder.seen == [("POST", "/v1/load_lora_adapter")]
