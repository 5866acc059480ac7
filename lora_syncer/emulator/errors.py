"""vLLM's error bodies: `{"error": {"message", "type", "param", "code"}}`, with its message scrubbing.

Every message vLLM builds goes through a sanitizer that replaces file-system paths with `<path>`;
the emulator applies the same rules so clients see identical strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
_TRACEBACK_LINE = re.compile(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?')
_SYSTEM_PATH = re.compile(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+")
_FILE_PATH = re.compile(r"(?:/[\w\-]+)+/[\w\-]+\.\w+")

# The wording vLLM uses for failures inside the engine's add_lora call (single CPU worker).
WORKER_FAILURE = (
    "Call to add_lora method failed: Worker failed with error '{reason}', "
    "please check the stack trace above for the root cause"
)
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."


def sanitize_message(message: str) -> str:
    """Scrub addresses, traceback lines and paths from `message` the way vLLM does."""
    message = _ADDRESS.sub(">", message)
    message = _TRACEBACK_LINE.sub("", message)
    message = _SYSTEM_PATH.sub("<path>", message)
    message = _FILE_PATH.sub("<path>", message)
    return message.strip()


@dataclass(frozen=True, slots=True)
class ApiError:
    """One error answer: HTTP status, vLLM error type, message and the offending parameter."""

    status: int
    type: str
    message: str
    param: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body vLLM sends for this error (message already sanitized)."""
        return {
            "error": {
                "message": sanitize_message(self.message),
                "type": self.type,
                "param": self.param,
                "code": self.status,
            }
        }


def bad_input(message: str) -> ApiError:
    """400 InvalidUserInput, as vLLM's LoRA checks answer."""
    return ApiError(400, "InvalidUserInput", message)


def not_found(message: str, param: str | None = None) -> ApiError:
    """404 NotFoundError."""
    return ApiError(404, "NotFoundError", message, param)


def internal(message: str) -> ApiError:
    """500 InternalServerError."""
    return ApiError(500, "InternalServerError", message)


def worker_failure(reason: str) -> ApiError:
    """500 for an exception raised inside the engine while loading an adapter."""
    return internal(WORKER_FAILURE.format(reason=reason))


def validation_error(errors: list[str], param: str | None) -> ApiError:
    """400 "Bad Request" as vLLM's request-validation handler formats pydantic errors."""
    count = len(errors)
    label = "error" if count == 1 else "errors"
    message = f"{count} validation {label}:\n" + "".join(f"  {e}\n" for e in errors)
    return ApiError(400, "Bad Request", message.rstrip(), param)


def bad_request(message: str, param: str | None = None, value: object = None) -> ApiError:
    """400 BadRequestError as vLLM's own request checks answer it.

    With `param`, the message ends like vLLM's validation errors do:
    `... (parameter=max_tokens, value=0)` (`value` left out when it is None).
    """
    extras = []
    if param is not None:
        extras.append(f"parameter={param}")
    if value is not None:
        extras.append(f"value={value}")
    if extras:
        message = f"{message} ({', '.join(extras)})"
    return ApiError(400, "BadRequestError", message, param)
