"""The aiohttp reverse proxy: rewrite `model`, forward to vLLM, stream the answer back.

Per request: refuse control routes; read the body (bounded in size and time); choose the
upstream pool (one `--server`, or weighted pools: `lora_syncer.proxy.poolset`); when the body
is a JSON object with a `model` the pool's rules know, pick a target (pure, `matching.decide`)
and replace the value; forward over the one shared `ClientSession`; relay the answer chunk by
chunk as it arrives. A client that goes away cancels the handler (aiohttp's handler
cancellation), which closes the upstream connection so vLLM aborts the generation.

With pools, a request that could not reach its pool (connection refused, or the connection
lost before any answer) is sent once more to another pool in rotation, rewritten for that
pool; failures and 5xx answers feed the pool's circuit breaker.

Never logged: bodies, prompts, header values (`Authorization` included).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from lora_syncer.config.rules import RuleSet
from lora_syncer.proxy.matching import Decision, Route, RouteTable, decide
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import POOL_HEADER, SERVED_MODEL_HEADER, ProxyOptions
from lora_syncer.proxy.policy import is_admin_path, model_required, normalize_path
from lora_syncer.proxy.pools import CircuitBreaker, PoolSource, PoolSpec
from lora_syncer.proxy.poolset import PoolSet, UpstreamPool
from lora_syncer.proxy.rewrite import (
    SSEModelRewriter,
    json_with_model,
    loads,
    models_with_aliases,
    with_model,
)
from lora_syncer.proxy.upstream import ConnectFailed, ConnectTimedOut, UpstreamClient, UpstreamResponse

log = structlog.get_logger("lora_syncer.proxy")

LoadedNames = Callable[[], frozenset[str]]

# RFC 9110 7.6.1 connection-specific fields, plus the ones aiohttp computes itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Answers up to this size with a known length are sent in one write instead of streamed.
_BUFFER_LIMIT = 256 * 1024
# Upper bound for answers that must be read whole to be rewritten (JSON with response-model=requested).
_REWRITE_LIMIT = 64 * 1024 * 1024
_CLIENT_CLOSED = 499  # nginx's code for "client closed the request", used in metrics only

_STATUS_TYPES = {
    400: "BadRequestError",
    403: "PermissionDeniedError",
    408: "RequestTimeoutError",
    413: "RequestEntityTooLargeError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def openai_error(status: int, message: str, *, param: str | None = None) -> web.Response:
    """An error answer in the shape vLLM and OpenAI use: `{"error": {message, type, param, code}}`."""
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": _STATUS_TYPES.get(status, "Error"),
                "param": param,
                "code": status,
            }
        },
        status=status,
    )


def _connection_tokens(headers: Any) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(tok.strip().lower() for v in values for tok in v.split(",") if tok.strip())


def _filtered(headers: Any) -> CIMultiDict[str]:
    drop = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in drop:
            continue
        out.add(name, value)
    return out


class _Refused(Exception):
    """The proxy answers the request itself (an OpenAI-style error)."""

    def __init__(self, status: int, message: str, reason: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.param = param


class _Unreachable(Exception):
    """The pool was not reached, or lost the connection before answering: another pool may serve it."""

    def __init__(self, refused: _Refused) -> None:
        super().__init__(refused.message)
        self.refused = refused


@dataclass(slots=True)
class _Parsed:
    """A request body that is a JSON object: the object, its `model` (a string or None), and whether one is required."""

    obj: dict[str, Any]
    model: str | None
    required: bool


class ProxyCore:
    """The request handler and the state it reads: the pools with their route tables (swapped on reload) and the session."""

    def __init__(
        self,
        options: ProxyOptions,
        metrics: ProxyMetrics,
        loaded: LoadedNames | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.loaded = loaded
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.client: UpstreamClient | None = None
        self.in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._rewrite_back = options.response_model == "requested"
        self._sticky = options.sticky_header
        self._decision_children: dict[tuple[str, str], Any] = {}
        self.pools = self.build_pools(RuleSet(), None)
        self._publish_pools()

    # --- pools -------------------------------------------------------------------------

    def make_breaker(self) -> CircuitBreaker:
        opts = self.options
        return CircuitBreaker(
            failure_threshold=opts.pool_failure_threshold,
            backoff_initial=opts.pool_backoff,
            backoff_max=opts.pool_backoff_max,
        )

    def desired_pools(self, ruleset: RuleSet) -> tuple[tuple[PoolSpec, ...], PoolSource]:
        """Where traffic goes for this rules file: its HTTPRoute, else the `--pool` flags, else `--server`."""
        opts = self.options
        if opts.pools_from_rules and ruleset.route is not None and ruleset.route.backends:
            from lora_syncer.proxy.pools import route_pools

            return route_pools(ruleset.route, {p.name: p.url for p in opts.pools}), "httproute"
        if opts.pools:
            return opts.pools, "flags"
        return (PoolSpec(opts.pool_name or "default", opts.upstream, 1),), "server"

    def build_pools(self, ruleset: RuleSet, previous: PoolSet | None) -> PoolSet:
        """The pool set for `ruleset` (keeps breakers and rotations of unchanged pools)."""
        specs, source = self.desired_pools(ruleset)
        return PoolSet.build(specs, source, ruleset, previous, self.make_breaker, self.loaded)

    def apply_rules(self, ruleset: RuleSet) -> PoolSet:
        """Put a new rules file in force: pools (from its HTTPRoute) and per-pool route tables."""
        pools = self.build_pools(ruleset, self.pools)
        self.pools = pools
        self._publish_pools()
        return pools

    def _publish_pools(self) -> None:
        now = self.clock()
        pools = self.pools.pools
        self.metrics.set_pools(
            {name: p.spec.weight for name, p in pools.items()},
            {name: p.breaker.available(now) for name, p in pools.items()},
        )

    @property
    def table(self) -> RouteTable:
        """The route table of the first pool (the only one with `--server`)."""
        return self.pools.first.table

    def _pool_failed(self, pool: UpstreamPool, kind: str, error: str) -> None:
        self.metrics.pool_error(pool.name, kind)
        if not self.pools.health_tracked:
            return
        if pool.breaker.record_failure(self.clock(), error):
            self.metrics.pool_up(pool.name, False)
            log.warning(
                "pool left the rotation after failures in a row",
                pool=pool.name,
                url=pool.base,
                error=error,
                backoff_seconds=pool.breaker.backoff,
            )

    def _pool_answered(self, pool: UpstreamPool, status: int) -> None:
        if status >= 500:
            self._pool_failed(pool, "status_5xx", f"HTTP {status}")
        elif self.pools.health_tracked:
            pool.breaker.record_success()

    async def probe_pools(self) -> None:
        """Health-probe every pool that is in rotation or whose backoff is over (half-open)."""
        pools = self.pools
        if not pools.health_tracked or self.session is None:
            return
        now = self.clock()
        due = [p for p in pools.pools.values() if p.breaker.wants_probe(now)]
        if due:
            await asyncio.gather(*(self._probe(p) for p in due))

    async def _probe(self, pool: UpstreamPool) -> None:
        session = self.session
        if session is None:
            return
        error: str | None = None
        try:
            async with session.get(
                pool.base + self.options.pool_health_path,
                timeout=aiohttp.ClientTimeout(total=self.options.pool_health_timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    error = f"health probe: HTTP {resp.status}"
        except TimeoutError:
            error = "health probe: timed out"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"health probe: {type(exc).__name__}"
        breaker = pool.breaker
        if error is None:
            if breaker.probe_succeeded():
                self.metrics.pool_up(pool.name, True)
                log.info("pool back in the rotation", pool=pool.name, url=pool.base)
        elif breaker.probe_failed(self.clock(), error):
            self.metrics.pool_up(pool.name, False)
            log.warning(
                "pool left the rotation: health probe failed", pool=pool.name, url=pool.base, error=error
            )

    # --- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the one upstream session (bounded connection pool, explicit timeouts)."""
        opts = self.options
        connector = aiohttp.TCPConnector(
            limit=opts.upstream_connections,
            limit_per_host=opts.upstream_connections,
            ttl_dns_cache=60,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=opts.upstream_connect_timeout, sock_read=opts.upstream_timeout
            ),
            auto_decompress=False,  # relay bytes as they are; the client asked for its own encoding
            # A proxy adds no headers of its own: no default Accept-Encoding, User-Agent or Accept.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        # The forward path to plain-http upstreams (the session serves probes and https upstreams).
        self.client = UpstreamClient(
            limit=opts.upstream_connections,
            connect_timeout=opts.upstream_connect_timeout,
            read_timeout=opts.upstream_timeout,
            idle_timeout=30.0,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def wait_drained(self, within: float) -> bool:
        """Wait until no request is in flight; False when `within` seconds passed first."""
        try:
            await asyncio.wait_for(self._drained.wait(), within)
        except TimeoutError:
            return False
        return True

    # --- the handler -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        self.in_flight += 1
        self._drained.clear()
        alias = target = ""
        status = 500
        where: list[str] = []  # the pool that answered (filled by _handle)
        try:
            try:
                response, alias, target = await self._handle(request, started, where)
            except _Refused as refused:
                self.metrics.refused.labels(refused.reason).inc()
                response = openai_error(refused.status, refused.message, param=refused.param)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = _CLIENT_CLOSED
            self.metrics.client_disconnects.inc()
            raise
        finally:
            self.metrics.observe(alias, target, status, time.perf_counter() - started)
            if where:
                self.metrics.pool_request(where[-1], status)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._drained.set()

    async def _handle(
        self, request: web.Request, started: float, where: list[str]
    ) -> tuple[web.StreamResponse, str, str]:
        path = request.path
        if not self.options.allow_admin_routes and is_admin_path(path):
            raise _Refused(
                403,
                f"{path} is a model-server control route and is not reachable through the proxy "
                "(the sidecar manages adapters; start the proxy with --allow-admin-routes to permit it)",
                "admin_route",
            )
        method = request.method
        body = await self._read_body(request) if request.body_exists else b""
        parsed: _Parsed | None = None
        rewritable = method == "POST" and bool(body)
        if rewritable:
            parsed = self._parse(request, path, body)
        augment = method == "GET" and normalize_path(path) == "/v1/models"
        sticky_key = (request.headers.get(self._sticky) or None) if self._sticky else None
        pools = self.pools
        pool = pools.choose(self.clock(), sticky_key)
        if pool is None:
            raise _Refused(
                503, "every pool has weight 0 (drained); nothing can serve this request", "drained"
            )
        tried: list[str] = []
        while True:
            decision: Decision | None = None
            requested: str | None = None
            served: str | None = None
            out = body
            if rewritable:
                decision, requested, out = self._rewrite_request(pool, parsed, body, sticky_key)
                served = decision.target if decision is not None else requested
            alias = decision.route.alias if decision is not None else ""
            target = (decision.target or "") if decision is not None else ""
            where.append(pool.name)
            try:
                response = await self._forward(pool, request, out, requested, served, alias, started, augment)
            except _Unreachable as failed:
                tried.append(pool.name)
                other = pools.choose(self.clock(), sticky_key, exclude=tried) if len(tried) < 2 else None
                if other is None:
                    raise failed.refused from None
                self.metrics.pool_retry(pool.name)
                log.warning(
                    "retrying on another pool",
                    pool=pool.name,
                    retry_pool=other.name,
                    error=failed.refused.message,
                )
                pool = other
                continue
            return response, alias, target

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.options.max_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise _Refused(
                413, f"request body of {length} bytes is over the limit of {limit} bytes", "too_large"
            )
        try:
            if request.content.is_eof():  # all of it has arrived already: no wait, no timer
                return await request.read()
            async with asyncio.timeout(self.options.client_body_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, f"request body is over the limit of {limit} bytes", "too_large") from None
        except TimeoutError:
            raise _Refused(408, "the request body did not arrive in time", "body_timeout") from None

    @staticmethod
    def _parse(request: web.Request, path: str, body: bytes) -> _Parsed | None:
        """The JSON object of a request body whose `model` the rules may rewrite; None to pass it on as is."""
        required = model_required(path)
        ctype = request.content_type
        if not required and not (ctype == "application/json" or ctype.endswith("+json")):
            return None  # e.g. a multipart upload: not ours to read
        try:
            obj = loads(body)
        except ValueError as exc:
            raise _Refused(400, f"request body is not valid JSON: {exc}", "bad_request") from None
        if not isinstance(obj, dict):
            if required:
                raise _Refused(400, "request body must be a JSON object", "bad_request")
            return None
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            if required:
                raise _Refused(400, "model must be a string", "bad_request", param="model")
            return None
        return _Parsed(obj, model, required)

    def _rewrite_request(
        self, pool: UpstreamPool, parsed: _Parsed | None, body: bytes, sticky_key: str | None
    ) -> tuple[Decision | None, str | None, bytes]:
        """Decide the target in `pool` and rewrite `body`. Returns (decision, requested model, body to send)."""
        if parsed is None:
            return None, None, body
        model = parsed.model
        table = pool.table
        route: Route | None
        if model is None:
            route = table.catch_all
            if route is None:
                if parsed.required:
                    raise _Refused(400, "you must provide a model parameter", "bad_request", param="model")
                return None, None, body
        else:
            route = table.lookup(model)
            if route is None:
                return None, model, body
        loaded = pool.loaded() if pool.loaded is not None else None
        decision = decide(route, sticky_key, loaded)
        self._count_decision(route, decision.target)
        if decision.target is None:
            raise _Refused(
                503,
                f"every target of {route.rule.id} has weight 0 (drained); no model can serve "
                f"{model if model is not None else 'this request'!r} right now",
                "drained",
                param="model",
            )
        if decision.target != model:
            body = with_model(parsed.obj, decision.target)
        return decision, model, body

    def _count_decision(self, route: Route, target: str | None) -> None:
        key = (route.rule.id, target or "drained")
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.metrics.decisions.labels(*key)
        child.inc()

    def _upstream_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers = _filtered(request.headers)
        # The body has been read whole already: no 100-continue handshake with the model server.
        headers.popall("Expect", None)
        peer = request.remote
        if peer:
            prior = headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        if self._rewrite_back:
            # The answer's `model` must be readable to be rewritten: ask for it uncompressed.
            headers["Accept-Encoding"] = "identity"
        return headers

    async def _forward(
        self,
        pool: UpstreamPool,
        request: web.Request,
        body: bytes,
        requested: str | None,
        served: str | None,
        alias: str,
        started: float,
        augment_models: bool,
    ) -> web.StreamResponse:
        session = self.session
        if session is None:
            raise _Refused(503, "the proxy is shutting down", "stopping")
        base = pool.base
        client = self.client
        metrics = self.metrics
        metrics.forwarding += 1
        try:
            # Failures before any answer: the request can go to another pool (_Unreachable).
            upstream: UpstreamResponse | _SessionResponse
            try:
                if client is not None and client.supports(base):
                    upstream = await client.request(
                        request.method, base, request.raw_path, self._upstream_headers(request), body
                    )
                else:
                    upstream = _SessionResponse(
                        await session.request(
                            request.method,
                            URL(base + request.raw_path, encoded=True),
                            headers=self._upstream_headers(request),
                            data=body or None,
                            allow_redirects=False,
                        )
                    )
            except ConnectFailed as exc:
                metrics.upstream_errors.labels("connect").inc()
                self._pool_failed(pool, "connect", f"unreachable: {exc.os_error}")
                log.warning(
                    "model server unreachable", upstream=base, pool=pool.name, error=str(exc.os_error)
                )
                raise _Unreachable(
                    _Refused(502, f"model server at {base} is unreachable: {exc.os_error}", "upstream")
                ) from None
            except aiohttp.ClientConnectorError as exc:
                metrics.upstream_errors.labels("connect").inc()
                self._pool_failed(pool, "connect", f"unreachable: {exc.os_error}")
                log.warning(
                    "model server unreachable", upstream=base, pool=pool.name, error=str(exc.os_error)
                )
                raise _Unreachable(
                    _Refused(502, f"model server at {base} is unreachable: {exc.os_error}", "upstream")
                ) from None
            except (aiohttp.ConnectionTimeoutError, ConnectTimedOut):
                metrics.upstream_errors.labels("timeout").inc()
                self._pool_failed(pool, "connect", "connect timed out")
                log.warning("model server timed out", upstream=base, pool=pool.name, path=request.path)
                raise _Unreachable(
                    _Refused(504, "the model server did not answer in time", "upstream")
                ) from None
            except TimeoutError:
                metrics.upstream_errors.labels("timeout").inc()
                self._pool_failed(pool, "timeout", "timed out")
                log.warning("model server timed out", upstream=base, pool=pool.name, path=request.path)
                raise _Refused(504, "the model server did not answer in time", "upstream") from None
            except (aiohttp.ClientError, OSError) as exc:
                metrics.upstream_errors.labels("disconnect").inc()
                self._pool_failed(
                    pool, "disconnect", f"connection lost before an answer ({type(exc).__name__})"
                )
                log.warning(
                    "model server connection failed", upstream=base, pool=pool.name, error=type(exc).__name__
                )
                raise _Unreachable(
                    _Refused(
                        502, f"the model server closed the connection ({type(exc).__name__})", "upstream"
                    )
                ) from None
            self._pool_answered(pool, upstream.status)
            try:
                return await self._relay(
                    pool, request, upstream, requested, served, alias, started, augment_models
                )
            finally:
                upstream.release()
        except TimeoutError:
            metrics.upstream_errors.labels("timeout").inc()
            log.warning("model server timed out", upstream=base, path=request.path)
            raise _Refused(504, "the model server did not answer in time", "upstream") from None
        except (aiohttp.ClientError, OSError) as exc:
            metrics.upstream_errors.labels("disconnect").inc()
            log.warning("model server connection failed", upstream=base, error=type(exc).__name__)
            raise _Refused(
                502, f"the model server closed the connection ({type(exc).__name__})", "upstream"
            ) from None
        finally:
            metrics.forwarding -= 1

    async def _relay(
        self,
        pool: UpstreamPool,
        request: web.Request,
        upstream: UpstreamResponse | _SessionResponse,
        requested: str | None,
        served: str | None,
        alias: str,
        started: float,
        augment_models: bool,
    ) -> web.StreamResponse:
        headers = _filtered(upstream.headers)
        if served is not None:
            headers[SERVED_MODEL_HEADER] = served
        if self.pools.health_tracked:
            headers[POOL_HEADER] = pool.name
        ctype = upstream.headers.get("Content-Type", "")
        is_sse = ctype.startswith("text/event-stream")
        rewrite_back = (
            self._rewrite_back and requested is not None and served is not None and served != requested
        )
        length = upstream.content_length
        whole = (
            (augment_models and upstream.status == 200)
            or (rewrite_back and not is_sse and "json" in ctype)
            or (not is_sse and length is not None and length <= _BUFFER_LIMIT)
        )
        if whole:
            data = await self._read_whole(upstream)
            if augment_models and upstream.status == 200:
                aliases = {r.alias: r.first_live or r.names[0] for r in pool.table.exact.values()}
                if aliases:
                    data = models_with_aliases(data, aliases, int(time.time()))
            elif rewrite_back and "json" in ctype:
                assert served is not None and requested is not None
                data = json_with_model(data, served, requested)
            self.metrics.observe_first_byte(alias, time.perf_counter() - started)
            return web.Response(status=upstream.status, reason=upstream.reason, body=data, headers=headers)
        return await self._stream(
            request, upstream, headers, requested, served, alias, started, rewrite_back, is_sse
        )

    @staticmethod
    async def _read_whole(upstream: UpstreamResponse | _SessionResponse) -> bytes:
        """The whole answer body, refusing (502) one too large to hold for rewriting."""
        length = upstream.content_length
        if length is not None and length <= _REWRITE_LIMIT:
            return await upstream.read()
        parts: list[bytes] = []
        size = 0
        while chunk := await upstream.readany():
            size += len(chunk)
            if size > _REWRITE_LIMIT:
                raise _Refused(502, "the model server's answer is too large to rewrite", "upstream")
            parts.append(chunk)
        return b"".join(parts)

    async def _stream(
        self,
        request: web.Request,
        upstream: UpstreamResponse | _SessionResponse,
        headers: CIMultiDict[str],
        requested: str | None,
        served: str | None,
        alias: str,
        started: float,
        rewrite_back: bool,
        is_sse: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if upstream.content_length is not None and not rewrite_back:
            response.content_length = upstream.content_length
        rewriter = (
            SSEModelRewriter(served, requested) if rewrite_back and is_sse and served and requested else None
        )
        await response.prepare(request)
        self.metrics.observe_first_byte(alias, time.perf_counter() - started)
        metrics = self.metrics
        metrics.streaming += 1
        try:
            while True:
                try:
                    chunk = await upstream.readany()
                except TimeoutError:
                    self.metrics.upstream_errors.labels("timeout").inc()
                    log.warning("model server went silent mid-answer; closing", path=request.path)
                    self._abort(request)
                    return response
                except (aiohttp.ClientError, OSError) as exc:
                    self.metrics.upstream_errors.labels("disconnect").inc()
                    log.warning(
                        "model server broke off an answer", path=request.path, error=type(exc).__name__
                    )
                    self._abort(request)
                    return response
                if not chunk:
                    break
                if rewriter is not None:
                    chunk = rewriter.feed(chunk)
                    if not chunk:
                        continue
                try:
                    await response.write(chunk)
                except ConnectionError:
                    self.metrics.client_disconnects.inc()
                    return response
            if rewriter is not None:
                tail = rewriter.flush()
                if tail:
                    await response.write(tail)
            await response.write_eof()
        except ConnectionError:
            self.metrics.client_disconnects.inc()
        finally:
            metrics.streaming -= 1
        return response

    @staticmethod
    def _abort(request: web.Request) -> None:
        """Close the client connection so a cut-short answer is seen as cut short, not complete."""
        transport = request.transport
        if transport is not None:
            transport.abort()


class _SessionResponse:
    """An aiohttp client answer (https upstreams) with the interface of `UpstreamResponse`."""

    __slots__ = ("_resp", "content_length", "headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers
        self.content_length = resp.content_length

    async def readany(self) -> bytes:
        return await self._resp.content.readany()

    async def read(self) -> bytes:
        return await self._resp.read()

    def release(self) -> None:
        self._resp.release()


PROXY_CORE = web.AppKey("proxy_core", ProxyCore)


def build_proxy_app(core: ProxyCore) -> web.Application:
    """The proxy application: one catch-all route; the upstream session lives in cleanup_ctx."""
    app = web.Application(client_max_size=core.options.max_body_size, handler_args=None)
    app[PROXY_CORE] = core

    async def session_ctx(app: web.Application) -> Any:
        await core.open()
        yield
        await core.close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", core.handle)
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound before the server starts, so port 0 reports its real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
