"""Which headers a proxy passes on (RFC 9110 7.6.1: connection-specific fields stay on their hop)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from multidict import CIMultiDict

# Connection-specific fields, plus the ones aiohttp and the lean client compute themselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _dropped(headers: Any, base: frozenset[str]) -> frozenset[str]:
    """`base`, plus the names the `Connection` header lists."""
    if "Connection" not in headers:
        return base
    tokens = {tok.strip().lower() for v in headers.getall("Connection") for tok in v.split(",")}
    tokens.discard("")
    return base | tokens


def end_to_end_pairs(
    headers: Any, drop: frozenset[str] = HOP_BY_HOP, pairs: Iterable[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """`headers` without hop-by-hop fields and without those the `Connection` header names, in order.

    `drop` (lower-case names) replaces HOP_BY_HOP when the caller sets more fields itself; `pairs`,
    when given, are the same headers as a list (cheaper to walk than the multidict).
    """
    drop = _dropped(headers, drop)
    return [
        (name, value)
        for name, value in (headers.items() if pairs is None else pairs)
        if name.lower() not in drop
    ]


def end_to_end(headers: Any) -> CIMultiDict[str]:
    """`end_to_end_pairs` as a multidict (to be edited further)."""
    return CIMultiDict(end_to_end_pairs(headers))
