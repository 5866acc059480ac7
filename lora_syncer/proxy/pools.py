"""Upstream pools of the standalone proxy: where they are, how traffic is split, who is healthy (pure).

A pool is a name, a base URL (a Kubernetes Service in front of one set of vLLM pods) and a
weight. Pools come from `--pool NAME=URL[@WEIGHT]` flags or from the `HTTPRoute` of the rules
file, whose `backendRefs[].name` are mapped to URLs:

1. a `--pool NAME=URL` flag with that name gives the URL (its `@WEIGHT` is then unused: the
   HTTPRoute's weight is in force);
2. otherwise the Kubernetes Service convention: `http://NAME.NAMESPACE.svc:PORT`, NAMESPACE being
   the backendRef's `namespace`, else the HTTPRoute's `metadata.namespace`; with neither,
   `http://NAME:PORT` (the proxy's own namespace). PORT is the backendRef's `port`, else 8000
   (vLLM's port).

Selection between pools is the same as between adapter targets (`lora_syncer.proxy.select`):
exact smooth weighted round-robin, or sticky hashing on a header. Pools whose circuit breaker
is open are not eligible; their share goes to the others in proportion to their weights.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from lora_syncer.config.rules import Backend, PoolRoute
from lora_syncer.proxy.select import SmoothWeightedRoundRobin, pick_sticky

DEFAULT_POOL_PORT = 8000
MAX_POOL_WEIGHT = 1_000_000

PoolSource = Literal["server", "flags", "httproute"]
BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True)
class PoolSpec:
    """One upstream pool: its name (what `poolRef` and `backendRefs` call it), base URL and weight."""

    name: str
    url: str
    weight: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a pool needs a name")
        check_url(self.url, f"pool {self.name!r}")
        if not 0 <= self.weight <= MAX_POOL_WEIGHT:
            raise ValueError(f"pool {self.name!r}: weight must be 0..{MAX_POOL_WEIGHT}")


def check_url(url: str, what: str) -> None:
    """Raise ValueError unless `url` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what}: {url!r} must be an http:// or https:// URL with a host")


def parse_pool_flag(text: str) -> PoolSpec:
    """`NAME=URL[@WEIGHT]` -> PoolSpec (weight 1 when not given). Raises ValueError."""
    name, sep, rest = text.strip().partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ValueError(f"--pool {text!r} must look like NAME=URL or NAME=URL@WEIGHT")
    url, weight = rest.strip(), 1
    head, at, tail = url.rpartition("@")
    if at and tail.strip().isdigit():
        url, weight = head, int(tail)
    return PoolSpec(name=name, url=url.rstrip("/"), weight=weight)


def split_pools_env(text: str) -> list[str]:
    """LORA_SYNCER_POOLS: entries separated by commas or whitespace."""
    return [part for chunk in text.split(",") for part in chunk.split() if part]


def check_unique(pools: Sequence[PoolSpec]) -> None:
    """Raise ValueError when two pools share a name."""
    seen: set[str] = set()
    for pool in pools:
        if pool.name in seen:
            raise ValueError(f"pool {pool.name!r} is given twice")
        seen.add(pool.name)


def convention_url(backend: Backend, route_namespace: str | None) -> str:
    """The in-cluster URL of a backend that no `--pool` flag names."""
    port = backend.port or DEFAULT_POOL_PORT
    namespace = backend.namespace or route_namespace
    host = f"{backend.name}.{namespace}.svc" if namespace else backend.name
    return f"http://{host}:{port}"


def route_pools(route: PoolRoute, urls: Mapping[str, str]) -> tuple[PoolSpec, ...]:
    """The pools an HTTPRoute names, with their weights, mapped to URLs (flags first, then convention)."""
    return tuple(
        PoolSpec(
            name=b.name,
            url=urls.get(b.name) or convention_url(b, route.namespace),
            weight=b.weight,
        )
        for b in route.backends
    )


class PoolPicker:
    """Weighted choice of a pool: smooth round-robin, or sticky by key; skips pools not eligible."""

    __slots__ = ("_rr", "names", "weights")

    def __init__(self, names: Sequence[str], weights: Sequence[int]) -> None:
        self.names = tuple(names)
        self.weights = tuple(weights)
        self._rr = SmoothWeightedRoundRobin(self.names, self.weights)

    def same_as(self, names: Sequence[str], weights: Sequence[int]) -> bool:
        return self.names == tuple(names) and self.weights == tuple(weights)

    def pick(self, eligible: Container[str] | None = None, sticky_key: str | None = None) -> str | None:
        """A pool name, or None when no pool with weight > 0 is eligible."""
        if sticky_key is not None:
            index = pick_sticky(self.names, self.weights, sticky_key, eligible)
        else:
            index = self._rr.pick(eligible)
        return None if index is None else self.names[index]


@dataclass
class CircuitBreaker:
    """Whether one pool takes traffic (pure: the caller passes the clock).

    Closed: in rotation. `failure_threshold` request failures in a row (5xx answers, connection
    errors) or one failed health probe open it: out of rotation for `backoff` seconds, doubling
    at each failed probe up to `backoff_max`. When the backoff is over it is half-open: the next
    health probe decides (success closes it and resets the backoff; failure opens it again).
    """

    failure_threshold: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    backoff: float = 0.0
    last_error: str | None = None
    opens: int = 0

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "open" if now < self.opened_at + self.backoff else "half-open"

    def available(self, now: float) -> bool:
        """In rotation: only when closed (a half-open pool waits for its health probe)."""
        return self.opened_at is None

    def wants_probe(self, now: float) -> bool:
        """Whether a health probe is due: always when closed (to notice a failure), after the backoff when open."""
        return self.state(now) != "open"

    def record_success(self) -> None:
        """A request answered (status < 500): failures in a row start again from 0."""
        if self.opened_at is None:
            self.failures = 0

    def record_failure(self, now: float, error: str) -> bool:
        """A request failed; True when this opened the breaker."""
        self.last_error = error
        if self.opened_at is not None:
            return False
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self._open(now, self.backoff_initial)
            return True
        return False

    def probe_failed(self, now: float, error: str) -> bool:
        """A health probe failed; True when the pool left the rotation because of it (it was closed)."""
        self.last_error = error
        was_closed = self.opened_at is None
        self._open(now, self.backoff_initial if was_closed else min(self.backoff * 2, self.backoff_max))
        return was_closed

    def probe_succeeded(self) -> bool:
        """A health probe passed; True when the pool came back into the rotation."""
        was_open = self.opened_at is not None
        if was_open:
            self.opened_at = None
            self.failures = 0
            self.backoff = 0.0
        # While closed, a passing /health says nothing about the requests failing in a row (a server
        # can answer /health and fail every inference): their count stands.
        return was_open

    def retry_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.backoff

    def _open(self, now: float, backoff: float) -> None:
        if self.opened_at is None:
            self.opens += 1
        self.opened_at = now
        self.backoff = max(min(backoff, self.backoff_max), 0.0)
        self.failures = 0
