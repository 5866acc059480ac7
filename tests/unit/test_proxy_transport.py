"""The one error mapping of the proxy's transport, and the answer facts read for observers (pure)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from lora_syncer.proxy.answer import AnswerFacts
from lora_syncer.proxy.transport import classify
from lora_syncer.proxy.upstream import BadResponse, ConnectFailed, ConnectTimedOut, Disconnected

_KEY = ConnectionKey("h", 80, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (ConnectFailed(ConnectionRefusedError(111, "refused")), "connect", True),
        (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "refused")), "connect", True),
        (ConnectTimedOut("slow"), "connect_timeout", True),
        (aiohttp.ConnectionTimeoutError("slow"), "connect_timeout", True),
        (TimeoutError(), "timeout", False),
        (aiohttp.SocketTimeoutError(), "timeout", False),
        (Disconnected("gone"), "disconnect", True),
        (BadResponse("junk"), "disconnect", True),
        (aiohttp.ServerDisconnectedError(), "disconnect", True),
        (ConnectionResetError(), "disconnect", True),
    ],
)
def test_both_clients_map_to_the_same_failures(exc: BaseException, kind: str, retryable: bool) -> None:
    """The lean client's and aiohttp's exceptions land in the same kinds."""
    failure = classify(exc)
    assert failure.kind == kind
    assert failure.retryable is retryable
    assert failure.detail and "\n" not in failure.detail


def test_connect_failure_names_the_os_error() -> None:
    assert "refused" in classify(ConnectFailed(ConnectionRefusedError(111, "refused"))).detail


def test_json_answer_facts() -> None:
    facts = AnswerFacts()
    facts.read_json(
        b'{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":5}}'
    )
    assert (facts.finish_reason, facts.completion_tokens, facts.error) == ("stop", 5, False)


def test_sse_facts_byte_by_byte() -> None:
    """Events split at every byte still give finish_reason, usage and the error event."""
    wire = (
        b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason": "length"}]}\n\n'
        b'data: {"choices":[],"usage": {"completion_tokens": 9}}\n\n'
        b"data: [DONE]\n\n"
    )
    facts = AnswerFacts()
    for i in range(len(wire)):
        facts.feed_sse(wire[i : i + 1])
    assert (facts.finish_reason, facts.completion_tokens, facts.error) == ("length", 9, False)


@pytest.mark.parametrize(
    "wire",
    [
        b'data: {"error": {"message": "engine died", "code": 500}}\n\n',
        b'data: {"object": "error", "message": "engine died"}\n\n',
        b'event: error\ndata: {"message": "engine died"}\n\n',
    ],
)
def test_sse_error_events(wire: bytes) -> None:
    facts = AnswerFacts()
    facts.feed_sse(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n')
    facts.feed_sse(wire)
    assert facts.error


def test_content_mentioning_error_is_not_an_error_event() -> None:
    """A token whose text is \"error\" is content, not an error event."""
    facts = AnswerFacts()
    facts.feed_sse(b'data: {"choices":[{"delta":{"content":"\\"error\\""}}]}\n\n')
    assert not facts.error
