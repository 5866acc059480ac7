"""Which headers a proxy passes on (RFC 9110 7.6.1: connection-specific fields stay on their hop)."""

from __future__ import annotations

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


def _connection_tokens(headers: Any) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(tok.strip().lower() for v in values for tok in v.split(",") if tok.strip())


def end_to_end(headers: Any) -> CIMultiDict[str]:
    """`headers` without hop-by-hop fields and without those the `Connection` header names."""
    drop = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in drop:
            continue
        out.add(name, value)
    return out
