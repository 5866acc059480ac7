"""Which requests the proxy refuses or must see a `model` in (pure).

Clients of the proxy must not be able to load or unload adapters, or reach vLLM's other
control routes (sleep, weight updates, RPC into workers...): those are for the sidecar.
The list follows vLLM's routers (0.32/0.33); paths are normalised first so `//sleep`,
`/sleep/` or `/x/../sleep` do not slip past.
"""

from __future__ import annotations

import posixpath
from functools import lru_cache

# Exact paths of vLLM's control routes (any method).
ADMIN_PATHS = frozenset(
    {
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
        "/reset_prefix_cache",
        "/reset_mm_cache",
        "/reset_encoder_cache",
        "/sleep",
        "/wake_up",
        "/is_sleeping",
        "/collective_rpc",
        "/scale_elastic_ep",
        "/is_scaling_elastic_ep",
        "/pause",
        "/resume",
        "/is_paused",
        "/abort_requests",
        "/inference/v1/abort_requests",
        "/start_profile",
        "/stop_profile",
        "/update_weights",
        "/start_weight_update",
        "/finish_weight_update",
        "/start_draft_weight_update",
        "/init_weight_transfer_engine",
        "/shutdown_weight_transfer_engine",
        "/update_weight_version",
        "/weight_checker",
        "/weight_info",
        "/release_kv_cache_memory",
        "/get_world_size",
        "/server_info",
    }
)
# Path prefixes (the SageMaker-style adapter routes, fault-tolerance control).
ADMIN_PREFIXES = ("/adapters", "/fault_tolerance")

# OpenAI inference routes whose body must name a model when sent through the proxy.
MODEL_REQUIRED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings"})


@lru_cache(maxsize=1024)  # clients reuse a handful of paths; bounded for the ones that do not
def normalize_path(path: str) -> str:
    """Collapse repeated slashes and dot segments, drop a trailing slash."""
    if not path.startswith("/"):
        path = "/" + path
    clean = posixpath.normpath(path)
    if clean.startswith("//"):  # normpath keeps a leading double slash (POSIX rule)
        clean = "/" + clean.lstrip("/")
    return clean


def is_admin_path(path: str) -> bool:
    """Whether `path` (already percent-decoded) is one of vLLM's control routes."""
    clean = normalize_path(path)
    if clean in ADMIN_PATHS:
        return True
    return any(clean == p or clean.startswith(p + "/") for p in ADMIN_PREFIXES)


def model_required(path: str) -> bool:
    """Whether a POST to `path` must carry a `model` (the OpenAI API requires it there)."""
    return normalize_path(path) in MODEL_REQUIRED_PATHS
