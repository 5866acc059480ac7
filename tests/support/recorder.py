"""An upstream on 127.0.0.1 that answers 200 to anything and records what it received."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.http import serving

# A rules file for proxy tests that only need one rewrite: `alias` -> `target-v1`.
ONE_ALIAS_RULES = """\
kind: InferenceModelRewrite
metadata: {name: one-alias}
spec:
  rules:
  - matches: [{model: {value: alias}}]
    targets:
    - {modelRewrite: target-v1, weight: 1}
"""


@dataclass
class Recorder:
    """The raw request targets (method, and path and query as sent on the wire) an upstream received."""

    url: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[Recorder]:
    """An upstream answering `{"object": "list", "data": []}` to every request, recording each one."""
    rec = Recorder()

    async def anything(request: web.Request) -> web.Response:
        rec.seen.append((request.method, request.raw_path))
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with serving(app) as rec.url:
        yield rec
