"""Inference answer bodies and SSE streams shaped like vLLM's."""

from __future__ import annotations

import json

from lora_syncer.emulator import responses


def events(stream: list[bytes]) -> list[object]:
    out: list[object] = []
    for event in stream:
        assert event.startswith(b"data: ")
        assert event.endswith(b"\n\n")
        payload = event[6:-2]
        out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


class TestBodies:
    def test_chat_body(self) -> None:
        """A chat answer names the model, has n completion tokens and finishes by length."""
        body = json.loads(responses.chat_body("a1", 3, 10, "0.32.0"))
        assert body["id"].startswith("chatcmpl-")
        assert (body["object"], body["model"]) == ("chat.completion", "a1")
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"] == {
            "prompt_tokens": 10,
            "total_tokens": 13,
            "completion_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
        assert body["system_fingerprint"].startswith("vllm-0.32.0-")

    def test_completion_body(self) -> None:
        """A text completion answer names the model and carries the filler text, one word a token."""
        body = json.loads(responses.completion_body("base", 4, 2, "0.32.0"))
        assert body["id"].startswith("cmpl-")
        assert (body["object"], body["model"]) == ("text_completion", "base")
        assert body["choices"][0]["text"] == " the quick brown fox"


class TestKeys:
    """vLLM 0.32's null extras, as the contract suite pins them against the real server."""

    def test_chat_body_keys(self) -> None:
        """A chat answer has routed_experts per choice and prompt_text, ec_transfer_params, metrics, all null."""
        body = json.loads(responses.chat_body("a1", 1, 1, "0.32.0"))
        assert body["choices"][0]["routed_experts"] is None
        assert [body[k] for k in ("prompt_text", "ec_transfer_params", "metrics")] == [None, None, None]

    def test_completion_body_keys(self) -> None:
        """A text completion has routed_experts per choice and ec_transfer_params, metrics, all null."""
        body = json.loads(responses.completion_body("a1", 1, 1, "0.32.0"))
        assert body["choices"][0]["routed_experts"] is None
        assert [body[k] for k in ("ec_transfer_params", "metrics")] == [None, None]
        assert "prompt_text" not in body

    def test_only_the_first_chat_chunk_has_prompt_fields(self) -> None:
        """The role chunk carries null prompt_token_ids and prompt_text; token chunks do not."""
        first, *rest = events(list(responses.chat_stream("a1", 2, 1, False, "0.32.0")))[:-1]
        assert isinstance(first, dict)
        assert (first["prompt_token_ids"], first["prompt_text"]) == (None, None)
        assert all(isinstance(c, dict) and "prompt_text" not in c for c in rest)


class TestFiller:
    def test_filler_words_cycle(self) -> None:
        """The filler is "the quick brown fox jumps over a lazy dog." one token a word, starting again after the period."""
        assert responses.fake_text(10) == " the quick brown fox jumps over a lazy dog."
        assert responses.fake_text(12) == " the quick brown fox jumps over a lazy dog. the quick"
        assert responses.fake_text(0) == ""


class TestStreams:
    def test_chat_stream(self) -> None:
        """Role chunk, one chunk per token, the last one finished, then [DONE]; every chunk names the model."""
        out = events(list(responses.chat_stream("a1", 3, 5, False, "0.32.0")))
        assert out[-1] == "[DONE]"
        chunks = out[:-1]
        assert len(chunks) == 4
        assert all(isinstance(c, dict) and c["model"] == "a1" for c in chunks)
        assert len({c["id"] for c in chunks if isinstance(c, dict)}) == 1
        first, *tokens = chunks
        assert isinstance(first, dict)
        assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["choices"][0]["finish_reason"] for c in tokens if isinstance(c, dict)] == [
            None,
            None,
            "length",
        ]

    def test_chat_stream_usage(self) -> None:
        """With include_usage a final usage chunk with no choices precedes [DONE]."""
        out = events(list(responses.chat_stream("a1", 2, 5, True, "0.32.0")))
        usage = out[-2]
        assert isinstance(usage, dict)
        assert usage["choices"] == []
        assert usage["usage"] == {"prompt_tokens": 5, "total_tokens": 7, "completion_tokens": 2}

    def test_completion_stream(self) -> None:
        """A streamed completion has one chunk per token, then [DONE]."""
        out = events(list(responses.completion_stream("a2", 3, 1, False, "0.32.0")))
        assert out[-1] == "[DONE]"
        texts = "".join(c["choices"][0]["text"] for c in out[:-1] if isinstance(c, dict))
        assert texts == " the quick brown"
        assert all(isinstance(c, dict) and c["object"] == "text_completion" for c in out[:-1])

    def test_embeddings_are_deterministic(self) -> None:
        """The same input always gets the same vector."""
        a = json.loads(responses.embedding_body("base", ["x", "y"]))
        b = json.loads(responses.embedding_body("base", "x"))
        assert a["data"][0]["embedding"] == b["data"][0]["embedding"]
        assert len(a["data"]) == 2
