"""Value types of settings: text in, typed value out, or a ValueError with a one-line reason (pure).

Each type also lists a few values it refuses (`bad`), so the tests can try every setting
with them without anyone writing a table by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ValueType:
    """How one value is read: `convert(text)` returns it typed or raises ValueError."""

    convert: Callable[[str], Any]
    metavar: str
    bad: tuple[str, ...] = ()
    choices: tuple[str, ...] = field(default=())

    def __call__(self, text: str) -> Any:
        return self.convert(text)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _whole(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be positive")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value


def whole_in(low: int, high: int | None, metavar: str = "N") -> ValueType:
    """A whole number in low..high (no upper bound when `high` is None)."""

    def convert(text: str) -> int:
        value = _whole(text)
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f"at least {low}"
            raise ValueError(f"{text!r} must be {bounds}")
        return value

    bad = ("x", str(low - 1)) + ((str(high + 1),) if high is not None else ())
    return ValueType(convert, metavar, bad)


def choice(*options: str) -> ValueType:
    def convert(text: str) -> str:
        value = text.strip()
        if value not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return value

    return ValueType(convert, "{" + ",".join(options) + "}", ("bogus",), options)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean: use true or false")


def http_url(text: str) -> str:
    """An http(s) base URL; `host:port` alone means http://host:port. No credentials, a valid port."""
    value = text.strip()
    if "://" not in value and re.fullmatch(r"[\w.\-\[\]:]+:\d+", value):
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL like http://localhost:8000")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r}: a URL must not carry user@ credentials")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"{text!r} has a port outside 0..65535") from None
    return value.rstrip("/")


_SIZE_UNITS = (
    ("kib", 1024),
    ("mib", 1024**2),
    ("gib", 1024**3),
    ("kb", 1000),
    ("mb", 1000**2),
    ("gb", 1000**3),
    ("k", 1024),
    ("m", 1024**2),
    ("g", 1024**3),
    ("b", 1),
)


def _size(text: str) -> int:
    """`32MiB`, `10MB`, `512k`, `1048576` -> bytes."""
    raw = text.strip().lower().replace(" ", "")
    suffix, factor = next(((s, f) for s, f in _SIZE_UNITS if raw.endswith(s)), ("", 1))
    try:
        number = float(raw[: len(raw) - len(suffix)])
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 32MiB or 1048576)") from None
    if not math.isfinite(number) or int(number * factor) < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return int(number * factor)


# RFC 9110 token characters: what a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(text: str) -> str:
    value = text.strip()
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{text!r} is not an HTTP header name")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not _TOKEN.fullmatch(name.strip()):
        raise ValueError(f"{text!r} must look like 'Name: value'")
    return name.strip(), value.strip()


def _route_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must start with /")
    return text


def _source_pattern(text: str) -> str:
    value = text.strip()
    if value.startswith("re:"):
        try:
            re.compile(value[3:])
        except re.error as exc:
            raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None
    elif value.lower().startswith(("s3://", "http://", "https://")):
        # A malformed remote rule is an error at start, not a silent refusal of every source.
        from lora_syncer.sources.errors import InvalidSource
        from lora_syncer.sources.uri import validate_rule

        try:
            validate_rule(value)
        except InvalidSource as exc:
            raise ValueError(f"{text!r} is not a valid source rule: {exc}") from None
    return value


def _pool(text: str) -> Any:
    """`NAME=URL[@WEIGHT]` -> PoolSpec. An `@` always starts the weight (URLs carry no credentials)."""
    from lora_syncer.proxy.pools import MAX_POOL_WEIGHT, PoolSpec

    name, sep, rest = text.strip().partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"{text!r} must look like NAME=URL or NAME=URL@WEIGHT")
    url, at, weight_text = rest.strip().partition("@")
    weight = 1
    try:
        if at:
            weight = _whole(weight_text)
            if not 0 <= weight <= MAX_POOL_WEIGHT:
                raise ValueError(f"weight must be 0..{MAX_POOL_WEIGHT}")
        return PoolSpec(name=name.strip(), url=http_url(url), weight=weight)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def _pair(upper: float | None, what: str) -> Callable[[str], str]:
    """`ENDPOINT=NUMBER` for the emulator's fault flags; kept as text, the emulator reads it."""

    def convert(text: str) -> str:
        from lora_syncer.emulator.faults import endpoint_key

        key, sep, number = text.rpartition("=")
        if not sep:
            raise ValueError(f"{text!r} must look like ENDPOINT={what}")
        try:
            endpoint_key(key)
            value = _non_negative(number)
            if upper is not None and value > upper:
                raise ValueError(f"{number!r} must be 0..{upper:g}")
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return text

    return convert


def _model_fault(text: str) -> str:
    """`MODEL:FIELD=VALUE` for the emulator's per-model faults; kept as text, the emulator reads it."""
    from lora_syncer.emulator.model_faults import parse_model_fault_flags

    try:
        parse_model_fault_flags([text])
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("--model-fault: ").removeprefix("--model-fault ")) from None
    return text


def _name_path(text: str) -> str:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"{text!r} must look like NAME=PATH")
    return text


def _count_or_percent(text: str) -> str:
    """`3` (adapters) or `50%` (of those loaded), normalised; see `sync.plan.prune_limit`."""
    body = text.strip()
    if body.endswith("%"):
        value = _non_negative(body[:-1])
        if value > 100:
            raise ValueError(f"{text!r} must be 0%..100%")
        return f"{value:g}%"
    try:
        count = int(body)
    except ValueError:
        raise ValueError(f"{text!r} is not a count like 3 or a percentage like 50%") from None
    if count < 0:
        raise ValueError(f"{text!r} must not be negative")
    return str(count)


TEXT = ValueType(str, "TEXT")
PATH = ValueType(Path, "PATH")
NUMBER_SECONDS = ValueType(_positive, "SECONDS", ("abc", "0", "-1", "nan"))
SECONDS_OR_ZERO = ValueType(_non_negative, "SECONDS", ("abc", "-1", "inf"))
PORT = whole_in(0, 65535, "PORT")
WHOLE = ValueType(_whole, "N", ("x", "1.5"))
BOOL = ValueType(_bool, "true|false", ("maybe",))
URL = ValueType(http_url, "URL", ("not-a-url", "ftp://host:1", "http://host:99999", "http://u:p@host:1"))
SIZE = ValueType(_size, "SIZE", ("lots", "0"))
HEADER_NAME = ValueType(_header_name, "NAME", ("x user", "a:b"))
HEADER = ValueType(_header, "'NAME: VALUE'", ("no-colon", "bad name: 1"))
ROUTE_PATH = ValueType(_route_path, "PATH", ("v1/models",))
SOURCE_PATTERN = ValueType(_source_pattern, "PREFIX|re:REGEX", ("re:(", "s3://Bad_Bucket"))
POOL = ValueType(
    _pool,
    "NAME=URL[@WEIGHT]",
    ("a=http://127.0.0.1:9@abc", "no-equals", "a=ftp://host:1", "a=http://host:1@-1", "a=not-a-url"),
)
LATENCY = ValueType(_pair(None, "SECONDS"), "ENDPOINT=SECONDS", ("chat", "chat=abc", "chat=-1", "nowhere=1"))
FAILURE_RATE = ValueType(_pair(1.0, "RATE"), "ENDPOINT=RATE", ("chat", "chat=abc", "chat=2"))
COUNT_OR_PERCENT = ValueType(_count_or_percent, "N|P%", ("lots", "-1", "150%", "1.5"))
MODEL_FAULT = ValueType(
    _model_fault,
    "MODEL:FIELD=VALUE",
    ("v2", "v2:error_rate=2", "v2:bogus=1", "v2:empty=maybe", "v2:break_after=-1"),
)
NAME_PATH = ValueType(_name_path, "NAME=PATH", ("no-path", "=x"))

# Types under which any text is a fine value: a setting of these has no bad value to try.
FREE_TEXT = (TEXT, PATH)
