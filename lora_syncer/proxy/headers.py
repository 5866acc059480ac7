"""Which headers a proxy passes on (RFC 9110 7.6.1: connection-specific fields stay on their hop).

Headers go through the proxy as the bytes llhttp (or aiohttp's parser) handed over: name and
value are never decoded and encoded again on the way (pure).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

RawHeaders = list[tuple[bytes, bytes]]

# Connection-specific fields, plus the ones the proxy's server and clients compute themselves.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)


# Field name as sent -> lower case: clients and servers send the same few names on every message,
# so each is lowered once (and its lower-case form's hash is computed once). Bounded.
_LOWER: Final[dict[bytes, bytes]] = {}
_LOWER_MAX: Final = 4096


def lower_name(name: bytes) -> bytes:
    """`name` in lower case (the form HTTP field names compare in)."""
    low = _LOWER.get(name)
    if low is None:
        low = name.lower()
        if len(_LOWER) >= _LOWER_MAX:
            _LOWER.clear()
        _LOWER[name] = low
    return low


# What the proxy itself reads of a message's fields, found in one pass (see `read_fields`):
# Content-Length (as sent), Content-Type, whether Transfer-Encoding is there, Expect, X-Forwarded-For.
Fields = tuple[bytes | None, str, bool, str | None, bytes | None]


def read_fields(raw: Iterable[tuple[bytes, bytes]]) -> Fields:
    """The fields the proxy reads, the first of each (as a multidict's `get`); text ones decoded."""
    length: bytes | None = None
    ctype: str | None = None
    chunked = False
    expect: str | None = None
    forwarded: bytes | None = None
    for name, value in raw:
        low = lower_name(name)
        if low == b"content-length":
            if length is None:
                length = value
        elif low == b"content-type":
            if ctype is None:
                ctype = value.decode("utf-8", "surrogateescape")
        elif low == b"transfer-encoding":
            chunked = True
        elif low == b"expect":
            if expect is None:
                expect = value.decode("utf-8", "surrogateescape")
        elif low == b"x-forwarded-for" and forwarded is None:
            forwarded = value
    return length, ctype or "", chunked, expect, forwarded


def end_to_end(raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = HOP_BY_HOP) -> RawHeaders:
    """`raw` without the fields in `drop` (lower-case names) and those a `Connection` header names, in order.

    `drop` must hold `connection` (HOP_BY_HOP does): the field that names others is never passed on.
    """
    kept: list[tuple[bytes, bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        low = lower_name(name)
        if low in drop:
            if low == b"connection":
                tokens = {tok.strip().lower() for tok in value.split(b",")}
                named = tokens if named is None else named | tokens
            continue
        kept.append((low, name, value))
    if named is None:
        return [(name, value) for _, name, value in kept]
    return [(name, value) for low, name, value in kept if low not in named]


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """`Name: value` lines, each ended by CRLF, as written in an HTTP/1.1 head."""
    parts: list[bytes] = []
    for name, value in headers:  # appends, not concatenations: one bytes object made in all
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    return b"".join(parts)


def decoded(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header bytes as text (UTF-8, undecodable bytes kept as surrogates: they encode back unchanged)."""
    return [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw]
