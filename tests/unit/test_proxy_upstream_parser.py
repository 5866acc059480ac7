"""The lean upstream client's answer parser: however the bytes are split, the body is decoded the same (hypothesis)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.proxy import upstream


class _Transport:
    """Just enough of a transport for the parser (flow control and close are recorded)."""

    def __init__(self) -> None:
        self.closed = False
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _feed(wire: bytes, cuts: list[int]) -> tuple[Any, bytes]:
    loop = asyncio.new_event_loop()
    try:
        conn = upstream._Connection(loop)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        conn.start(no_body=False)
        last = 0
        for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
            if cut > last:
                conn.data_received(wire[last:cut])
                last = cut
        body = b"".join(conn._pieces)
        return conn, body
    finally:
        loop.close()


def _chunked(parts: list[bytes], trailers: bool) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for part in parts:
        out += b"%x;e=1\r\n" % len(part) + part + b"\r\n"
    out += b"0\r\n" + (b"X-T: 1\r\n" if trailers else b"") + b"\r\n"
    return out


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    trailers=st.booleans(),
)
def test_chunked_body_survives_any_split(parts: list[bytes], cuts: list[int], trailers: bool) -> None:
    """A chunked answer cut at any points decodes to the concatenated chunks, ends complete and stays reusable."""
    conn, body = _feed(_chunked(parts, trailers), cuts)
    assert body == b"".join(parts)
    assert conn.state == upstream._DONE
    assert conn.reusable


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
)
def test_length_body_survives_any_split(payload: bytes, cuts: list[int]) -> None:
    """A Content-Length answer cut at any points decodes to exactly its payload and ends complete."""
    wire = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(payload) + payload
    conn, body = _feed(wire, cuts)
    assert body == payload
    assert conn.state == upstream._DONE
    assert conn._head is not None and conn._head[:2] == (201, "Created")


def test_extra_bytes_after_answer_spoil_reuse() -> None:
    """Bytes after a complete answer mean the framing is off: the connection is not reused."""
    conn, body = _feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", [])
    assert body == b"ok"
    assert not conn.reusable


@settings(max_examples=100, deadline=None)
@given(
    first=st.binary(max_size=50),
    second=st.lists(st.binary(min_size=1, max_size=20), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_keep_alive_answers_in_sequence_share_one_parser(
    first: bytes, second: list[bytes], cuts: list[int]
) -> None:
    """A length answer then a chunked one on the same connection (one llhttp parser) both decode whole."""
    loop = asyncio.new_event_loop()
    try:
        conn = upstream._Connection(loop)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        bodies = []
        for wire in (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(first) + first,
            _chunked(second, trailers=False),
        ):
            conn.start(no_body=False)
            last = 0
            for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
                if cut > last:
                    conn.data_received(wire[last:cut])
                    last = cut
            assert conn.state == upstream._DONE and conn.reusable
            bodies.append(b"".join(conn._pieces))
            conn._pieces.clear()
            conn.state = upstream._IDLE
        assert bodies == [first, b"".join(second)]
    finally:
        loop.close()


def test_interim_answer_is_skipped() -> None:
    """A 103 Early Hints before the answer is not taken for the answer."""
    conn, body = _feed(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", []
    )
    assert conn._head is not None and conn._head[0] == 200
    assert body == b"ok"
