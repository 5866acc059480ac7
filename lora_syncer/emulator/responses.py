"""Inference answers shaped like vLLM's: chat and text completions, plain and SSE, and embeddings.

The text is cheap filler, one word per "token", so `max_tokens` decides exactly how many tokens
(and how many streamed chunks) an answer has. Every answer names the model that served it.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from lora_syncer.emulator import _json

_WORDS = (" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".")
DONE = b"data: [DONE]\n\n"
SSE_CONTENT_TYPE = "text/event-stream"


def request_id(prefix: str) -> str:
    """`cmpl-<16 hex>` / `chatcmpl-<16 hex>` as vLLM numbers requests."""
    return f"{prefix}-{random.getrandbits(64):016x}"


def fingerprint(version: str) -> str:
    """vLLM's `system_fingerprint`: `vllm-<version>-<8 hex>`."""
    return f"vllm-{version}-{zlib.crc32(version.encode()):08x}"


@lru_cache(maxsize=512)
def fake_tokens(n: int) -> tuple[str, ...]:
    """`n` filler tokens."""
    return tuple(_WORDS[i % len(_WORDS)] for i in range(n))


@lru_cache(maxsize=512)
def fake_text(n: int) -> str:
    """`n` filler tokens joined."""
    return "".join(fake_tokens(n))


def chat_prompt_tokens(messages: list[Any]) -> int:
    """A rough token count for a chat prompt (4 characters a token, plus per-message overhead)."""
    chars = 0
    for m in messages:
        if isinstance(m, dict):
            chars += len(str(m.get("content") or ""))
    return max(1, chars // 4 + 4 * len(messages))


def completion_prompt_tokens(prompt: Any) -> int:
    """A rough token count for a completion prompt."""
    if isinstance(prompt, str):
        return max(1, len(prompt) // 4)
    if isinstance(prompt, list):
        return max(1, len(prompt))
    return 1


def _usage(prompt_tokens: int, n: int, details: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + n,
        "completion_tokens": n,
    }
    if details:
        usage["prompt_tokens_details"] = None
        usage["completion_tokens_details"] = None
    return usage


def chat_body(model: str, n: int, prompt_tokens: int, version: str, finish_reason: str = "length") -> bytes:
    """A non-streamed `chat.completion` answer with `n` completion tokens (0: empty content)."""
    return _json.dumps(
        {
            "id": request_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": fake_text(n),
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "reasoning": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                    "token_ids": None,
                    "routed_experts": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": fingerprint(version),
            "usage": _usage(prompt_tokens, n),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    )


def completion_body(
    model: str, n: int, prompt_tokens: int, version: str, finish_reason: str = "length"
) -> bytes:
    """A non-streamed `text_completion` answer with `n` completion tokens (0: empty text)."""
    return _json.dumps(
        {
            "id": request_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": fake_text(n),
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                    "token_ids": None,
                    "prompt_logprobs": None,
                    "prompt_token_ids": None,
                    "routed_experts": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": fingerprint(version),
            "usage": _usage(prompt_tokens, n),
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    )


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + _json.dumps(obj) + b"\n\n"


def error_event(error: dict[str, Any]) -> bytes:
    """An error inside a 200 event stream, as vLLM sends it when generation fails mid-stream."""
    return _event(error)


def chat_stream(
    model: str, n: int, prompt_tokens: int, include_usage: bool, version: str, finish_reason: str = "length"
) -> Iterator[bytes]:
    """SSE events of a streamed chat answer: a role chunk, one chunk per token, then `[DONE]`.

    With `n` = 0 (an empty answer) one chunk with empty content carries the finish_reason.
    """
    base = {
        "id": request_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    yield _event(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "prompt_token_ids": None,
            "prompt_text": None,
        }
    )
    last = max(n, 1) - 1
    for i, token in enumerate(fake_tokens(n) or ("",)):
        choice: dict[str, Any] = {
            "index": 0,
            "delta": {"content": token},
            "logprobs": None,
            "finish_reason": None,
        }
        chunk: dict[str, Any] = {**base, "choices": [choice]}
        if i == last:
            choice["finish_reason"] = finish_reason
            choice["stop_reason"] = None
            if not include_usage:
                chunk["system_fingerprint"] = fingerprint(version)
        choice["token_ids"] = None
        yield _event(chunk)
    if include_usage:
        yield _event(
            {
                **base,
                "choices": [],
                "usage": _usage(prompt_tokens, n, False),
                "system_fingerprint": fingerprint(version),
            }
        )
    yield DONE


def completion_stream(
    model: str, n: int, prompt_tokens: int, include_usage: bool, version: str, finish_reason: str = "length"
) -> Iterator[bytes]:
    """SSE events of a streamed text completion: one chunk per token, then `[DONE]`.

    With `n` = 0 (an empty answer) one chunk with empty text carries the finish_reason.
    """
    base = {
        "id": request_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    for i, token in enumerate(fake_tokens(n) or ("",)):
        last = i == max(n, 1) - 1
        choice: dict[str, Any] = {
            "index": 0,
            "text": token,
            "logprobs": None,
            "finish_reason": finish_reason if last else None,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
        chunk: dict[str, Any] = {**base, "choices": [choice]}
        if last and not include_usage:
            chunk["system_fingerprint"] = fingerprint(version)
        yield _event(chunk)
    if include_usage:
        yield _event(
            {
                **base,
                "choices": [],
                "usage": _usage(prompt_tokens, n, False),
                "system_fingerprint": fingerprint(version),
            }
        )
    yield DONE


def embedding_body(model: str, inputs: Any, dim: int = 8) -> bytes:
    """A small deterministic embedding per input (the vector depends only on the text)."""
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    for i, item in enumerate(items):
        rng = random.Random(str(item))
        data.append(
            {"index": i, "object": "embedding", "embedding": [rng.uniform(-1, 1) for _ in range(dim)]}
        )
    tokens = sum(completion_prompt_tokens(item) for item in items)
    return _json.dumps(
        {
            "id": request_id("embd"),
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": data,
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )
