"""What can go wrong talking to vLLM, as types the reconciler decides on.

Hierarchy (the one place third-party errors are translated is `vllm_client._translate`)::

    VLLMError
     ├── TransientError                  retried with backoff within a pass
     │    ├── ServerUnavailable (ConnectionError)   refused, reset, dropped connection
     │    ├── ServerTimeout (TimeoutError)          no answer within the call's timeout
     │    └── ServerError                           5xx answer
     ├── RuntimeUpdatingDisabled          404 {"detail":"Not Found"} on the admin routes
     ├── AuthenticationFailed             401/403: wrong or missing --api-key
     ├── AdapterRejected (ValueError)     400/404 naming this adapter: bad path, name clash...
     └── UnexpectedResponse               an answer we cannot read
"""

from __future__ import annotations


class VLLMError(Exception):
    """Base of every error the vLLM client raises."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TransientError(VLLMError):
    """Worth retrying: the server may answer differently in a moment."""


class ServerUnavailable(TransientError, ConnectionError):
    pass


class ServerTimeout(TransientError, TimeoutError):
    pass


class ServerError(TransientError):
    pass


class RuntimeUpdatingDisabled(VLLMError):
    def __init__(self) -> None:
        super().__init__(
            "runtime LoRA updating is disabled on the server: start vLLM with the environment variable "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true (and --enable-lora)",
            status=404,
        )


class AuthenticationFailed(VLLMError):
    pass


class AdapterRejected(VLLMError, ValueError):
    """The server refused this adapter (bad path, rank too high, name clash). Others are unaffected."""


class UnexpectedResponse(VLLMError):
    pass
