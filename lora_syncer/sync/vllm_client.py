"""A thin aiohttp client for the vLLM endpoints the syncer uses.

One `ClientSession` per server, reused; explicit timeouts on every call; every third-party
error translated here into `lora_syncer.sync.errors` types. Transient failures are retried
with `TRANSIENT_RETRY` (bounded, jittered exponential backoff), logged precisely enough to
assert on ("attempt 2/3 failed; will retry").
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog

from lora_syncer.memory import trim_heap
from lora_syncer.sync.errors import (
    AdapterRejected,
    AuthenticationFailed,
    RuntimeUpdatingDisabled,
    ServerError,
    ServerTimeout,
    ServerUnavailable,
    TransientError,
    UnexpectedResponse,
    VLLMError,
)
from lora_syncer.sync.plan import ObservedModel

log = structlog.get_logger("lora_syncer.vllm")

# A `/v1/models` answer this large (about 1,000 adapters) is followed by a heap trim.
_BIG_ANSWER = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times one call is tried within a pass, and how long to wait between tries."""

    attempts: int = 3
    initial: float = 0.2
    maximum: float = 2.0


TRANSIENT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    read: float = 15.0
    load: float = 120.0  # a load may fetch an adapter from a hub


def _shared(text: Any) -> Any:
    return sys.intern(text) if type(text) is str else text


# `GET /v1/models` with 10,000 adapters is ~4 MB of JSON: decoded whole, each model card with
# its permission list is ~1.5 KiB of objects (~13 MiB per resync, a heap high-water mark the
# process keeps). Only these keys are read; every other one is dropped as its object is decoded.
_MODEL_KEYS = frozenset(("data", "id", "root", "parent"))
_MODELS_DECODER = json.JSONDecoder(
    object_pairs_hook=lambda pairs: {k: v for k, v in pairs if k in _MODEL_KEYS}
)


def v1_suffix_problem(url: str) -> str | None:
    """A server URL ending in `/v1` would make every call `/v1/v1/...`: say to drop it."""
    trimmed = url.rstrip("/")
    if trimmed.endswith("/v1"):
        return f"{url!r} ends with /v1: drop the /v1 (use {trimmed[:-3]!r}); the syncer adds /v1/... itself"
    return None


def os_error_in_words(err: BaseException | None) -> str:
    """An OS-level connection error as a person says it (never a class name)."""
    if isinstance(err, socket.gaierror):
        return "host name not found"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed ({getattr(err, 'reason', None) or 'see the server certificate'})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing listening on that port)"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return "connection failed"


def connection_error_in_words(exc: BaseException) -> str:
    """The syncer's one mapping from a client exception to words (refused, timed out, ...)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted (check the server's certificate or use http://)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed (is the server speaking https?)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return os_error_in_words(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "not a valid http(s) URL (it must start with http:// or https://)"
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return os_error_in_words(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return "connection failed"


class LoadOutcome:
    LOADED = "loaded"
    ALREADY_LOADED = "already_loaded"


class UnloadOutcome:
    UNLOADED = "unloaded"
    NOT_FOUND = "not_found"


def _error_body(text: str) -> tuple[str, str | None]:
    """(message, type) from vLLM's error JSON, nested or flat (older servers)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500], None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner.get("message", "")), (str(inner["type"]) if inner.get("type") else None)
        if "detail" in body:
            return str(body["detail"]), None
    return text.strip()[:500], None


def _is_route_missing(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("detail") == "Not Found" and "error" not in body


class VLLMClient:
    """Calls one vLLM server. Create inside a running loop; close with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = TRANSIENT_RETRY,
        max_connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._retry = retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=max_connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read),
            raise_for_status=False,
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> VLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transport -------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, json_body: Any = None, read_timeout: float | None = None
    ) -> tuple[int, str]:
        url = self.base_url + path
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeouts.connect, sock_read=read_timeout or self._timeouts.read
        )
        try:
            async with self._session.request(method, url, json=json_body, timeout=timeout) as resp:
                return resp.status, await resp.text(errors="replace")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ServerTimeout(f"{method} {url}: no answer in time (timed out)") from None
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            words = connection_error_in_words(exc)
            raise ServerUnavailable(f"{method} {url}: cannot connect: {words}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ServerUnavailable(
                f"{method} {url}: connection lost: {connection_error_in_words(exc)}"
            ) from None

    def _translate(self, path: str, status: int, text: str) -> VLLMError:
        """Map a non-2xx answer to an error type. The only place response statuses are interpreted."""
        message, _ = _error_body(text)
        if status in (401, 403):
            return AuthenticationFailed(
                f"{path}: the server refused the request ({status}): check --api-key / VLLM_API_KEY",
                status=status,
            )
        if status == 404 and _is_route_missing(text):
            return (
                RuntimeUpdatingDisabled()
                if "lora_adapter" in path or path.startswith("/adapters")
                else (UnexpectedResponse(f"{path}: route not found on the server", status=status))
            )
        if status >= 500:
            return ServerError(f"{path}: server error {status}: {message}", status=status)
        if status in (400, 404, 409, 422):
            return AdapterRejected(message, status=status)
        return UnexpectedResponse(f"{path}: unexpected status {status}: {message}", status=status)

    async def _with_retry(self, what: str, call: Callable[[], Awaitable[T]], **log_kw: Any) -> T:
        """`call()`, tried up to `attempts` times while it fails with a TransientError.

        Between tries: initial x 2^(try-1) plus up to `initial` of jitter, at most `maximum`
        seconds. A plain loop (no retry library on the sidecar's path: it is all this needs).
        """
        policy = self._retry
        attempts = max(1, policy.attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await call()
            except TransientError as exc:
                if attempt == attempts:
                    raise
                log.warning(
                    f"attempt {attempt}/{policy.attempts} failed; will retry",
                    call=what,
                    error=str(exc),
                    **log_kw,
                )
                delay = policy.initial * 2 ** (attempt - 1) + random.uniform(0, policy.initial)
                await asyncio.sleep(max(0.0, min(delay, policy.maximum)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    # --- endpoints -------------------------------------------------------------------------

    async def health(self) -> bool:
        """One `GET /health` (no retry): True on 200."""
        return await self.health_problem() is None

    async def health_problem(self) -> str | None:
        """One `GET /health` (no retry): None on 200, else why not, in words, with the URL."""
        try:
            status, _ = await self._request("GET", "/health", read_timeout=self._timeouts.connect)
        except TransientError as exc:
            return exc.message
        if status != 200:
            return f"GET {self.base_url}/health: HTTP {status}"
        return None

    async def version(self) -> str | None:
        """The server's version from `GET /version`, or None when it does not say."""
        try:
            status, text = await self._request("GET", "/version")
        except TransientError:
            return None
        if status != 200:
            return None
        try:
            value = json.loads(text).get("version")
        except (ValueError, AttributeError):
            return None
        return str(value) if value else None

    async def metrics_text(self) -> str:
        """`GET /metrics` (Prometheus text), retried on transient errors."""

        async def call() -> str:
            status, text = await self._request("GET", "/metrics")
            if status != 200:
                raise self._translate("/metrics", status, text)
            return text

        return await self._with_retry("metrics", call)

    async def warm_up(self, name: str, prompt: str) -> None:
        """One `POST /v1/completions` for 1 token on `name`, retried on transient errors.

        Waits as long as a load may (the first request of an adapter can be slow); a non-2xx
        answer raises with vLLM's message.
        """
        body = {"model": name, "prompt": prompt, "max_tokens": 1}

        async def call() -> None:
            status, text = await self._request(
                "POST", "/v1/completions", json_body=body, read_timeout=self._timeouts.load
            )
            if not 200 <= status < 300:
                raise self._translate("/v1/completions", status, text)

        await self._with_retry("warm_up", call, adapter=name)

    async def list_models(self) -> list[ObservedModel]:
        """`GET /v1/models`, retried on transient errors."""

        async def call() -> list[ObservedModel]:
            status, text = await self._request("GET", "/v1/models")
            if status != 200:
                raise self._translate("/v1/models", status, text)
            try:
                data = _MODELS_DECODER.decode(text)["data"]
                # Interned: the names kept from this answer (served set, observed roots) are the
                # adapters file's own string objects, not a copy per resync.
                models = [
                    ObservedModel(
                        id=_shared(str(m["id"])), root=_shared(m.get("root")), parent=m.get("parent")
                    )
                    for m in data
                    if isinstance(m, dict) and "id" in m
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise UnexpectedResponse(f"/v1/models: unreadable answer: {exc}", status=status) from None
            if len(text) > _BIG_ANSWER:
                # Thousands of decoded dicts were just freed: hand the heap they fragmented back.
                del data, text
                trim_heap()
            return models

        return await self._with_retry("list_models", call)

    async def load(self, name: str, path: str, *, inplace: bool = False) -> str:
        """Load (or, with `inplace`, replace) an adapter. Returns a LoadOutcome value."""
        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if inplace:
            body["load_inplace"] = True

        async def call() -> str:
            status, text = await self._request(
                "POST", "/v1/load_lora_adapter", json_body=body, read_timeout=self._timeouts.load
            )
            if 200 <= status < 300:
                return LoadOutcome.LOADED
            error = self._translate("/v1/load_lora_adapter", status, text)
            if (
                isinstance(error, AdapterRejected)
                and status == 400
                and "already been loaded" in error.message
            ):
                return LoadOutcome.ALREADY_LOADED
            raise error

        return await self._with_retry("load", call, adapter=name)

    async def unload(self, name: str) -> str:
        """Unload an adapter; an unknown name counts as success. Returns an UnloadOutcome value."""
        body = {"lora_name": name}

        async def call() -> str:
            status, text = await self._request("POST", "/v1/unload_lora_adapter", json_body=body)
            if 200 <= status < 300:
                return UnloadOutcome.UNLOADED
            error = self._translate("/v1/unload_lora_adapter", status, text)
            if isinstance(error, AdapterRejected) and status == 404:
                return UnloadOutcome.NOT_FOUND
            raise error

        return await self._with_retry("unload", call, adapter=name)
