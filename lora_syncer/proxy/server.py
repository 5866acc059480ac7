"""The aiohttp reverse proxy: rewrite `model`, forward to vLLM, stream the answer back.

Per request (one `Exchange`): refuse control routes; read the body (bounded in size and time);
choose the upstream pool (`PoolManager`); when the body is a JSON object with a `model` the
pool's rules know, pick a target (pure, `matching.decide`) and replace the value; forward and
relay the answer (`Forwarder`, over the one `Transport`). A request that could not reach its
pool is sent once more to another pool in rotation, rewritten for that pool. At the end every
observer (the metrics first) gets the exchange. A client that goes away cancels the handler
(the intake cancels the task serving it), which closes the upstream connection so vLLM aborts the
generation.

The proxy port is served by the proxy's own HTTP/1.1 server (`lora_syncer.proxy.intake`, llhttp
parsing) with `ProxyCore.handle` as its only handler: every path goes to the same place. The
handler writes its answer through the request (`IntakeRequest.send`, or `start`/`write`/`finish`
when streamed). Done here: the body-size limit and timeout, and `Expect: 100-continue`.

Never logged: bodies, prompts, header values (`Authorization` included).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiohttp
import structlog

from lora_syncer.config.rules import RuleSet
from lora_syncer.proxy.exchange import Exchange, ExchangeObserver
from lora_syncer.proxy.forward import Forwarder, Sent
from lora_syncer.proxy.intake import BadBody, BodyTooLarge, IntakeRequest, IntakeServer
from lora_syncer.proxy.lane import serve_now
from lora_syncer.proxy.matching import Mirror, Route, RouteTable, decide_target
from lora_syncer.proxy.metrics import ProxyMetrics
from lora_syncer.proxy.options import ProxyOptions
from lora_syncer.proxy.policy import is_admin_path, model_required, normalize_path
from lora_syncer.proxy.pool_manager import PoolManager
from lora_syncer.proxy.poolset import LoadedNames, PoolSet, UpstreamPool
from lora_syncer.proxy.refusal import Refused, Unreachable
from lora_syncer.proxy.rewrite import dumps, loads, with_model
from lora_syncer.proxy.shadow import SHADOW_HEADER, ShadowCopy, ShadowSender
from lora_syncer.proxy.transport import Transport, TransportLimits
from lora_syncer.proxy.upstream import UpstreamClient

__all__ = ["ProxyCore", "bind_socket", "build_proxy_server"]

log: Final = structlog.get_logger("lora_syncer.proxy")

_CLIENT_CLOSED: Final = 499  # nginx's code for "client closed the request", used in metrics only

# (control route, must name a model, is GET /v1/models)
PathKind = tuple[bool, bool, bool]


class Routed:
    """Where a request goes: the pool, the body to send it, and how its answer is treated.

    A plain class (one per request): mypyc compiles it to a native one (see Exchange).
    """

    __slots__ = ("augment", "body", "pool", "rewritable")

    def __init__(self, pool: UpstreamPool, body: bytes, augment: bool, rewritable: bool) -> None:
        self.pool = pool
        self.body = body
        self.augment = augment  # GET /v1/models: the aliases are added to the answer
        self.rewritable = rewritable  # a JSON body whose model is rewritten again for another pool on a retry


class ProxyCore:
    """The request handler: intake, rewrite decision, retry across pools, draining and observers."""

    def __init__(
        self,
        options: ProxyOptions,
        metrics: ProxyMetrics,
        loaded: LoadedNames | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.clock = clock
        self.manager = PoolManager(options, metrics, loaded, clock)
        self.transport = Transport(
            TransportLimits(
                connections=options.upstream_connections,
                connect_timeout=options.upstream_connect_timeout,
                read_timeout=options.upstream_timeout,
            )
        )
        self.forwarder = Forwarder(
            self.transport, self.manager, metrics, rewrite_back=options.response_model == "requested"
        )
        self.shadow = ShadowSender(self.transport, metrics.shadow, options.shadow_concurrency)
        # The metrics first; more observers (per-target telemetry) may be added.
        self.observers: list[ExchangeObserver] = [metrics.observe_exchange]
        self.in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._sticky = options.sticky_header
        self._target_header = options.target_header

    # --- what the service reads and calls ----------------------------------------------

    @property
    def pools(self) -> PoolSet:
        return self.manager.pools

    @property
    def table(self) -> RouteTable:
        """The route table of the first pool (the only one with `--server`)."""
        return self.manager.pools.first.table

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self.transport.session

    @property
    def client(self) -> UpstreamClient | None:
        return self.transport.client

    def apply_rules(self, ruleset: RuleSet) -> PoolSet:
        """Put a new rules file in force: pools (from its HTTPRoute) and per-pool route tables."""
        return self.manager.apply_rules(ruleset)

    async def probe_pools(self) -> None:
        """Health-probe every pool that is in rotation or whose backoff is over (half-open)."""
        if self.transport.is_open:
            await self.manager.probe_all(self.transport.probe)

    async def open(self) -> None:
        await self.transport.open()

    async def close(self) -> None:
        await self.shadow.cancel_all()
        await self.transport.close()

    async def wait_drained(self, within: float) -> bool:
        """Wait until no request is in flight; False when `within` seconds passed first."""
        try:
            await asyncio.wait_for(self._drained.wait(), within)
        except TimeoutError:
            return False
        return True

    # --- the handler -----------------------------------------------------------------

    async def handle(self, request: IntakeRequest) -> None:
        """Serve one request: the answer is written through `request`."""
        ex = self.begin(request)
        await self.settle(ex, self._handle(ex))

    def serve_now(self, request: IntakeRequest) -> bool:
        """The fast lane (the intake's `lane`): True when it took `request` (see `lora_syncer.proxy.lane`)."""
        return serve_now(self, request)

    def begin(self, request: IntakeRequest) -> Exchange:
        """A new exchange, counted in flight until `end`."""
        ex = Exchange(request, time.perf_counter())
        self.in_flight += 1
        self._drained.clear()
        ex.status = 500
        return ex

    async def settle(self, ex: Exchange, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` for `ex` to its end: a refusal is answered, a client that left is counted, and
        the exchange goes to the observers."""
        request = ex.request
        try:
            try:
                await work
            except Refused as refused:
                self.refuse(ex, refused)
            ex.status = request.status or 500
        except asyncio.CancelledError:
            self.client_left(ex)
            raise
        finally:
            self.end(ex)

    def refuse(self, ex: Exchange, refused: Refused) -> None:
        """Answer a refusal (counted by reason)."""
        request = ex.request
        ex.refused = refused.reason
        self.metrics.refused.labels(refused.reason).inc()
        if request.head_sent:  # cannot happen today; an answer already begun can only be cut short
            request.abort()
        else:
            refused.send(request)

    def client_left(self, ex: Exchange) -> None:
        ex.status = _CLIENT_CLOSED
        ex.client_closed = True
        self.metrics.client_disconnects.inc()

    def end(self, ex: Exchange) -> None:
        """The exchange is over: shadow copies settled, observers told, no longer in flight."""
        ex.ended = time.perf_counter()
        self.shadow.settle(ex, ex.client_closed)
        for observe in self.observers:
            try:
                observe(ex)
            except Exception:  # an observer's bug must not fail the request it watched
                log.exception("exchange observer failed", observer=getattr(observe, "__qualname__", "?"))
        self.in_flight -= 1
        if self.in_flight == 0:
            self._drained.set()

    async def _handle(self, ex: Exchange) -> None:
        request = ex.request
        kind = self.admit(ex)
        if request.body_exists:
            if request.expect is not None:
                _expect_continue(request)
            # All of it in already, within the limit (a body over it never is): no wait, no timer.
            whole = request.body_if_complete()
            body = whole if whole is not None else await self._read_body(request)
        else:
            body = b""
        route = self.route(ex, kind, body)
        await self.forward(ex, route)

    def admit(self, ex: Exchange) -> PathKind:
        """What the path is (control route, needs a model, the models list); control routes refused."""
        path = ex.request.path
        kind = _PATH_KINDS.get(path)
        if kind is None:
            kind = _path_kind(path)
        if kind[0] and not self.options.allow_admin_routes:
            raise Refused(
                403,
                f"{path} is a model-server control route and is not reachable through the proxy "
                "(the sidecar manages adapters; start the proxy with --allow-admin-routes to permit it)",
                "admin_route",
            )
        return kind

    def route(self, ex: Exchange, kind: PathKind, body: bytes) -> Routed:
        """Read the body's model, choose the pool and rewrite for it (pure but for the decision counters)."""
        _, required, models_list = kind
        request = ex.request
        method = request.method
        ex.body = body
        rewritable = method == "POST" and bool(body) and self._parse(ex, required)
        if self._sticky:
            ex.sticky_key = request.headers.get(self._sticky) or None
        pool = self.manager.pools.choose(self.clock(), ex.sticky_key)
        if pool is None:
            raise Refused(503, "every pool has weight 0 (drained); nothing can serve this request", "drained")
        out = self._rewrite(ex, pool) if rewritable else body
        ex.pool = pool.name
        return Routed(pool, out, models_list and method == "GET", rewritable)

    async def forward(self, ex: Exchange, route: Routed, sent: Sent = None) -> None:
        """Forward and relay; a pool that cannot be reached hands the request to another pool once.
        `sent`: the fast lane's answer (or failure) for the first pool."""
        pool, out, augment, rewritable = route.pool, route.body, route.augment, route.rewritable
        pools = self.manager.pools
        while True:
            ex.pool = pool.name
            ex.error = None
            try:
                await self.forwarder.forward(ex, pool, out, augment, sent)
                return
            except Unreachable as failed:
                sent = None
                ex.tried += (pool.name,)
                tried = ex.tried
                other = pools.choose(self.clock(), ex.sticky_key, exclude=tried) if len(tried) < 2 else None
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
                out = self._rewrite(ex, pool) if rewritable else ex.body

    async def _read_body(self, request: IntakeRequest) -> bytes:
        limit = self.options.max_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise Refused(
                413, f"request body of {length} bytes is over the limit of {limit} bytes", "too_large"
            )
        try:
            if request.body_complete:  # all of it has arrived already: no wait, no timer
                return await request.read()
            async with asyncio.timeout(self.options.client_body_timeout):
                return await request.read()
        except BodyTooLarge:
            raise Refused(413, f"request body is over the limit of {limit} bytes", "too_large") from None
        except BadBody:
            raise Refused(
                400, "the request body is not valid HTTP/1.1 (broken chunked framing)", "bad_request"
            ) from None
        except TimeoutError:
            raise Refused(408, "the request body did not arrive in time", "body_timeout") from None

    @staticmethod
    def _parse(ex: Exchange, required: bool) -> bool:
        """Read the JSON object of a body whose `model` the rules may rewrite; False to pass it on as is."""
        if not required and ex.request.ctype != "application/json":
            ctype = ex.request.content_type  # parsed only when not the plain common value
            if not (ctype == "application/json" or ctype.endswith("+json")):
                return False  # e.g. a multipart upload: not ours to read
        try:
            obj = loads(ex.body)
        except ValueError as exc:
            raise Refused(400, f"request body is not valid JSON: {exc}", "bad_request") from None
        if not isinstance(obj, dict):
            if required:
                raise Refused(400, "request body must be a JSON object", "bad_request")
            return False
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            if required:
                raise Refused(400, "model must be a string", "bad_request", param="model")
            return False
        ex.obj, ex.model, ex.model_required = obj, model, required
        return True

    def _rewrite(self, ex: Exchange, pool: UpstreamPool) -> bytes:
        """Decide the target in `pool` and return the body to send (rewritten when the target differs)."""
        model = ex.model
        table = pool.table
        route: Route | None
        ex.alias = ex.rule = ""
        ex.target = None
        if model is None:
            route = table.catch_all
            if route is None:
                if ex.model_required:
                    raise Refused(400, "you must provide a model parameter", "bad_request", param="model")
                return ex.body
        else:
            route = table.lookup(model)
            if route is None:
                return ex.body
        ex.alias, ex.rule = route.alias, route.rule.id
        wanted = ex.request.headers.get(self._target_header) if self._target_header else None
        target: str | None
        if wanted is not None:
            target = self._named_target(route, wanted.strip(), model)
        else:
            loaded = pool.loaded() if pool.loaded is not None else None
            target = decide_target(route, ex.sticky_key, loaded)
        self._count_decision(route, target)
        if target is None:
            raise Refused(
                503,
                f"every target of {route.rule.id} has weight 0 (drained); no model can serve "
                f"{model if model is not None else 'this request'!r} right now",
                "drained",
                param="model",
            )
        ex.target = target
        mirror = route.mirror
        # A request the weights already send to the mirror target is not copied to it again.
        if mirror is not None and not ex.tried and target != mirror.target:
            self._mirror(ex, pool, route.alias, mirror)
        if target != model:
            assert ex.obj is not None
            return with_model(ex.obj, target)
        return ex.body

    def _mirror(self, ex: Exchange, pool: UpstreamPool, alias: str, mirror: Mirror) -> None:
        """Send a shadow copy of this request to the mirror target when it is one of the share selected."""
        shadow = self.shadow
        if not shadow.selects(alias, mirror.target, mirror.percent):
            return
        assert ex.obj is not None
        request = ex.request
        headers = self.forwarder.upstream_headers(request)
        headers.append((SHADOW_HEADER.encode(), b"1"))
        copy = ShadowCopy(
            alias,
            mirror.target,
            pool.base,
            request.method,
            request.raw_path,
            headers,
            dumps({**ex.obj, "model": mirror.target}),  # every other field, `stream` included, kept
        )
        shadow.send(copy, ex)

    def _named_target(self, route: Route, wanted: str, model: str | None) -> str:
        """The target --target-header asks for; only a target of this alias (never any other model)."""
        target = route.target_named(wanted)
        if target is None:
            choices = (["stable", "canary"] if route.canary is not None else []) + list(route.names)
            raise Refused(
                400,
                f"{self._target_header}: {wanted!r} is not a target of {model if model is not None else route.alias!r}; "
                f"use one of {', '.join(choices)}",
                "bad_request",
            )
        return target

    def _count_decision(self, route: Route, target: str | None) -> None:
        self.metrics.decision(route.rule.id, target or "drained")


# path -> (control route, must name a model, is GET /v1/models): clients reuse a handful of
# paths, so the three checks are one dict lookup; bounded for clients that do not.
_PATH_KINDS: Final[dict[str, PathKind]] = {}
_PATH_KINDS_MAX: Final = 1024


def _path_kind(path: str) -> PathKind:
    kind = (is_admin_path(path), model_required(path), normalize_path(path) == "/v1/models")
    if len(_PATH_KINDS) >= _PATH_KINDS_MAX:
        _PATH_KINDS.clear()
    _PATH_KINDS[path] = kind
    return kind


def _expect_continue(request: IntakeRequest) -> None:
    """Answer `Expect: 100-continue` (HTTP/1.1) so the client sends its body; refuse other expectations."""
    expect = request.expect or ""
    if request.version < (1, 1):
        return
    if expect.lower() != "100-continue":
        raise Refused(417, f"unknown Expect: {expect}", "bad_request")
    request.send_continue()  # only when the body has not all arrived: the client waits for this


def build_proxy_server(core: ProxyCore, *, keepalive_timeout: float) -> IntakeServer:
    """The proxy's server: `core.handle` for every request, bodies bounded by --max-body-size.

    The upstream session is opened and closed by the caller (`ProxyService`).
    """
    return IntakeServer(
        core.handle,
        max_body_size=core.options.max_body_size,
        idle_timeout=keepalive_timeout,
        lane=core.serve_now,
    )


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
