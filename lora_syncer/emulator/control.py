"""The control API under `/_emulator/`: read and set faults, read the call log, restart, go down.

All answers are JSON. It lives on the emulator's own port, so while the emulator is down it is
unreachable too; in-process tests use `Emulator`'s methods instead.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from lora_syncer.emulator import _json
from lora_syncer.emulator.server import VllmHandlers, json_response

PREFIX = "/_emulator"


class Lifecycle(Protocol):
    """What the control API asks of the process owning the listening socket."""

    def reset_faults(self) -> None: ...

    def forget_adapters(self) -> None: ...

    def schedule_restart(self, down_seconds: float) -> None: ...

    def schedule_down(self, seconds: float | None, forget_adapters: bool) -> None: ...


def _bad(message: str) -> web.Response:
    return json_response(_json.dumps({"error": message}), 400)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = _json.loads(raw)
    except ValueError:
        return _bad("body must be a JSON object")
    if not isinstance(data, dict):
        return _bad("body must be a JSON object")
    return data


def _seconds(data: dict[str, Any], name: str, default: float | None) -> float | None:
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0")
    return float(value)


def add_control_routes(app: web.Application, h: VllmHandlers, life: Lifecycle) -> None:
    """Register the `/_emulator/...` routes."""

    async def get_faults(request: web.Request) -> web.StreamResponse:
        return json_response(_json.dumps(h.faults.to_dict()))

    async def set_faults(request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        if isinstance(data, web.Response):
            return data
        try:
            h.faults.update(data)
        except ValueError as exc:
            return _bad(str(exc))
        return json_response(_json.dumps(h.faults.to_dict()))

    async def reset_faults(request: web.Request) -> web.StreamResponse:
        life.reset_faults()
        return json_response(_json.dumps(h.faults.to_dict()))

    async def get_calls(request: web.Request) -> web.StreamResponse:
        return json_response(_json.dumps(h.calls.to_dict()))

    async def clear_calls(request: web.Request) -> web.StreamResponse:
        h.calls.clear()
        return json_response(_json.dumps(h.calls.to_dict()))

    async def get_adapters(request: web.Request) -> web.StreamResponse:
        return json_response(_json.dumps(h.registry.adapters))

    async def forget(request: web.Request) -> web.StreamResponse:
        life.forget_adapters()
        return json_response(_json.dumps(h.registry.adapters))

    async def _answer_then(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        # Send the answer completely before the socket goes away.
        resp = json_response(_json.dumps(body), 202)
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def restart(request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        if isinstance(data, web.Response):
            return data
        try:
            down = _seconds(data, "down_seconds", 0.0) or 0.0
        except ValueError as exc:
            return _bad(str(exc))
        resp = await _answer_then(request, {"restarting": True, "down_seconds": down})
        life.schedule_restart(down)
        return resp

    async def down(request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        if isinstance(data, web.Response):
            return data
        try:
            seconds = _seconds(data, "seconds", None)
        except ValueError as exc:
            return _bad(str(exc))
        forget = data.get("forget_adapters", False)
        if not isinstance(forget, bool):
            return _bad("forget_adapters must be true or false")
        resp = await _answer_then(request, {"down": True, "seconds": seconds, "forget_adapters": forget})
        life.schedule_down(seconds, forget)
        return resp

    r = app.router
    r.add_get(f"{PREFIX}/faults", get_faults, allow_head=False)
    r.add_post(f"{PREFIX}/faults", set_faults)
    r.add_delete(f"{PREFIX}/faults", reset_faults)
    r.add_get(f"{PREFIX}/calls", get_calls, allow_head=False)
    r.add_delete(f"{PREFIX}/calls", clear_calls)
    r.add_get(f"{PREFIX}/adapters", get_adapters, allow_head=False)
    r.add_delete(f"{PREFIX}/adapters", forget)
    r.add_post(f"{PREFIX}/restart", restart)
    r.add_post(f"{PREFIX}/down", down)
