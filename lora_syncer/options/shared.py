"""Settings more than one command takes: declared here once, reused (`.but(...)` for a variant)."""

from __future__ import annotations

from pathlib import Path

from lora_syncer.options.setting import Setting
from lora_syncer.options.values import (
    COUNT_OR_PERCENT,
    HEADER_NAME,
    NUMBER_SECONDS,
    PATH,
    POOL,
    PORT,
    SECONDS_OR_ZERO,
    SIZE,
    SOURCE_PATTERN,
    URL,
    choice,
    whole_in,
)

DEFAULT_CONFIG = "/config/configmap.yaml"
DEFAULT_PROXY_PORT = 8081
DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024

# --- the adapters file and the model server ------------------------------------------

CONFIG = Setting(
    "--config",
    PATH,
    default=Path(DEFAULT_CONFIG),
    legacy_env=("DYNAMIC_LORA_ROLLOUT_CONFIG",),
    metavar="FILE",
    help="adapters file (vLLMLoRAConfig)",
)
SERVER = Setting(
    "--server",
    URL,
    default_text="the file's host/port",
    help="vLLM base URL, overriding the file's host/port (e.g. http://127.0.0.1:8000)",
)
API_KEY = Setting(
    "--api-key",
    legacy_env=("VLLM_API_KEY",),
    metavar="KEY",
    help="sent to vLLM as 'Authorization: Bearer'. Never logged",
)
PRUNE = Setting(
    "--prune",
    action="switch",
    default=False,
    help="also unload adapters the server has that ensureExist does not declare",
)
PRUNE_MAX = Setting(
    "--prune-max",
    COUNT_OR_PERCENT,
    default="50%",
    help="with --prune, a pass that would unload more undeclared adapters than this (a count, or a "
    "percentage of the loaded adapters) is held until the file stays unchanged for one more resync",
)
BASE_MODEL_POLICY = Setting(
    "--base-model-policy",
    choice("ignore", "warn", "enforce"),
    default="warn",
    help="adapters whose base model this server does not serve: load anyway (ignore), "
    "load and warn (warn), or skip (enforce)",
)
ALLOWED_SOURCES = Setting(
    "--allowed-sources",
    SOURCE_PATTERN,
    action="append",
    default=(),
    split_flags=True,
    default_text="any",
    help="allowed adapter sources: a prefix (a hub org like 'myorg/' or a directory like "
    "'/adapters/'), a remote root ('s3://bucket/team', 'https://host[:port]/path'), or 're:<regex>'; "
    "repeat or comma-separate. Others are refused (plain http:// always needs a rule)",
)

# --- serving: health/metrics server, shutdown, logs -----------------------------------

METRICS_PORT = Setting(
    "--metrics-port",
    PORT,
    default=8080,
    field="metrics_port",
    help="port of /healthz, /readyz, /status and /metrics",
)
METRICS_HOST = Setting(
    "--metrics-host", default="0.0.0.0", metavar="ADDRESS", help="address the health/metrics server binds"
)
SHUTDOWN_GRACE = Setting(
    "--shutdown-grace",
    SECONDS_OR_ZERO,
    default=10.0,
    help="seconds in-flight calls and requests get to finish on SIGTERM",
)
LOG_FORMAT = Setting(
    "--log-format",
    choice("auto", "json", "console"),
    default="auto",
    help="auto: JSON lines unless stderr is a terminal",
)
LOG_LEVEL = Setting(
    "--log-level", choice("debug", "info", "warning", "error"), default="info", help="log level"
)

LOGGING = (LOG_FORMAT, LOG_LEVEL)

# --- the rewrite proxy (`run --rules` and `proxy`) -------------------------------------

PROXY = (
    Setting(
        "--rules",
        PATH,
        field="rules_path",
        metavar="FILE",
        help="rules file: InferenceModelRewrite / InferenceModel documents (ConfigMap key rules.yaml); "
        "hot-reloaded",
    ),
    Setting(
        "--proxy-port",
        PORT,
        default=DEFAULT_PROXY_PORT,
        field="port",
        help="port the proxy listens on (0 picks a free port)",
    ),
    Setting(
        "--proxy-host",
        default="0.0.0.0",
        field="host",
        metavar="ADDRESS",
        help="address the proxy listens on",
    ),
    Setting(
        "--sticky-header",
        HEADER_NAME,
        help="request header (e.g. x-user-id) whose value pins a client to one target while weights are unchanged",
    ),
    Setting(
        "--response-model",
        choice("served", "requested"),
        default="served",
        help="`model` in answers: the target that served it (as vLLM says) or the name the client asked for",
    ),
    Setting(
        "--max-body-size",
        SIZE,
        default=DEFAULT_MAX_BODY_SIZE,
        default_text="32MiB",
        help="largest request body accepted (413 above it); e.g. 32MiB",
    ),
    Setting(
        "--pool-name",
        metavar="NAME",
        help="InferencePool this proxy fronts; rules whose poolRef names another pool are rejected",
    ),
    Setting(
        "--allow-admin-routes",
        action="switch",
        default=False,
        help="let clients reach vLLM's adapter and control routes through the proxy (default: refused with 403)",
    ),
    Setting(
        "--upstream-timeout",
        NUMBER_SECONDS,
        default=600.0,
        help="seconds the model server may stay silent before an answer (or between chunks) fails with 504",
    ),
    Setting(
        "--upstream-connect-timeout",
        NUMBER_SECONDS,
        default=10.0,
        help="seconds to wait for a connection to the model server",
    ),
    Setting(
        "--upstream-connections",
        whole_in(1, None),
        default=512,
        help="most connections open to the model server at once (others wait)",
    ),
    Setting(
        "--shadow-concurrency",
        whole_in(0, 1024),
        default=2,
        help="shadow copies (a rollout's mirror step) in flight at once; a copy over the budget is dropped "
        "and counted; each copy is a full inference on the model server; 0 drops every copy",
    ),
    Setting(
        "--client-idle-timeout",
        NUMBER_SECONDS,
        default=75.0,
        help="seconds an idle keep-alive client connection stays open",
    ),
    Setting(
        "--client-body-timeout",
        NUMBER_SECONDS,
        default=60.0,
        help="seconds a client may take to send its request body (408 after)",
    ),
    # --- automated rollouts (AdapterRollout documents in the rules file) ---
    Setting(
        "--target-header",
        HEADER_NAME,
        help="request header (e.g. x-lora-syncer-target) whose value `stable`, `canary` or a target's name "
        "picks that target of the requested alias regardless of weights (400 for a name outside the alias)",
    ),
    Setting(
        "--state-dir",
        PATH,
        metavar="DIR",
        help="directory where AdapterRollout progress is persisted (mount an emptyDir), so a restarted "
        "container resumes at the same step; unset: kept in memory",
    ),
    Setting(
        "--rollout-control",
        action="switch",
        default=False,
        help="serve POST /rollouts/NAME/abort and /rollouts/NAME/pause on the metrics port (they act at once "
        "and persist; resuming stays a document edit)",
    ),
)

# --- upstream pools (`proxy` only) -----------------------------------------------------

POOLS = (
    Setting(
        "--pool",
        POOL,
        action="append",
        default=(),
        env="LORA_SYNCER_POOLS",
        field="pools",
        help="an upstream pool (repeatable; in the variable, comma-separated): traffic is split between "
        "pools by weight (default 1); an HTTPRoute in the rules file overrides the weights and these "
        "flags then only map its backendRefs names to URLs; replaces --server",
    ),
    Setting(
        "--pool-failure-threshold",
        whole_in(1, None),
        default=3,
        help="failures in a row (connection errors, 5xx answers) that take a pool out of the rotation",
    ),
    Setting(
        "--pool-backoff",
        NUMBER_SECONDS,
        default=1.0,
        help="seconds a failed pool stays out before a health probe may bring it back "
        "(doubles while it keeps failing)",
    ),
    Setting(
        "--pool-backoff-max",
        NUMBER_SECONDS,
        default=30.0,
        help="longest time a failed pool stays out between health probes",
    ),
    Setting(
        "--pool-health-interval",
        NUMBER_SECONDS,
        default=2.0,
        help="seconds between health probes (GET /health) of each pool",
    ),
    Setting(
        "--pool-health-timeout",
        NUMBER_SECONDS,
        default=2.0,
        help="seconds a pool's /health may take before the probe counts as failed",
    ),
)

__all__ = [
    "ALLOWED_SOURCES",
    "API_KEY",
    "BASE_MODEL_POLICY",
    "CONFIG",
    "DEFAULT_CONFIG",
    "LOGGING",
    "METRICS_HOST",
    "METRICS_PORT",
    "POOLS",
    "PROXY",
    "PRUNE",
    "SERVER",
    "SHUTDOWN_GRACE",
]
