"""Fault injection settings: added latency, failure rates, slow loads, outages of the API surface.

Endpoints are named by short keys (`ENDPOINTS`); the route paths are accepted as aliases and `*`
means every vLLM endpoint (never the control API). All of this is plain data: the server reads it
on every request, so changing a field takes effect on the next request.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

from lora_syncer.emulator.model_faults import ModelFault, check_models

FailureMode = Literal["500", "drop", "drop_after"]
FAILURE_MODES: tuple[FailureMode, ...] = ("500", "drop", "drop_after")

# key -> the routes it covers
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "health": ("/health",),
    "version": ("/version",),
    "models": ("/v1/models",),
    "metrics": ("/metrics",),
    "load": ("/v1/load_lora_adapter", "/adapters"),
    "unload": ("/v1/unload_lora_adapter", "/adapters/{name}"),
    "completions": ("/v1/completions",),
    "chat": ("/v1/chat/completions",),
    "embeddings": ("/v1/embeddings",),
}
ALL = "*"
_ALIASES: dict[str, str] = {path: key for key, paths in ENDPOINTS.items() for path in paths}


def endpoint_key(name: str) -> str:
    """Normalise an endpoint name or route path to its key; raises `ValueError` if unknown."""
    name = name.strip()
    if name == ALL or name in ENDPOINTS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = ", ".join([ALL, *ENDPOINTS])
    raise ValueError(f"unknown endpoint {name!r}; use one of {known} or a route path")


def parse_pairs(items: Iterable[str], what: str) -> dict[str, float]:
    """`["chat=0.5", "/v1/models=1"]` -> `{"chat": 0.5, "models": 1.0}` for `--latency`/`--failure-rate`."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep:
            raise ValueError(f"{what} entry {item!r} must look like ENDPOINT=NUMBER")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{what} entry {item!r}: {value!r} is not a number") from None
        out[endpoint_key(key)] = number
    return out


def _check_number_map(name: str, raw: object, upper: float | None) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name} must be an object of endpoint -> number")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}[{key!r}] must be a number")
        if value < 0 or (upper is not None and value > upper):
            raise ValueError(f"{name}[{key!r}] must be between 0 and {upper if upper is not None else 'inf'}")
        out[endpoint_key(str(key))] = float(value)
    return out


@dataclass
class Faults:
    """The faults in force. Mutable: tests may assign fields directly on `Emulator.faults`.

    - `latency`: seconds added before answering, per endpoint key (or `*`).
    - `failure_rate`: probability in [0, 1] that a request to the endpoint fails.
    - `fail_next`: fail exactly the next N requests to the endpoint (deterministic; counts down).
    - `failure_mode`: "500" answers InternalServerError JSON; "drop" closes the connection without
      an answer and without acting; "drop_after" performs the action (e.g. the load) and then
      closes the connection, like a response lost on the way back.
    - `load_delay` / `unload_delay`: seconds each adapter load/unload takes (held under the
      adapter's lock, as vLLM holds it while the engine loads).
    - `token_delay`: seconds between streamed chunks.
    - `runtime_lora_updating`: False makes the admin routes answer 404 {"detail":"Not Found"}.
    - `engine_dead`: `/health` answers 503 and inference answers 500.
    - `models`: faults scoped to one model name (`model_faults.ModelFault`): error rate,
      latency, empty answers, broken streams, SSE error events.
    """

    latency: dict[str, float] = field(default_factory=dict)
    failure_rate: dict[str, float] = field(default_factory=dict)
    fail_next: dict[str, int] = field(default_factory=dict)
    failure_mode: FailureMode = "500"
    load_delay: float = 0.0
    unload_delay: float = 0.0
    token_delay: float = 0.0
    runtime_lora_updating: bool = True
    engine_dead: bool = False
    models: dict[str, ModelFault] = field(default_factory=dict)

    def model_fault(self, *names: str) -> ModelFault | None:
        """The faults of the first of `names` (requested, then served name) that has some."""
        models = self.models
        if not models:
            return None
        for name in names:
            fault = models.get(name)
            if fault is not None:
                return fault
        return None

    def latency_for(self, endpoint: str) -> float:
        """Seconds to wait before handling a request to `endpoint`."""
        if not self.latency:
            return 0.0
        return self.latency.get(endpoint, self.latency.get(ALL, 0.0))

    def should_fail(self, endpoint: str, rng: random.Random) -> bool:
        """Whether this request to `endpoint` fails; consumes one `fail_next` count when it does."""
        if self.fail_next:
            for key in (endpoint, ALL):
                left = self.fail_next.get(key, 0)
                if left > 0:
                    self.fail_next[key] = left - 1
                    return True
        if not self.failure_rate:
            return False
        rate = self.failure_rate.get(endpoint, self.failure_rate.get(ALL, 0.0))
        return rate > 0.0 and rng.random() < rate

    def copy(self) -> Faults:
        """An independent copy (the dicts are copied too)."""
        return replace(
            self,
            latency=dict(self.latency),
            failure_rate=dict(self.failure_rate),
            fail_next=dict(self.fail_next),
            models={name: fault.fresh() for name, fault in self.models.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, as the control API shows it."""
        out = asdict(replace(self, models={}))
        out["models"] = {name: fault.to_dict() for name, fault in self.models.items()}
        return out

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update (control API / tests); validates everything before changing anything."""
        staged = self.copy()
        # Models not named in the change keep their fault objects (and so their counters).
        models = dict(self.models)
        for name, value in changes.items():
            if name == "models":
                for model, fault in check_models(value).items():
                    if fault is None:
                        models.pop(model, None)
                    else:
                        models[model] = fault
            elif name == "latency":
                staged.latency = _check_number_map(name, value, None)
            elif name == "failure_rate":
                staged.failure_rate = _check_number_map(name, value, 1.0)
            elif name == "fail_next":
                counts = _check_number_map(name, value, None)
                staged.fail_next = {k: int(v) for k, v in counts.items()}
            elif name == "failure_mode":
                if value not in FAILURE_MODES:
                    raise ValueError(f"failure_mode must be one of {', '.join(FAILURE_MODES)}")
                staged.failure_mode = cast(FailureMode, value)
            elif name in ("load_delay", "unload_delay", "token_delay"):
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a number of seconds >= 0")
                setattr(staged, name, float(value))
            elif name in ("runtime_lora_updating", "engine_dead"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                setattr(staged, name, value)
            else:
                raise ValueError(f"unknown fault {name!r}")
        for f in (
            "latency",
            "failure_rate",
            "fail_next",
            "failure_mode",
            "load_delay",
            "unload_delay",
            "token_delay",
            "runtime_lora_updating",
            "engine_dead",
        ):
            setattr(self, f, getattr(staged, f))
        self.models = models
