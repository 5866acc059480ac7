"""The proxy's request handling on arbitrary methods, paths, content types and bodies (huge,
binary, nested JSON): every request gets an HTTP answer; errors are JSON in the OpenAI shape
when the proxy makes them (or vLLM's own shape when vLLM made them); never a 500 traceback."""

from __future__ import annotations

import http.client
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.threaded import ProxyThread

TIMEOUT = 10.0

# Methods the HTTP parser knows; an unknown token is refused by aiohttp's parser before any handler
# runs (a plain 400 and a closed connection: see test_malformed_request_line_is_refused).
methods = st.sampled_from(
    [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "HEAD",
        "PROPFIND",
        "TRACE",
        "MKCOL",
        "SEARCH",
        "PURGE",
    ]
)
path_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#")
paths = st.one_of(
    st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/models",
            "/health",
            "/v1/../v1/completions",
            "//v1//completions/",
            "/v1/completions?x=1",
            "/%00",
            "/%ff%fe",
            "/v1/%63ompletions",
            "/" + "a" * 4000,
        ]
    ),
    st.text(alphabet=path_chars, max_size=60).map(lambda p: "/" + p),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/vnd.api+json",
            "application/octet-stream",
            "",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False),
        st.text(max_size=30),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
models = st.one_of(st.sampled_from(["canary", "canary-v1", "unknown", ""]), json_values)
request_bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"model": models},
        optional={
            "prompt": json_values,
            "messages": json_values,
            "stream": json_values,
            "max_tokens": json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=1, max_value=100).map(
        lambda n: ('{"model": "canary", "x": ' + "[" * n + "]" * n + "}").encode()
    ),
    st.just(b'{"model": "canary", "prompt": "' + b"x" * (1024 * 1024) + b'"}'),  # over the 64 KiB limit
)


LIMIT = 64 * 1024  # the fuzz proxy's --max-body-size


def send(
    proxy: ProxyThread, method: str, path: str, body: bytes, ctype: str | None
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=TIMEOUT)
    try:
        headers = {"Content-Type": ctype} if ctype is not None else {}
        try:
            conn.request(method, path, body=body or None, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The proxy answered 413 and closed before the whole body was sent: refused early, as it should.
            assert len(body) > LIMIT
            return 413, "application/json", b'{"error": {"message": "(answered while sending)"}}'
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def check_answer(method: str, status: int, ctype: str, data: bytes) -> None:
    assert 100 <= status < 600
    if status < 400 or method == "HEAD":
        return
    assert ctype.startswith("application/json"), f"{status} {ctype}: {data[:200]!r}"
    body: Any = json.loads(data)
    openai = isinstance(body, dict) and isinstance(body.get("error"), dict) and "message" in body["error"]
    vllm_routing = isinstance(body, dict) and set(body) == {"detail"}  # FastAPI's own 404/405, relayed
    assert openai or vllm_routing, f"{status}: {data[:200]!r}"
    if status == 500:
        assert openai and "Traceback" not in body["error"]["message"]


@given(method=methods, path=paths, body=request_bodies, ctype=content_types)
@example(method="POST", path="/v1/chat/completions", body=b"\xff\xfe{", ctype="application/json")
@example(method="POST", path="/v1/completions", body=b'{"model": null}', ctype=None)
@example(method="POST", path="/v1/completions", body=b'{"model": 5, "prompt": "x"}', ctype="application/json")
@example(method="POST", path="/v1/embeddings", body=b"[1, 2]", ctype="application/json")
@example(
    method="POST", path="/v1/completions", body=b'{"model": "canary", "n": 1e999}', ctype="application/json"
)
@example(method="GET", path="/v1/models", body=b"", ctype=None)
def test_any_request_gets_a_well_formed_answer(
    proxy_thread: ProxyThread, method: str, path: str, body: bytes, ctype: str | None
) -> None:
    """Any method, path, content type and body: an HTTP answer, errors as JSON (OpenAI shape when the proxy made them)."""
    status, answer_type, data = send(proxy_thread, method, path, body, ctype)
    check_answer(method, status, answer_type, data)


def test_proxy_still_serves_after_fuzzing(proxy_thread: ProxyThread) -> None:
    """After the fuzzing above the proxy answers a normal request for the alias with one of its targets."""
    status, _, data = send(
        proxy_thread,
        "POST",
        "/v1/completions",
        b'{"model": "canary", "prompt": "x", "max_tokens": 1}',
        "application/json",
    )
    assert status == 200
    assert json.loads(data)["model"] in ("canary-v1", "canary-v2")


def test_malformed_request_line_is_refused(proxy_thread: ProxyThread) -> None:
    """A request line with an unknown method token gets a 400 from the HTTP parser and the proxy keeps serving."""
    import socket

    with socket.create_connection(("127.0.0.1", proxy_thread.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"A /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.") and answer.split(b" ")[1] == b"400"
    assert b"Traceback" not in answer
    status, _, _ = send(proxy_thread, "GET", "/v1/models", b"", None)
    assert status == 200
