"""Faults scoped to one model (an adapter or a base model name), so one adapter version can be made bad.

Per model name:

- `error_rate` (0..1): that fraction of its inference requests is answered 500
  InternalServerError, vLLM's JSON error body, before any token.
- `latency` (seconds): added before the first byte of every answer and between streamed chunks.
- `empty` (`"length"` or `"stop"`) with `empty_rate` (0..1, default 1): that fraction of its
  answers has empty content, that `finish_reason` and 0 completion tokens.
- `break_after` (N chunks): streamed answers are cut after N chunks (the connection closes, no
  `[DONE]`); non-streamed answers send their headers and half the body, then close.
- `sse_error_after` (N chunks): streamed answers send an error event
  `data: {"error": {...}}` after N chunks, then `data: [DONE]` (as vLLM does when generation
  fails mid-stream), all inside a 200 answer; non-streamed answers are not affected.

Rates are exact and deterministic, not dice: the k-th request (1-based) fires when
floor(k * rate) grows, so any n consecutive requests see rate * n of them (±1), e.g. 0.5 fails
the 2nd, 4th, 6th... Each fault counts its own requests from when the model's faults were set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EmptyReason = Literal["length", "stop"]
EMPTY_REASONS: tuple[EmptyReason, ...] = ("length", "stop")
FIELDS = ("error_rate", "latency", "empty", "empty_rate", "break_after", "sse_error_after")
_PPM = 1_000_000  # rates are kept as whole parts per million so the counting is exact


class ExactRate:
    """Fires for an exact fraction of calls, evenly spread (a Bresenham-style counter)."""

    __slots__ = ("_ppm", "_seen")

    def __init__(self, rate: float) -> None:
        self._ppm = round(rate * _PPM)
        self._seen = 0

    def fire(self) -> bool:
        if self._ppm <= 0:
            return False
        before = self._seen * self._ppm // _PPM
        self._seen += 1
        return self._seen * self._ppm // _PPM > before


@dataclass
class ModelFault:
    """The faults of one model name (see the module docstring)."""

    error_rate: float = 0.0
    latency: float = 0.0
    empty: EmptyReason | None = None
    empty_rate: float = 1.0
    break_after: int | None = None
    sse_error_after: int | None = None
    _errors: ExactRate = field(init=False, repr=False, compare=False)
    _empties: ExactRate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._errors = ExactRate(self.error_rate)
        self._empties = ExactRate(self.empty_rate if self.empty is not None else 0.0)

    def should_fail(self) -> bool:
        """Whether this request answers 500 (counts it)."""
        return self._errors.fire()

    def empty_reason(self) -> EmptyReason | None:
        """The finish_reason of an empty answer for this request, None for a normal one (counts it)."""
        return self.empty if self.empty is not None and self._empties.fire() else None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def fresh(self) -> ModelFault:
        """The same settings with the counters from zero."""
        return ModelFault(**self.to_dict())

    @classmethod
    def from_dict(cls, model: str, raw: object) -> ModelFault:
        """Validate a control-API object; `ValueError` naming `models[MODEL].FIELD` on any problem."""
        where = f"models[{model!r}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be an object of fault -> value (or null to clear it)")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            values[str(name)] = _check(f"{where}.{name}", str(name), value)
        return cls(**values)


def _number(where: str, value: object, upper: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{where} must be a number")
    if value < 0 or (upper is not None and value > upper) or value == float("inf"):
        raise ValueError(f"{where} must be between 0 and {upper:g}" if upper else f"{where} must be >= 0")
    return float(value)


def _check(where: str, name: str, value: object) -> Any:
    if name in ("error_rate", "empty_rate"):
        return _number(where, value, 1.0)
    if name == "latency":
        return _number(where, value, None)
    if name == "empty":
        if value is not None and value not in EMPTY_REASONS:
            raise ValueError(f"{where} must be null, 'length' or 'stop'")
        return value
    if name in ("break_after", "sse_error_after"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where} must be a whole number of chunks >= 0 (or null)")
        return value
    raise ValueError(
        f"unknown model fault {name!r} in {where.rpartition('.')[0]}; use one of {', '.join(FIELDS)}"
    )


def check_models(raw: object) -> dict[str, ModelFault | None]:
    """The control API's `models` object: name -> faults, or null to clear that name's faults."""
    if not isinstance(raw, Mapping):
        raise ValueError("models must be an object of model name -> faults")
    out: dict[str, ModelFault | None] = {}
    for model, value in raw.items():
        name = str(model)
        if not name:
            raise ValueError("models: a model name must not be empty")
        out[name] = None if value is None else ModelFault.from_dict(name, value)
    return out


def _flag_value(field_name: str, text: str) -> object:
    if field_name == "empty":
        return None if text in ("", "none", "null") else text
    if field_name in ("break_after", "sse_error_after"):
        try:
            return int(text)
        except ValueError:
            return text  # refused by _check with the field's message
    try:
        return float(text)
    except ValueError:
        return text


def split_flag(item: str) -> tuple[str, str, str]:
    """`MODEL:FIELD=VALUE` -> (model, field, value); `ValueError` when it does not look like that."""
    key, eq, value = item.rpartition("=")
    model, colon, name = key.rpartition(":")
    if not eq or not colon or not model.strip() or not name.strip():
        raise ValueError(f"--model-fault {item!r} must look like MODEL:FIELD=VALUE (e.g. v2:error_rate=0.5)")
    return model.strip(), name.strip(), value.strip()


def parse_model_fault_flags(items: Iterable[str]) -> dict[str, ModelFault]:
    """`["v2:error_rate=0.5", "v2:empty=length"]` -> `{"v2": ModelFault(error_rate=0.5, empty="length")}`."""
    fields: dict[str, dict[str, object]] = {}
    for item in items:
        model, name, value = split_flag(item)
        fields.setdefault(model, {})[name] = _flag_value(name, value)
    try:
        return {model: ModelFault.from_dict(model, values) for model, values in fields.items()}
    except ValueError as exc:
        raise ValueError(f"--model-fault: {exc}") from None
