"""Answers the proxy gives itself, in the shape vLLM and OpenAI use."""

from __future__ import annotations

from aiohttp import web

_STATUS_TYPES = {
    400: "BadRequestError",
    403: "PermissionDeniedError",
    408: "RequestTimeoutError",
    413: "RequestEntityTooLargeError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def openai_error(status: int, message: str, *, param: str | None = None) -> web.Response:
    """An error answer: `{"error": {message, type, param, code}}`."""
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": _STATUS_TYPES.get(status, "Error"),
                "param": param,
                "code": status,
            }
        },
        status=status,
    )


class Refused(Exception):
    """The proxy answers the request itself (an OpenAI-style error); `reason` labels the metric."""

    def __init__(self, status: int, message: str, reason: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.param = param

    def response(self) -> web.Response:
        return openai_error(self.status, self.message, param=self.param)


class Unreachable(Exception):
    """The pool was not reached, or lost the connection before answering: another pool may serve it."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.message)
        self.refused = refused
