"""Answers the proxy gives itself, in the shape vLLM and OpenAI use."""

from __future__ import annotations

from typing import Final

from lora_syncer.proxy.intake import IntakeRequest
from lora_syncer.proxy.rewrite import dumps

_STATUS_TYPES: Final = {
    400: "BadRequestError",
    403: "PermissionDeniedError",
    408: "RequestTimeoutError",
    413: "RequestEntityTooLargeError",
    417: "ExpectationFailedError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_JSON: Final = (("Content-Type", "application/json"),)


def error_body(status: int, message: str, *, param: str | None = None) -> bytes:
    """An error answer's body: `{"error": {message, type, param, code}}`."""
    return dumps(
        {
            "error": {
                "message": message,
                "type": _STATUS_TYPES.get(status, "Error"),
                "param": param,
                "code": status,
            }
        }
    )


class Refused(Exception):
    """The proxy answers the request itself (an OpenAI-style error); `reason` labels the metric."""

    def __init__(self, status: int, message: str, reason: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.param = param

    def send(self, request: IntakeRequest) -> None:
        """Answer `request` with this error."""
        request.send(self.status, None, _JSON, error_body(self.status, self.message, param=self.param))


class Unreachable(Exception):
    """The pool was not reached, or lost the connection before answering: another pool may serve it."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.message)
        self.refused = refused
