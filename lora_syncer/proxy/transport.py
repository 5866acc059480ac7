"""How the proxy talks to its upstreams: one interface over the lean client and aiohttp's session.

Plain `http://` upstreams go through the lean keep-alive client (`lora_syncer.proxy.upstream`),
anything else (https) through one shared `aiohttp.ClientSession`, which also serves the pools'
health probes. Both hand back an `UpstreamAnswer`, and every exception either raises is turned
into an `UpstreamFailure` in one place (`classify`), so the forward path handles one kind of
error whichever client carried the request.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
from yarl import URL

from lora_syncer.proxy.headers import RawHeaders, decoded
from lora_syncer.proxy.upstream import ConnectFailed, ConnectTimedOut, UpstreamClient

FailureKind = Literal["connect", "connect_timeout", "timeout", "disconnect"]

# Everything a transport may raise while sending a request or reading its answer.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


class UpstreamAnswer(Protocol):
    """An answer being received: status line, headers, declared length, and the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The header fields as received, in order (relayed as they are)."""
        ...

    @property
    def content_type(self) -> str:
        """The Content-Type field as received ("" when none)."""
        ...

    @property
    def content_length(self) -> int | None: ...

    async def readany(self) -> bytes: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """What went wrong talking to an upstream, in the proxy's terms.

    `kind`: connect (refused, unreachable), connect_timeout, timeout (silent too long) or
    disconnect (the connection broke). `detail` is safe to log and to show the client.
    """

    kind: FailureKind
    detail: str

    @property
    def retryable(self) -> bool:
        """Before any answer, whether another pool may take the request (not after a read timeout:
        the upstream may be working on it)."""
        return self.kind != "timeout"


def _os_words(err: BaseException | None) -> str:
    if isinstance(err, socket.gaierror):
        return "host name not found"
    if isinstance(err, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the upstream"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return "connection failed"


def in_words(exc: BaseException) -> str:
    """An exception of either client as a person says it (refused, timed out, ...), never a class name."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, ConnectFailed | aiohttp.ClientConnectorError):
        return _os_words(exc.os_error)
    if isinstance(exc, ConnectTimedOut | aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "not a valid http(s) URL"
    if isinstance(exc, OSError):
        return _os_words(exc)
    return str(exc) or "the connection broke"


def classify(exc: BaseException) -> UpstreamFailure:
    """The one mapping from either client's exceptions to an `UpstreamFailure`."""
    if isinstance(exc, ConnectFailed | aiohttp.ClientConnectorError):
        return UpstreamFailure("connect", in_words(exc))
    if isinstance(exc, ConnectTimedOut | aiohttp.ConnectionTimeoutError):
        return UpstreamFailure("connect_timeout", in_words(exc))
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return UpstreamFailure("timeout", "timed out")
    return UpstreamFailure("disconnect", in_words(exc))


class _SessionAnswer:
    """An aiohttp client answer with the `UpstreamAnswer` interface."""

    __slots__ = ("_resp", "content_length", "content_type", "raw_headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.raw_headers = resp.raw_headers
        self.content_type = resp.headers.get("Content-Type", "")
        self.content_length = resp.content_length

    async def readany(self) -> bytes:
        return await self._resp.content.readany()

    async def read(self) -> bytes:
        return await self._resp.read()

    def release(self) -> None:
        self._resp.release()


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Connection limits and timeouts shared by both clients."""

    connections: int
    connect_timeout: float
    read_timeout: float
    idle_timeout: float = 30.0


class Transport:
    """The proxy's upstream connections: open, send, probe, close."""

    def __init__(self, limits: TransportLimits) -> None:
        self.limits = limits
        self.session: aiohttp.ClientSession | None = None
        self.client: UpstreamClient | None = None

    @property
    def is_open(self) -> bool:
        return self.session is not None

    async def open(self) -> None:
        """Create the session and the lean client (bounded connection pools, explicit timeouts)."""
        limits = self.limits
        connector = aiohttp.TCPConnector(
            limit=limits.connections,
            limit_per_host=limits.connections,
            ttl_dns_cache=60,
            keepalive_timeout=limits.idle_timeout,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
            ),
            auto_decompress=False,  # relay bytes as they are; the client asked for its own encoding
            # A proxy adds no headers of its own: no default Accept-Encoding, User-Agent or Accept.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        self.client = UpstreamClient(
            limit=limits.connections,
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.read_timeout,
            idle_timeout=limits.idle_timeout,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def send(
        self, method: str, base: str, target: str, headers: RawHeaders, body: bytes
    ) -> Awaitable[UpstreamAnswer]:
        """Send one request to `base` + `target` (raw path and query); the answer once its head is in.

        Raises whatever the client raises (map it with `classify`). Not a coroutine itself: the lean
        client's is handed back as is, one frame less on every resumption of the hot path.
        """
        client = self.client
        if client is not None and client.supports(base):
            return client.request(method, base, target, headers, body)
        return self._session_send(method, base, target, headers, body)

    async def _session_send(
        self, method: str, base: str, target: str, headers: RawHeaders, body: bytes
    ) -> UpstreamAnswer:
        session = self.session
        if session is None:
            raise aiohttp.ClientConnectionError("the proxy is shutting down")
        return _SessionAnswer(
            await session.request(
                method,
                URL(base + target, encoded=True),
                headers=decoded(headers),
                data=body or None,
                allow_redirects=False,
            )
        )

    async def probe(self, url: str, within: float) -> str | None:
        """GET `url` within `within` seconds: None when it answers 200, else why not (one line)."""
        session = self.session
        if session is None:
            return "health probe: the proxy is shutting down"
        try:
            async with session.get(
                url, timeout=aiohttp.ClientTimeout(total=within), allow_redirects=False
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    return f"health probe: HTTP {resp.status}"
        except TimeoutError:
            return "health probe: timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return f"health probe: {in_words(exc)}"
        return None
