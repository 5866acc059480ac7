"""Connection errors in words, on both sides (syncer client, proxy transport): never a class name."""

from __future__ import annotations

import socket
import ssl

import aiohttp
import pytest
from yarl import URL

from lora_syncer.proxy.transport import classify, in_words
from lora_syncer.proxy.upstream import ConnectFailed
from lora_syncer.sync.vllm_client import connection_error_in_words

_KEY = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)

CASES = [
    (
        aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connection refused")),
        "connection refused",
    ),
    (
        aiohttp.ClientConnectorDNSError(_KEY, socket.gaierror(-2, "Name or service not known")),
        "host name not found",
    ),
    (aiohttp.ClientConnectorSSLError(_KEY, ssl.SSLError(1, "wrong version number")), "TLS handshake failed"),
    (aiohttp.NonHttpUrlClientError(URL("ftp://h")), "not a valid http(s) URL"),
    (aiohttp.ServerDisconnectedError(), "closed the connection"),
    (TimeoutError(), "timed out"),
]


@pytest.mark.parametrize(("exc", "words"), CASES)
def test_syncer_side(exc: BaseException, words: str) -> None:
    text = connection_error_in_words(exc)
    assert words in text
    assert type(exc).__name__ not in text


@pytest.mark.parametrize(("exc", "words"), CASES)
def test_proxy_side(exc: BaseException, words: str) -> None:
    text = in_words(exc)
    assert words in text
    assert type(exc).__name__ not in text
    assert type(exc).__name__ not in classify(exc).detail


def test_lean_client_refusal() -> None:
    assert classify(ConnectFailed(ConnectionRefusedError(111, "refused"))).detail == "connection refused"
