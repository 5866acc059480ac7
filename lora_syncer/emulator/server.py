"""The emulated vLLM HTTP surface: handlers for every vLLM route the project touches.

`VllmHandlers` holds the live state (registry, faults, call log) and answers like vLLM 0.32:
same statuses, error bodies and messages. `build_app` wires the handlers, the control API and a
catch-all that answers unknown routes with FastAPI's `{"detail": ...}` bodies.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import hdrs, web

from lora_syncer.emulator import _json, engine_metrics, responses
from lora_syncer.emulator.calls import AdminOp, CallLog
from lora_syncer.emulator.config import EmulatorConfig
from lora_syncer.emulator.errors import ENGINE_DEAD_MESSAGE, ApiError, bad_request, internal
from lora_syncer.emulator.faults import Faults
from lora_syncer.emulator.model_faults import ModelFault
from lora_syncer.emulator.models_list import ModelsView
from lora_syncer.emulator.state import AdapterRegistry, probe_adapter
from lora_syncer.emulator.validation import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    LOAD_FIELDS,
    UNLOAD_FIELDS,
    BeforeCheck,
    FieldSpec,
    chat_before,
    completion_before,
    parse_body,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"
INJECTED_FAILURE = "Injected failure (lora-syncer emulator fault injection)."
MODEL_FAILURE = "Injected failure for model {model} (lora-syncer emulator fault injection)."
# vLLM's answers to an empty conversation / an empty prompt list (checked after the model lookup).
_EMPTY_CHAT = bad_request(
    "Cannot apply chat template to an empty conversation. Provide at least one message."
)
_EMPTY_PROMPT = bad_request("You must pass at least one prompt")
ALIAS_HEADER = "X-Amzn-SageMaker-Adapter-Alias"

# Paths vLLM serves, with their methods: a wrong method gets 405 instead of 404.
KNOWN_ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",),
    "/version": ("GET",),
    "/v1/models": ("GET",),
    "/v1/load_lora_adapter": ("POST",),
    "/v1/unload_lora_adapter": ("POST",),
    "/v1/completions": ("POST",),
    "/v1/chat/completions": ("POST",),
    "/adapters": ("POST",),
}


def json_response(body: bytes, status: int = 200) -> web.Response:
    """A pre-serialized JSON answer."""
    return web.Response(body=body, status=status, content_type=JSON)


def error_response(err: ApiError) -> web.Response:
    """vLLM's JSON error answer."""
    return json_response(_json.dumps(err.body()), err.status)


def detail_response(status: int, detail: str) -> web.Response:
    """FastAPI's answer for unknown routes and wrong methods: `{"detail": ...}`."""
    return json_response(_json.dumps({"detail": detail}), status)


class BareResponse(web.Response):
    """A body sent without any Content-Type header (see `drop_bare_content_type`)."""


def text_response(text: str) -> web.Response:
    """vLLM's success answer of the admin routes: the sentence as UTF-8, and no Content-Type at all.

    (vLLM returns a bare Starlette `Response`; clients read it as application/octet-stream.)
    """
    return BareResponse(body=text.encode())


async def drop_bare_content_type(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: aiohttp fills in application/octet-stream for any body without a
    Content-Type just before this signal; take it out again for `BareResponse`s."""
    if type(response) is BareResponse:
        response.headers.popall(hdrs.CONTENT_TYPE, None)


def drop_connection(request: web.Request) -> web.Response:
    """Close the client's connection without an answer (the returned response is never sent)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


class _Faulted:
    """One request under its model's faults: what it does, counted in the call log as it fires."""

    __slots__ = ("calls", "empty", "fault", "model")

    def __init__(self, calls: CallLog, model: str, fault: ModelFault, empty: str | None) -> None:
        self.calls = calls
        self.model = model
        self.fault = fault
        self.empty = empty
        if empty is not None:
            calls.model_faults[(model, "empty")] += 1

    @property
    def message(self) -> str:
        return MODEL_FAILURE.format(model=self.model)

    async def wait(self) -> None:
        """The model's latency before the first byte."""
        if self.fault.latency > 0:
            self.calls.model_faults[(self.model, "latency")] += 1
            await asyncio.sleep(self.fault.latency)

    def break_now(self, sent: int) -> bool:
        """Whether the stream is cut before its chunk number `sent` (0-based)."""
        if self.fault.break_after is not None and sent >= self.fault.break_after:
            self.calls.model_faults[(self.model, "break")] += 1
            return True
        return False

    def error_now(self, sent: int) -> bool:
        """Whether the error event goes out before chunk number `sent`."""
        if self.fault.sse_error_after is not None and sent >= self.fault.sse_error_after:
            self.calls.model_faults[(self.model, "sse_error")] += 1
            return True
        return False


class VllmHandlers:
    """The emulator's live state and its vLLM route handlers."""

    def __init__(self, config: EmulatorConfig, faults: Faults, calls: CallLog) -> None:
        self.config = config
        self.faults = faults
        self.calls = calls
        self.registry = AdapterRegistry(config.served_names)
        self.models_view = ModelsView(self.registry, config.model_root, config.max_model_len)
        self.metrics = engine_metrics.EngineMetrics(config.served_model_name, config.max_loras)
        self.rng = random.Random(config.seed)
        self._locks: dict[str, asyncio.Lock] = {}
        self._operations: set[asyncio.Task[ApiError | None]] = set()

    # ---- fault injection -------------------------------------------------------------------

    def wrap(self, key: str, impl: Handler, admin: AdminOp | None = None) -> Handler:
        """`impl` behind the faults for endpoint `key` (latency, then injected failure)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            self.calls.requests[key] += 1
            faults = self.faults
            delay = faults.latency_for(key)
            if delay > 0:
                await asyncio.sleep(delay)
            if (faults.fail_next or faults.failure_rate) and faults.should_fail(key, self.rng):
                self.calls.injected_failures[key] += 1
                mode = faults.failure_mode
                if mode != "drop_after":
                    if admin is not None:
                        await self._record_unperformed(request, admin, 0 if mode == "drop" else 500)
                    if mode == "drop":
                        return drop_connection(request)
                    return error_response(internal(INJECTED_FAILURE))
                await impl(request)
                return drop_connection(request)
            return await impl(request)

        return handler

    async def _record_unperformed(self, request: web.Request, op: AdminOp, status: int) -> None:
        """Log an admin call that a fault answered before it ran (name/path read best-effort)."""
        name, path = request.match_info.get("name", ""), None
        try:
            body = _json.loads(await request.read())
        except ValueError:
            body = {}
        if isinstance(body, dict):
            name = str(body.get("lora_name", body.get("name", name)))
            raw_path = body.get("lora_path", body.get("src"))
            path = None if raw_path is None else str(raw_path)
        self.calls.record(op, name, path, status, route=request.path)

    # ---- simple routes ---------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        """`GET /health`: 200 empty, 503 when the engine is dead."""
        return web.Response(status=503 if self.faults.engine_dead else 200)

    async def version(self, request: web.Request) -> web.StreamResponse:
        """`GET /version`."""
        return json_response(_json.dumps({"version": self.config.version}))

    async def models(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models`: base model names first, then adapters in load order."""
        return json_response(self.models_view.body())

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        """`GET /metrics`: a few of vLLM's `vllm:*` series (see `engine_metrics`)."""
        return web.Response(
            body=self.metrics.render(), headers={hdrs.CONTENT_TYPE: engine_metrics.CONTENT_TYPE}
        )

    # ---- adapter admin routes ---------------------------------------------------------------

    def _updating_disabled(self) -> bool:
        return not self.faults.runtime_lora_updating

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def load_adapter(self, name: str, path: str, load_inplace: bool) -> ApiError | None:
        """Load or (in place) re-point an adapter under vLLM's rules; None on success."""
        async with self._lock(name):
            err = self.registry.check_load(name, path, load_inplace)
            if err is not None:
                return err
            if self.faults.load_delay > 0:
                await asyncio.sleep(self.faults.load_delay)
            err = await asyncio.to_thread(
                probe_adapter,
                name,
                path,
                max_lora_rank=self.config.max_lora_rank,
                allow_hub_ids=self.config.allow_hub_ids,
                require_weights=self.config.require_weights,
            )
            if err is None:
                self.registry.add(name, path)
            return err

    async def unload_adapter(self, name: str) -> ApiError | None:
        """Unload an adapter under vLLM's rules; None on success."""
        async with self._lock(name):
            err = self.registry.check_unload(name)
            if err is not None:
                return err
            if self.faults.unload_delay > 0:
                await asyncio.sleep(self.faults.unload_delay)
            self.registry.remove(name)
            return None

    async def _run_admin(
        self, op: AdminOp, name: str, path: str | None, inplace: bool, route: str
    ) -> ApiError | None:
        self.calls.admin_started()
        try:
            if op == "load":
                err = await self.load_adapter(name, path or "", inplace)
            else:
                err = await self.unload_adapter(name)
        except asyncio.CancelledError:  # the emulator went down mid-call
            self.calls.record(op, name, path, 0, load_inplace=inplace, route=route)
            raise
        finally:
            self.calls.admin_finished()
        self.calls.record(op, name, path, err.status if err else 200, load_inplace=inplace, route=route)
        return err

    async def _admin(
        self,
        request: web.Request,
        op: AdminOp,
        body: dict[str, Any] | ApiError,
        name_field: str,
        path_field: str | None,
        success: Callable[[str], str],
    ) -> web.StreamResponse:
        if isinstance(body, ApiError):
            self.calls.record(op, "", None, body.status, route=request.path)
            return error_response(body)
        name = body[name_field]
        path = body[path_field] if path_field else None
        inplace = bool(body.get("load_inplace", False))
        # Like vLLM (Starlette does not cancel handlers), a load whose client gave up still
        # completes: the operation runs in its own task; only going down cancels it.
        task = asyncio.ensure_future(self._run_admin(op, name, path, inplace, request.path))
        self._operations.add(task)
        task.add_done_callback(self._operations.discard)
        err = await asyncio.shield(task)
        return error_response(err) if err else text_response(success(name))

    async def cancel_operations(self) -> None:
        """Cut every admin operation in flight (the server is going down)."""
        tasks = list(self._operations)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _disabled(self, request: web.Request, op: AdminOp) -> web.StreamResponse:
        self.calls.record(op, request.match_info.get("name", ""), None, 404, route=request.path)
        return detail_response(404, "Not Found")

    async def v1_load(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/load_lora_adapter`."""
        if self._updating_disabled():
            return self._disabled(request, "load")
        body = parse_body(request.headers.get("Content-Type", ""), await request.read(), LOAD_FIELDS)
        return await self._admin(
            request,
            "load",
            body,
            "lora_name",
            "lora_path",
            lambda n: f"Success: LoRA adapter '{n}' added successfully.",
        )

    async def v1_unload(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/unload_lora_adapter`."""
        if self._updating_disabled():
            return self._disabled(request, "unload")
        body = parse_body(request.headers.get("Content-Type", ""), await request.read(), UNLOAD_FIELDS)
        return await self._admin(
            request,
            "unload",
            body,
            "lora_name",
            None,
            lambda n: f"Success: LoRA adapter '{n}' removed successfully.",
        )

    async def sagemaker_register(self, request: web.Request) -> web.StreamResponse:
        """`POST /adapters {"name", "src"}` (SageMaker-style register)."""
        if self._updating_disabled():
            return self._disabled(request, "load")
        raw = await request.read()
        try:
            data: Any = _json.loads(raw)
        except ValueError:
            data = dict(request.query)  # the SageMaker layer falls back to query parameters
        if not isinstance(data, dict):
            data = {}
        problems: list[dict[str, Any]] = []
        for field in ("name", "src"):
            if field not in data:
                problems.append({"type": "missing", "loc": [field], "msg": "Field required", "input": data})
            elif data[field] == "":
                why = f"The parameter {field} cannot be an empty string"
                problems.append(
                    {
                        "type": "value_error",
                        "loc": [field],
                        "msg": f"Value error, {why}",
                        "input": "",
                        "ctx": {"error": why},
                    }
                )
        if problems:
            err = ApiError(400, "Bad Request", _json.dumps(problems).decode())
            self.calls.record("load", str(data.get("name", "")), None, 400, route=request.path)
            return error_response(err)
        body = {
            "name": str(data["name"]),
            "src": str(data["src"]),
            "load_inplace": bool(data.get("load_inplace")),
        }
        alias = request.headers.get(ALIAS_HEADER)
        return await self._admin(
            request, "load", body, "name", "src", lambda n: f"Adapter {alias or n} registered"
        )

    async def sagemaker_unregister(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /adapters/{name}` (SageMaker-style unregister)."""
        if self._updating_disabled():
            return self._disabled(request, "unload")
        alias = request.headers.get(ALIAS_HEADER)
        body = {"name": request.match_info["name"]}
        return await self._admin(
            request, "unload", body, "name", None, lambda n: f"Adapter {alias or n} unregistered"
        )

    # ---- inference -------------------------------------------------------------------------

    async def _inference_prelude(
        self, request: web.Request, fields: tuple[FieldSpec, ...], before: BeforeCheck | None = None
    ) -> tuple[dict[str, Any], str] | web.StreamResponse:
        """The body checks and the model lookup, in vLLM's order; `(body, served model)` or the error."""
        body = parse_body(request.headers.get("Content-Type", ""), await request.read(), fields, before)
        if isinstance(body, ApiError):
            return error_response(body)
        requested = body.get("model")
        served = self.registry.served_model(requested)
        if served is None:
            return error_response(self.registry.unknown_model_error(str(requested)))
        return body, served

    def _admit(
        self, body: dict[str, Any], served: str, token_fields: tuple[str, ...], empty: ApiError | None
    ) -> int | ApiError | None:
        """vLLM's checks after the model lookup: the output budget, an empty prompt, the engine.

        Returns the requested number of tokens (None when not given) or the error to answer.
        `token_fields` name the budget fields, first set one wins (chat: max_completion_tokens).
        """
        param, value = "max_tokens", None
        for name in token_fields:
            given = body.get(name)
            if given is not None:
                param, value = name, given
                break
        max_model_len = self.config.max_model_len
        if value is not None and value > max_model_len:
            return bad_request(
                f"{param}={value} cannot be greater than max_model_len={max_model_len}. "
                "Please request fewer output tokens.",
                param,
                value,
            )
        if empty is not None:
            return empty
        if value is not None and value < 1:
            # Checked on the resolved budget, which vLLM always calls max_tokens.
            return bad_request(f"max_tokens must be at least 1, got {value}.", "max_tokens", value)
        if self.faults.engine_dead:
            return internal(ENGINE_DEAD_MESSAGE)
        self.calls.served[served] += 1
        return value

    def _budget(self, requested: int | None, prompt_tokens: int) -> int:
        """How many tokens the answer has: as requested (or the default), within the context left."""
        n = self.config.default_max_tokens if requested is None else requested
        return max(1, min(n, self.config.max_generated_tokens, self.config.max_model_len - prompt_tokens))

    async def _stream(
        self,
        request: web.Request,
        events: Iterator[bytes],
        adapter: str | None,
        prompt: int,
        n: int,
        fault: _Faulted | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": f"{responses.SSE_CONTENT_TYPE}; charset=utf-8"})
        metrics = self.metrics
        metrics.begin(adapter)
        model = adapter if adapter is not None else self.config.served_model_name
        self.calls.streamed[model] += 1
        try:
            delay = self.faults.token_delay
            if fault is not None:
                delay += fault.fault.latency
                await fault.wait()
            await resp.prepare(request)
            for sent, event in enumerate(events):
                if fault is not None and event is not responses.DONE:
                    if fault.break_now(sent):
                        return drop_connection(request)
                    if fault.error_now(sent):
                        await resp.write(responses.error_event(internal(fault.message).body()))
                        await resp.write(responses.DONE)
                        break
                await resp.write(event)
                if delay > 0:
                    await asyncio.sleep(delay)
            await resp.write_eof()
            self.calls.streams_completed[model] += 1
        finally:
            metrics.end(adapter, prompt, n)
        return resp

    def _answer(self, body: bytes, adapter: str | None, prompt: int, n: int) -> web.Response:
        """A non-streamed answer, counted in the metrics."""
        metrics = self.metrics
        metrics.begin(adapter)
        metrics.end(adapter, prompt, n)
        return json_response(body)

    async def _faulty_answer(
        self, request: web.Request, body: bytes, adapter: str | None, prompt: int, n: int, fault: _Faulted
    ) -> web.StreamResponse:
        """A non-streamed answer under a model's faults: late, or cut off halfway (`break_after`)."""
        await fault.wait()
        if fault.fault.break_after is None:
            return self._answer(body, adapter, prompt, n)
        self.calls.model_faults[(fault.model, "break")] += 1
        resp = web.StreamResponse(headers={"Content-Type": JSON})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        return drop_connection(request)

    def _model_fault(self, body: dict[str, Any], served: str) -> _Faulted | ApiError | None:
        """The faults in force for this request's model: the 500 to answer, the faults to apply, or None."""
        requested = body.get("model")
        fault = self.faults.model_fault(requested if isinstance(requested, str) else served, served)
        if fault is None:
            return None
        model = requested if isinstance(requested, str) and requested in self.faults.models else served
        if fault.should_fail():
            self.calls.model_faults[(model, "error")] += 1
            return internal(MODEL_FAILURE.format(model=model))
        return _Faulted(self.calls, model, fault, fault.empty_reason())

    def _adapter(self, served: str) -> str | None:
        """The adapter behind a served name (None for the base model)."""
        return None if served == self.config.served_model_name else served

    @staticmethod
    def _include_usage(body: dict[str, Any]) -> bool:
        options = body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`, plain or streamed."""
        pre = await self._inference_prelude(request, CHAT_FIELDS, chat_before)
        if isinstance(pre, web.StreamResponse):
            return pre
        body, served = pre
        messages = body["messages"]
        requested = self._admit(
            body, served, ("max_completion_tokens", "max_tokens"), None if messages else _EMPTY_CHAT
        )
        if isinstance(requested, ApiError):
            return error_response(requested)
        fault = self._model_fault(body, served)
        if isinstance(fault, ApiError):
            return error_response(fault)
        prompt = responses.chat_prompt_tokens(messages)
        n = self._budget(requested, prompt)
        finish = "length"
        if fault is not None and fault.empty is not None:
            n, finish = 0, fault.empty
        version = self.config.version
        adapter = self._adapter(served)
        if body.get("stream"):
            events = responses.chat_stream(served, n, prompt, self._include_usage(body), version, finish)
            return await self._stream(request, events, adapter, prompt, n, fault)
        answer = responses.chat_body(served, n, prompt, version, finish)
        if fault is not None:
            return await self._faulty_answer(request, answer, adapter, prompt, n, fault)
        return self._answer(answer, adapter, prompt, n)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions`, plain or streamed."""
        pre = await self._inference_prelude(request, COMPLETION_FIELDS, completion_before)
        if isinstance(pre, web.StreamResponse):
            return pre
        body, served = pre
        raw_prompt = body.get("prompt")
        empty = _EMPTY_PROMPT if isinstance(raw_prompt, list) and not raw_prompt else None
        requested = self._admit(body, served, ("max_tokens",), empty)
        if isinstance(requested, ApiError):
            return error_response(requested)
        fault = self._model_fault(body, served)
        if isinstance(fault, ApiError):
            return error_response(fault)
        prompt = responses.completion_prompt_tokens(raw_prompt)
        n = self._budget(requested, prompt)
        finish = "length"
        if fault is not None and fault.empty is not None:
            n, finish = 0, fault.empty
        version = self.config.version
        adapter = self._adapter(served)
        if body.get("stream"):
            events = responses.completion_stream(
                served, n, prompt, self._include_usage(body), version, finish
            )
            return await self._stream(request, events, adapter, prompt, n, fault)
        answer = responses.completion_body(served, n, prompt, version, finish)
        if fault is not None:
            return await self._faulty_answer(request, answer, adapter, prompt, n, fault)
        return self._answer(answer, adapter, prompt, n)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/embeddings` (only with `enable_embeddings`; vLLM has no such route for generative models)."""
        pre = await self._inference_prelude(request, EMBEDDING_FIELDS)
        if isinstance(pre, web.StreamResponse):
            return pre
        body, served = pre
        admitted = self._admit(body, served, (), None)
        if isinstance(admitted, ApiError):
            return error_response(admitted)
        return json_response(responses.embedding_body(served, body["input"]))

    # ---- everything else -------------------------------------------------------------------

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """Unknown route: 404 `{"detail":"Not Found"}`; known route, wrong method: 405."""
        path = request.path
        allowed: tuple[str, ...] | None = KNOWN_ROUTES.get(path)
        if allowed is None and path.startswith("/adapters/") and path.count("/") == 2:
            allowed = ("DELETE",) if self.faults.runtime_lora_updating else None
        if allowed is None and path == "/v1/embeddings" and self.config.enable_embeddings:
            allowed = ("POST",)
        if (
            path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters")
            and self._updating_disabled()
        ):
            allowed = None
        if allowed is None:
            return detail_response(404, "Not Found")
        resp = detail_response(405, "Method Not Allowed")
        resp.headers["Allow"] = ", ".join(allowed)
        return resp


def add_vllm_routes(app: web.Application, h: VllmHandlers) -> None:
    """Register the vLLM routes (behind fault injection) on `app`."""
    r = app.router
    r.add_get("/health", h.wrap("health", h.health), allow_head=False)
    r.add_get("/version", h.wrap("version", h.version), allow_head=False)
    r.add_get("/v1/models", h.wrap("models", h.models), allow_head=False)
    # vLLM mounts prometheus_client's ASGI app here, which answers any method.
    r.add_route("*", "/metrics", h.wrap("metrics", h.prometheus))
    r.add_post("/v1/load_lora_adapter", h.wrap("load", h.v1_load, "load"))
    r.add_post("/v1/unload_lora_adapter", h.wrap("unload", h.v1_unload, "unload"))
    r.add_post("/adapters", h.wrap("load", h.sagemaker_register, "load"))
    r.add_delete("/adapters/{name}", h.wrap("unload", h.sagemaker_unregister, "unload"))
    r.add_post("/v1/completions", h.wrap("completions", h.completions))
    r.add_post("/v1/chat/completions", h.wrap("chat", h.chat))
    if h.config.enable_embeddings:
        r.add_post("/v1/embeddings", h.wrap("embeddings", h.embeddings))
    app.on_response_prepare.append(drop_bare_content_type)


def add_fallback_route(app: web.Application, h: VllmHandlers) -> None:
    """Register the catch-all (must come after every other route)."""
    app.router.add_route("*", "/{tail:.*}", h.fallback)
