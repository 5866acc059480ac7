"""The probe/status/metrics server: `/healthz`, `/readyz`, `/status`, `/metrics`.

Read-only by design: nothing here changes state, and nothing it returns holds a secret.
Components contribute a status section (a callable returning JSON-able data) and a
readiness check; this module only serves them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lora_syncer import __version__

# (ready, reason) — the reason shows in the /readyz body so `kubectl describe` explains itself.
ReadyCheck = Callable[[], tuple[bool, str]]
LiveCheck = Callable[[], tuple[bool, str]]


@dataclass
class HealthSources:
    registry: CollectorRegistry
    sections: dict[str, Callable[[], Any]] = field(default_factory=dict)
    ready_checks: list[ReadyCheck] = field(default_factory=list)
    live_checks: list[LiveCheck] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    routes: list[web.RouteDef] = field(
        default_factory=list
    )  # more routes (e.g. the rollout control endpoint)


HEALTH_SOURCES = web.AppKey("health_sources", HealthSources)


def _evaluate(checks: list[ReadyCheck]) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    ok = True
    for check in checks:
        good, reason = check()
        ok = ok and good
        if reason:
            reasons.append(reason)
    return ok, reasons


async def healthz(request: web.Request) -> web.Response:
    ok, reasons = _evaluate(request.app[HEALTH_SOURCES].live_checks)
    return web.json_response(
        {"status": "ok" if ok else "unhealthy", "reasons": reasons}, status=200 if ok else 503
    )


async def readyz(request: web.Request) -> web.Response:
    ok, reasons = _evaluate(request.app[HEALTH_SOURCES].ready_checks)
    return web.json_response(
        {"status": "ready" if ok else "not ready", "reasons": reasons}, status=200 if ok else 503
    )


async def status(request: web.Request) -> web.Response:
    src = request.app[HEALTH_SOURCES]
    body: dict[str, Any] = {"version": __version__, "uptimeSeconds": round(time.time() - src.started_at, 3)}
    for name, section in src.sections.items():
        body[name] = section()
    return web.json_response(body, dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[HEALTH_SOURCES].registry)
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=False, default=str)


def build_health_app(sources: HealthSources) -> web.Application:
    app = web.Application()
    app[HEALTH_SOURCES] = sources
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(sources.routes)
    return app
