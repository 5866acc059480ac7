"""The proxy's pure parts: body rewrites, SSE re-assembly, the models list, refused routes, flags."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_syncer.options.parser import command_parser
from lora_syncer.proxy.options import proxy_options_from_args
from lora_syncer.proxy.policy import is_admin_path, model_required, normalize_path
from lora_syncer.proxy.rewrite import (
    SSEModelRewriter,
    json_with_model,
    loads,
    models_with_aliases,
    with_model,
)

SSE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"alias-v2","choices":[{"delta":{"content":"hi"}}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"alias-v2","choices":[{"delta":{"content":" there"}}]}\r\n\r\n'
    b": keep-alive comment\n\n"
    b"data: [DONE]\n\n"
)


def rewrite_in_pieces(stream: bytes, cuts: list[int]) -> bytes:
    rw = SSEModelRewriter("alias-v2", "alias")
    out = b""
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out += rw.feed(stream[last:cut])
        last = cut
    return out + rw.flush()


class TestRequestBody:
    def test_only_model_changes(self) -> None:
        """Rewriting keeps every other key, its order and its value."""
        body = {
            "messages": [{"role": "user", "content": "é ✓"}],
            "model": "alias",
            "temperature": 0.0,
            "n": 1,
        }
        out = json.loads(with_model(dict(body), "alias-v1"))
        assert list(out) == list(body)
        assert out == {**body, "model": "alias-v1"}

    def test_wide_integers_survive(self) -> None:
        """Integers wider than 64 bits keep their exact value."""
        raw = b'{"model": "a", "seed": 123456789012345678901234567890}'
        out = json.loads(with_model(loads(raw), "b"))
        assert out["seed"] == 123456789012345678901234567890

    def test_invalid_json(self) -> None:
        """Text that is not JSON raises ValueError."""
        with pytest.raises(ValueError, match="Expecting"):
            loads(b"{not json")


class TestResponseRewrite:
    def test_json_answer(self) -> None:
        """A JSON answer naming the served target is rewritten to the requested name."""
        out = json_with_model(b'{"id": "x", "model": "alias-v2", "choices": []}', "alias-v2", "alias")
        assert json.loads(out) == {"id": "x", "model": "alias", "choices": []}

    def test_json_answer_of_another_model_untouched(self) -> None:
        """Answers that name another model, or are not JSON, are returned as they are."""
        raw = b'{"model": "something-else"}'
        assert json_with_model(raw, "alias-v2", "alias") is raw
        assert json_with_model(b"Success", "a", "b") == b"Success"

    def test_sse_whole(self) -> None:
        """Every data line's model is rewritten; comments, [DONE] and line endings are kept."""
        out = rewrite_in_pieces(SSE, [])
        assert out.count(b'"model":"alias"') == 2
        assert b"alias-v2" not in out
        assert out.endswith(b": keep-alive comment\n\ndata: [DONE]\n\n")
        assert b"\r\n\r\n" in out

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=len(SSE)), max_size=12))
    def test_sse_any_chunking(self, cuts: list[int]) -> None:
        """However the stream is cut into chunks, the rewritten output is the same."""
        assert rewrite_in_pieces(SSE, cuts) == rewrite_in_pieces(SSE, [])

    def test_sse_every_single_byte_boundary(self) -> None:
        """A chunk boundary inside `"model"` or its value is handled (every cut position)."""
        expected = rewrite_in_pieces(SSE, [])
        for cut in range(len(SSE)):
            assert rewrite_in_pieces(SSE, [cut]) == expected

    def test_sse_partial_line_waits(self) -> None:
        """A partial line is held until its end arrives; flush releases a last unterminated line."""
        rw = SSEModelRewriter("m2", "m")
        assert rw.feed(b'data: {"model":"m') == b""
        assert rw.feed(b'2"}') == b""
        assert rw.flush() == b'data: {"model":"m"}'

    def test_sse_lines_without_model_pass_byte_for_byte(self) -> None:
        """Lines that do not mention model are not re-serialized."""
        rw = SSEModelRewriter("m2", "m")
        raw = b'data: {"a" :  1}\n\n'
        assert rw.feed(raw) == raw


class TestModelsList:
    def test_aliases_added(self) -> None:
        """Each alias not already listed is added with its first target as root."""
        raw = json.dumps(
            {"object": "list", "data": [{"id": "base", "object": "model", "owned_by": "vllm"}, {"id": "v1"}]}
        ).encode()
        out = json.loads(models_with_aliases(raw, {"alias": "v1", "v1": "v1"}, 123))
        ids = [m["id"] for m in out["data"]]
        assert ids == ["base", "v1", "alias"]
        assert out["data"][-1] == {
            "id": "alias",
            "object": "model",
            "created": 123,
            "owned_by": "vllm",
            "root": "v1",
            "parent": None,
            "permission": [],
        }

    def test_not_a_models_list(self) -> None:
        """Anything that is not a models list is returned unchanged."""
        assert models_with_aliases(b"oops", {"a": "b"}, 1) == b"oops"
        assert models_with_aliases(b'{"detail": 1}', {"a": "b"}, 1) == b'{"detail": 1}'


class TestPolicy:
    @pytest.mark.parametrize(
        "path",
        [
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "/adapters",
            "/adapters/my-adapter",
            "/reset_prefix_cache",
            "/sleep",
            "/wake_up",
            "/collective_rpc",
            "/scale_elastic_ep",
            "/update_weights",
            "/fault_tolerance/apply",
            "//v1/load_lora_adapter",
            "/v1/load_lora_adapter/",
            "/v1/../v1/unload_lora_adapter",
            "/v1/./load_lora_adapter",
        ],
    )
    def test_admin_paths_refused(self, path: str) -> None:
        """vLLM's adapter and control routes are recognised, however the path is spelt."""
        assert is_admin_path(path)

    @pytest.mark.parametrize(
        "path", ["/v1/chat/completions", "/v1/models", "/health", "/metrics", "/adapterss", "/v1/responses"]
    )
    def test_inference_paths_allowed(self, path: str) -> None:
        """Inference and read-only routes pass."""
        assert not is_admin_path(path)

    def test_normalize(self) -> None:
        """Repeated slashes, dot segments and a trailing slash are normalised away."""
        assert normalize_path("//a//b/../c/") == "/a/c"
        assert normalize_path("x") == "/x"

    def test_model_required(self) -> None:
        """The OpenAI inference routes require a model; others do not."""
        assert model_required("/v1/chat/completions")
        assert model_required("/v1/completions/")
        assert not model_required("/tokenize")


class TestFlags:
    def test_defaults_and_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Flags default from LORA_SYNCER_<FLAG> and build ProxyOptions."""
        monkeypatch.setenv("LORA_SYNCER_STICKY_HEADER", "x-user")
        monkeypatch.setenv("LORA_SYNCER_MAX_BODY_SIZE", "1MiB")
        monkeypatch.setenv("LORA_SYNCER_ALLOW_ADMIN_ROUTES", "true")
        args = command_parser("proxy").parse_args(["--rules", "/etc/rules/rules.yaml", "--proxy-port", "0"])
        opts = proxy_options_from_args(args, "http://127.0.0.1:8000")
        assert opts.sticky_header == "x-user"
        assert opts.max_body_size == 1024 * 1024
        assert opts.allow_admin_routes is True
        assert opts.port == 0
        assert str(opts.rules_path) == "/etc/rules/rules.yaml"
        assert opts.response_model == "served"

    def test_bad_size(self) -> None:
        """A size that is not a size is a usage error."""
        with pytest.raises(SystemExit):
            command_parser("proxy").parse_args(["--max-body-size", "lots"])
