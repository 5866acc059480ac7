"""Which settings each command takes, in the order `--help` and the docs show them.

Settings only one command takes are declared here, next to their command's list.
"""

from __future__ import annotations

from lora_syncer.options.setting import Setting
from lora_syncer.options.shared import (
    ALLOWED_SOURCES,
    API_KEY,
    BASE_MODEL_POLICY,
    CONFIG,
    LOGGING,
    METRICS_HOST,
    METRICS_PORT,
    POOLS,
    PROXY,
    PRUNE,
    PRUNE_MAX,
    SERVER,
    SHUTDOWN_GRACE,
)
from lora_syncer.options.values import (
    BOOL,
    FAILURE_RATE,
    HEADER,
    LATENCY,
    MODEL_FAULT,
    NAME_PATH,
    NUMBER_SECONDS,
    PATH,
    PORT,
    ROUTE_PATH,
    SECONDS_OR_ZERO,
    SIZE,
    URL,
    WHOLE,
    choice,
    whole_in,
)

Section = tuple[str, tuple[Setting, ...]]

# --- run -------------------------------------------------------------------------------

RECONCILING = (
    Setting(
        "--reconcile-trigger", NUMBER_SECONDS, default=5.0, help="seconds between periodic resync passes"
    ),
    Setting(
        "--health-check-timeout",
        SECONDS_OR_ZERO,
        default=300.0,
        help="seconds to wait for vLLM's /health at start-up before retrying with backoff",
    ),
    Setting(
        "--health-check-interval",
        NUMBER_SECONDS,
        default=2.0,
        help="seconds between /health probes while waiting",
    ),
    Setting(
        "--config-validation",
        action="switch",
        default=True,
        help="accepted for compatibility with the old sidecar; the file is always validated",
    ),
    Setting(
        "--max-concurrency",
        whole_in(1, 256),
        default=4,
        help="load/unload calls in flight at once, and (with --adapter-cache) source downloads",
    ),
    PRUNE,
    PRUNE_MAX,
    BASE_MODEL_POLICY,
    ALLOWED_SOURCES,
    Setting(
        "--backoff-initial",
        NUMBER_SECONDS,
        default=5.0,
        help="first retry delay for a failing adapter, doubling per failure",
    ),
    Setting("--backoff-max", NUMBER_SECONDS, default=300.0, help="longest retry delay for a failing adapter"),
    Setting("--call-timeout", NUMBER_SECONDS, default=15.0, help="seconds to wait for vLLM to answer a call"),
    Setting("--load-timeout", NUMBER_SECONDS, default=120.0, help="seconds to wait for one adapter load"),
    Setting(
        "--watch",
        choice("auto", "inotify", "poll"),
        default="auto",
        help="how to notice file changes: auto = inotify, polling where unavailable",
    ),
    Setting("--poll-interval", NUMBER_SECONDS, default=1.0, help="seconds between file checks when polling"),
    Setting(
        "--warmup",
        action="switch",
        default=False,
        help="after each load, send the adapter one 1-token /v1/completions (one adapter at a time); "
        "it counts as loaded, and gets proxy traffic, once that answers",
    ),
    Setting(
        "--max-cpu-loras",
        whole_in(1, None),
        default=None,
        default_text="vLLM's max_lora from its /metrics",
        help="adapters the server keeps in CPU memory (vLLM's --max-cpu-loras): warn when more are declared",
    ),
)

# The proxy's --upstream-timeout default: the GC grace may not be shorter (see settings.py).
DEFAULT_GC_GRACE = 900.0

ADAPTER_CACHE = (
    Setting(
        "--adapter-cache",
        PATH,
        metavar="DIR",
        help="directory (a volume shared with vLLM, mounted at the same path) where s3:// and https:// "
        "adapter sources are downloaded; without it such sources are refused",
    ),
    Setting(
        "--adapter-cache-max-bytes",
        SIZE,
        default_text="no budget",
        help="size budget of the adapter cache (e.g. 20GiB): versions vLLM no longer lists are "
        "removed, least recently used first, to stay under it",
    ),
    Setting(
        "--adapter-cache-gc-grace",
        NUMBER_SECONDS,
        default=DEFAULT_GC_GRACE,
        help="seconds a version must be unlisted by vLLM before its files may be removed; at least "
        "--upstream-timeout (queued requests may still read it)",
    ),
    Setting(
        "--download-concurrency",
        whole_in(1, 64),
        default=4,
        help="objects of one s3:// source downloaded at once",
    ),
)

RUN: tuple[Section, ...] = (
    ("adapters file and server", (CONFIG, SERVER, API_KEY)),
    ("reconciling", RECONCILING),
    ("adapter sources", ADAPTER_CACHE),
    (
        "health, metrics and process",
        (
            METRICS_PORT,
            METRICS_HOST,
            Setting(
                "--ready-when",
                choice("started", "synced"),
                default="synced",
                help="/readyz: 200 once started, or once every loadable declared adapter is loaded (synced)",
            ),
            SHUTDOWN_GRACE,
            *LOGGING,
        ),
    ),
    ("rewrite proxy", PROXY),
)

# --- proxy -----------------------------------------------------------------------------

PROXY_COMMAND: tuple[Section, ...] = (
    (
        "model server and process",
        (
            SERVER.but(
                default="http://localhost:8000",
                default_text=None,
                help="base URL of the vLLM server to forward to; unused with --pool or an HTTPRoute in the rules file",
            ),
            METRICS_PORT.but(
                type=whole_in(-1, 65535, "PORT"),
                help="port of /healthz /readyz /status /metrics (0 picks a free port; -1 disables)",
            ),
            METRICS_HOST,
            SHUTDOWN_GRACE.but(help="seconds in-flight requests get to finish on SIGTERM"),
            *LOGGING,
        ),
    ),
    ("rewrite proxy", PROXY),
    ("upstream pools", POOLS),
)

# --- check -----------------------------------------------------------------------------

CHECK: tuple[Section, ...] = (
    (
        "files",
        (
            Setting(
                "files",
                PATH,
                action="positional",
                env=None,
                metavar="FILE",
                help="adapters files, rules files or ConfigMap manifests ('-' reads standard input)",
            ),
            Setting("--quiet", action="flag", short="-q", default=False, help="print problems only"),
            Setting("--json", action="flag", default=False, help="print one JSON document with every result"),
        ),
    ),
)

# --- plan ------------------------------------------------------------------------------

PLAN: tuple[Section, ...] = (
    (
        "plan",
        (
            CONFIG.but(help="adapters file (vLLMLoRAConfig), or a ConfigMap manifest carrying one"),
            SERVER,
            API_KEY,
            Setting(
                "--offline",
                action="flag",
                default=False,
                help="plan against an empty server instead of asking vLLM",
            ),
            PRUNE.but(help="plan unloading undeclared adapters too"),
            PRUNE_MAX,
            BASE_MODEL_POLICY,
            ALLOWED_SOURCES,
            Setting(
                "--output", choice("text", "json"), default="text", help="text for people, json for tools"
            ),
        ),
    ),
)

# --- emulator --------------------------------------------------------------------------

EMULATOR: tuple[Section, ...] = (
    (
        "emulated server",
        (
            Setting("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on"),
            Setting("--port", PORT, default=8000, help="port to listen on"),
            Setting(
                "--served-model-name",
                action="extend",
                default=("Qwen/Qwen3-32B",),
                metavar="NAME",
                help="base model name(s); the first is the one answers carry and adapters' parent",
            ),
            Setting("--model", default_text="the name", help="base model `root`"),
            Setting("--version", default="0.32.0", help="vLLM version to report"),
            Setting("--max-lora-rank", whole_in(1, None), default=16, help="highest rank"),
            Setting(
                "--max-loras",
                whole_in(1, None),
                default=1,
                help="as vLLM's --max-loras; reported in /metrics (vllm:lora_requests_info max_lora)",
            ),
            Setting("--max-model-len", whole_in(1, None), default=4096, help="context length"),
            Setting(
                "--lora-modules",
                NAME_PATH,
                action="extend",
                default=(),
                help="adapters present at start and after every restart",
            ),
            Setting(
                "--runtime-lora-updating",
                BOOL,
                default=True,
                legacy_env=("VLLM_ALLOW_RUNTIME_LORA_UPDATING",),
                help="false: the load/unload routes answer 404 like a vLLM started without runtime updating",
            ),
            Setting(
                "--no-hub-ids",
                action="flag",
                default=False,
                help="refuse org/name sources that do not exist locally (404), as an offline vLLM does",
            ),
            Setting(
                "--require-weights",
                action="flag",
                default=False,
                help="local adapters also need adapter_model.safetensors (or .bin)",
            ),
            Setting("--embeddings", action="flag", default=False, help="serve POST /v1/embeddings"),
        ),
    ),
    (
        "faults",
        (
            Setting(
                "--latency",
                LATENCY,
                action="append",
                default=(),
                help="added latency per endpoint: * (all), an endpoint key (health, version, models, metrics, "
                "load, unload, completions, chat, embeddings) or a route path",
            ),
            Setting(
                "--failure-rate",
                FAILURE_RATE,
                action="append",
                default=(),
                help="probability (0..1) that a request to the endpoint fails",
            ),
            Setting(
                "--failure-mode",
                choice("500", "drop", "drop_after"),
                default="500",
                help="500: InternalServerError JSON; drop: close the connection; drop_after: act, then close",
            ),
            Setting("--load-delay", SECONDS_OR_ZERO, default=0.0, help="seconds per load"),
            Setting("--unload-delay", SECONDS_OR_ZERO, default=0.0, help="seconds per unload"),
            Setting("--token-delay", SECONDS_OR_ZERO, default=0.0, help="seconds per SSE chunk"),
            Setting(
                "--model-fault",
                MODEL_FAULT,
                action="append",
                default=(),
                help="a fault of one model (repeatable): FIELD is error_rate, latency, empty (length|stop), "
                "empty_rate, break_after or sse_error_after, e.g. v2:error_rate=0.5",
            ),
            Setting("--seed", WHOLE, help="seed for the failure-rate dice"),
        ),
    ),
    ("process", (Setting("--access-log", action="flag", default=False, help="log every request"), *LOGGING)),
)

# --- split-test ------------------------------------------------------------------------

SPLIT_TEST: tuple[Section, ...] = (
    (
        "traffic",
        (
            Setting("--url", URL, help="base URL of the proxy (or any OpenAI-compatible server); required"),
            Setting("--model", help="client-facing model name to request; required"),
            Setting("--requests", whole_in(1, None), short="-n", default=20, help="number of requests"),
            Setting(
                "--concurrency",
                whole_in(1, None),
                short="-c",
                default=1,
                help="requests in flight at once (1 like the guide's script)",
            ),
            Setting(
                "--path", ROUTE_PATH, default="/v1/chat/completions", help="endpoint (chat or completions)"
            ),
            Setting("--prompt", default="test", help="message content to send"),
            Setting(
                "--max-tokens",
                whole_in(1, None),
                default=1,
                help="max_completion_tokens (max_tokens for /v1/completions)",
            ),
            Setting(
                "--header",
                HEADER,
                action="append",
                short="-H",
                default=(),
                env=None,  # header values may hold commas, which a list variable splits at
                help="extra request header, e.g. 'Authorization: Bearer ...' or 'x-user-id: 42' (repeatable)",
            ),
            Setting("--timeout", NUMBER_SECONDS, default=60.0, help="seconds per request"),
            Setting(
                "--by",
                choice("model", "pool"),
                default="model",
                help="count the served model (x-lora-syncer-served-model, else the body's model) "
                "or the pool (x-lora-syncer-pool)",
            ),
            Setting(
                "--json", action="flag", default=False, help="print the result as JSON instead of a table"
            ),
        ),
    ),
)

# --- demo ------------------------------------------------------------------------------

DEMO: tuple[Section, ...] = (
    (
        "demo",
        (
            Setting(
                "--real-vllm",
                action="switch",
                default=False,
                help="walk against a real CPU vLLM (needs the environment from bash scripts/setup-vllm-env.sh) "
                "instead of the emulator",
            ),
            Setting(
                "--step",
                action="switch",
                default=False,
                help="pause before each step until Enter is pressed (no pause without a terminal on stdin)",
            ),
            Setting(
                "--rollout",
                action="switch",
                default=False,
                help="show automated AdapterRollouts instead of the manual guide: one completes, "
                "one with a bad canary aborts by itself (emulator only, about 10 s)",
            ),
            Setting(
                "--color",
                choice("auto", "always", "never"),
                default="auto",
                help="colour output: auto = on a terminal unless NO_COLOR is set",
            ),
            Setting(
                "--converge-timeout",
                NUMBER_SECONDS,
                default_text="10, or 180 with --real-vllm",
                help="seconds each step may take to be acted on",
            ),
            Setting(
                "--verbose",
                action="switch",
                default=False,
                help="also print the sidecar's own log lines (to stderr)",
            ),
            # Tests only: make the model server fail every call during the named step.
            Setting("--inject-fault", env=None, hidden=True, metavar="STEP"),
        ),
    ),
)

# --- rollout ---------------------------------------------------------------------------

ROLLOUT: tuple[Section, ...] = (
    (
        "rollout",
        (
            Setting(
                "words",
                action="positional",
                env=None,
                metavar="status URL",
                help="`status` then the health/metrics URL of one or more pods (http://POD:8080; /status is added)",
            ),
            Setting("--timeout", NUMBER_SECONDS, default=5.0, help="seconds to wait for each pod"),
            Setting(
                "--json", action="flag", default=False, help="print the pods' rollouts as one JSON document"
            ),
        ),
    ),
)

# --- digest ----------------------------------------------------------------------------

DIGEST: tuple[Section, ...] = (
    (
        "source",
        (
            Setting(
                "source",
                action="positional",
                env=None,
                metavar="SOURCE",
                help="a local adapter directory or .tar.gz/.tgz/.zip archive, an s3:// prefix or an "
                "http(s):// archive",
            ),
            ALLOWED_SOURCES.but(
                help="refuse URLs (and redirect hops) no rule admits, as `run` does; repeat or comma-separate",
            ),
        ),
    ),
)

COMMAND_SECTIONS: dict[str, tuple[Section, ...]] = {
    "run": RUN,
    "proxy": PROXY_COMMAND,
    "check": CHECK,
    "plan": PLAN,
    "emulator": EMULATOR,
    "split-test": SPLIT_TEST,
    "demo": DEMO,
    "rollout": ROLLOUT,
    "digest": DIGEST,
}


def command_settings(command: str) -> tuple[Setting, ...]:
    """Every setting of one command, in order."""
    return tuple(s for _, settings in COMMAND_SECTIONS[command] for s in settings)
