"""Which header fields the proxy passes on, as the bytes it received (lora_syncer.proxy.headers)."""

from __future__ import annotations

from lora_syncer.proxy.headers import (
    HOP_BY_HOP,
    decoded,
    end_to_end,
    header_lines,
    lower_name,
    read_fields,
)


def test_hop_by_hop_fields_and_those_connection_names_are_dropped_in_order() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"x-private", b"also"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Request-Id", b"abc"),
    ]
    assert end_to_end(raw) == [(b"Content-Type", b"application/json"), (b"X-Request-Id", b"abc")]


def test_several_connection_fields_all_count() -> None:
    raw = [
        (b"connection", b"X-A"),
        (b"X-A", b"1"),
        (b"CONNECTION", b" x-b ,"),
        (b"X-B", b"2"),
        (b"X-C", b"3"),
    ]
    assert end_to_end(raw) == [(b"X-C", b"3")]


def test_a_caller_may_drop_more_and_names_keep_their_case_and_bytes() -> None:
    drop = HOP_BY_HOP | {b"x-forwarded-for"}
    raw = [(b"X-Forwarded-For", b"10.0.0.1"), (b"X-Odd", b"caf\xc3\xa9 \xff"), (b"HOST", b"h")]
    assert end_to_end(raw, drop) == [(b"X-Odd", b"caf\xc3\xa9 \xff")]


def test_header_lines_are_written_as_sent() -> None:
    assert header_lines([(b"A", b"1"), (b"b-B", b"x y")]) == b"A: 1\r\nb-B: x y\r\n"
    assert header_lines([]) == b""


def test_decoded_text_encodes_back_to_the_same_bytes() -> None:
    raw = [(b"X-Odd", b"caf\xc3\xa9 \xff")]
    ((name, value),) = decoded(raw)
    assert (name, value) == ("X-Odd", "café \udcff")
    assert value.encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff"


def test_read_fields_takes_the_first_of_each_in_any_case() -> None:
    raw = [
        (b"content-LENGTH", b"12"),
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"Content-Type", b"text/plain"),
        (b"Expect", b"100-continue"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-For", b"10.0.0.2"),
    ]
    assert read_fields(raw) == (b"12", "application/json; charset=utf-8", False, "100-continue", b"10.0.0.1")


def test_read_fields_of_a_message_without_them() -> None:
    assert read_fields([(b"Transfer-Encoding", b"chunked")]) == (None, "", True, None, None)
    assert read_fields([]) == (None, "", False, None, None)


def test_lower_name_is_the_lower_case_name_however_often_asked() -> None:
    for _ in range(3):
        assert lower_name(b"X-Lora-Syncer-Pool") == b"x-lora-syncer-pool"
    assert lower_name(b"already-lower") == b"already-lower"
