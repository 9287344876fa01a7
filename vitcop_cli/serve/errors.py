"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Contract: handlers raise :class:`ApiError`; the app turns it (and library errors, and anything
unexpected) into that body. :func:`from_library` maps :class:`~vitcop_cli.errors.InputError` to 400
with the CLI's own one-line message and :class:`~vitcop_cli.errors.RuntimeFailure` to 500. Messages
are single lines; a genuine bug is a 500 whose message names the exception type only (the
traceback goes to the server log, never to the client).
"""

from __future__ import annotations

from ..errors import InputError, VitcopError

# status -> OpenAI error "type"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """An HTTP error with an OpenAI error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def from_library(exc: VitcopError) -> ApiError:
    """400 for bad input (the CLI's message), 500 for a runtime failure."""
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), code="invalid_input")
    return ApiError(500, str(exc), code="runtime_failure")


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)
