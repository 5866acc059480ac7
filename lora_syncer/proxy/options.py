"""Settings of the rewrite proxy: `ProxyOptions`, built from the flags `lora_syncer.options` declares."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lora_syncer.options.shared import DEFAULT_MAX_BODY_SIZE, DEFAULT_PROXY_PORT, POOLS, PROXY
from lora_syncer.proxy.pools import PoolSpec, check_unique, check_url

ResponseModel = Literal["served", "requested"]

# The answer header naming the model that served the request (after any rewrite).
SERVED_MODEL_HEADER = "x-lora-syncer-served-model"
# The answer header naming the pool that served the request (only when the proxy splits between pools).
POOL_HEADER = "x-lora-syncer-pool"

DEFAULT_PORT = DEFAULT_PROXY_PORT
__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PORT",
    "POOL_HEADER",
    "SERVED_MODEL_HEADER",
    "ProxyOptions",
    "ResponseModel",
    "proxy_options_from_args",
]


@dataclass(frozen=True)
class ProxyOptions:
    """Everything the proxy needs; the flags' help (`lora_syncer.options.shared`) gives the meanings."""

    upstream: str
    rules_path: Path | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    sticky_header: str | None = None
    response_model: ResponseModel = "served"
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    pool_name: str | None = None
    allow_admin_routes: bool = False
    upstream_timeout: float = 600.0  # longest silence between two chunks of an answer
    upstream_connect_timeout: float = 10.0
    upstream_connections: int = 512
    shadow_concurrency: int = 2  # shadow copies in flight at once (a rollout's mirror step)
    client_idle_timeout: float = 75.0
    client_body_timeout: float = 60.0
    watch_mode: str = "auto"
    poll_interval: float = 1.0
    rules_resync_interval: float = 60.0
    # Pools (the standalone proxy): from --pool flags, and from the rules file's HTTPRoute.
    pools: tuple[PoolSpec, ...] = ()
    pools_from_rules: bool = False
    pool_failure_threshold: int = 3
    pool_backoff: float = 1.0
    pool_backoff_max: float = 30.0
    pool_health_interval: float = 2.0
    pool_health_timeout: float = 2.0
    pool_health_path: str = "/health"

    @property
    def pool_mode(self) -> bool:
        """Whether pools may be in play (so health probes run)."""
        return bool(self.pools) or self.pools_from_rules

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream {self.upstream!r} must be an http:// or https:// URL")
        check_url(self.upstream, "upstream")
        check_unique(self.pools)
        if self.pool_name is not None and self.pool_mode:
            raise ValueError(
                "--pool-name is for a proxy in front of one pool; with --pool or an HTTPRoute each "
                "rule's poolRef picks the pools it applies to"
            )
        if self.pool_failure_threshold < 1:
            raise ValueError("pool_failure_threshold must be at least 1")
        if not self.pool_health_path.startswith("/"):
            raise ValueError("pool_health_path must start with /")
        if self.response_model not in ("served", "requested"):
            raise ValueError("response_model must be 'served' or 'requested'")
        for name in ("max_body_size", "upstream_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "pool_backoff",
            "pool_backoff_max",
            "pool_health_interval",
            "pool_health_timeout",
            "upstream_timeout",
            "upstream_connect_timeout",
            "client_idle_timeout",
            "client_body_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.shadow_concurrency < 0:
            raise ValueError("shadow_concurrency must be at least 0")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")


def proxy_options_from_args(
    args: argparse.Namespace, upstream: str, *, pools_from_rules: bool = False
) -> ProxyOptions:
    """ProxyOptions from resolved flags (`run`'s or `proxy`'s); `upstream` is the model server's URL.

    Every declared proxy setting the command has is copied by name; `pools_from_rules`: route
    by the rules file's HTTPRoute (the standalone proxy; a sidecar fronts its own vLLM).
    Raises ValueError when settings contradict each other (e.g. --pool-name with --pool).
    """
    values: dict[str, Any] = {
        s.target: getattr(args, s.dest) for s in (*PROXY, *POOLS) if hasattr(args, s.dest)
    }
    values["pools"] = tuple(values.get("pools") or ())
    for name in ("sticky_header", "pool_name"):
        values[name] = values.get(name) or None  # an empty flag means none, like an empty variable
    return ProxyOptions(upstream=upstream, pools_from_rules=pools_from_rules, **values)
