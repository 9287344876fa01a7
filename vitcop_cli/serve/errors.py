"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Contract: handlers raise :class:`ApiError`; the app turns it (and library errors, and anything
unexpected) into that body. :func:`from_library` maps :class:`~vitcop_cli.errors.InputError` to 400
with the CLI's own one-line message and :class:`~vitcop_cli.errors.RuntimeFailure` to 500. Messages
are single lines; a genuine bug is a 500 whose message names the exception type only (the
traceback goes to the server log, never to the client). Library messages name the command-line
options (``--max-new-tokens``); :func:`from_library` renames those a request sets to its API field
(``max_tokens``). A client's own values are quoted through :func:`shown`: at most ``SHOWN_CHARS``
characters, a float in six digits, a huge integer by its digit count.
"""

from __future__ import annotations

import re

from ..errors import InputError, VitcopError

SHOWN_CHARS = 80

# library option -> the request field that sets it (the server's own options keep their names)
_API_FIELDS = {
    "--max-new-tokens": "max_tokens", "--temperature": "temperature", "--top-p": "top_p", "--seed": "seed",
    "--fps": "vitcop.fps", "--frames": "vitcop.frames", "--max-pixels": "vitcop.max_pixels",
    "--preset": "vitcop.preset", "--presets": "vitcop.preset", "--method": "vitcop.method",
    "--methods": "vitcop.method",
}
_OPTION = re.compile(r"--[a-z][a-z-]*[a-z]")

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


def from_library(exc: VitcopError, param: str | None = None) -> ApiError:
    """400 for bad input (the CLI's message, options renamed to API fields; ``param`` the request field),
    500 for a runtime failure."""
    if isinstance(exc, InputError):
        return ApiError(400, api_wording(str(exc)), code="invalid_input", param=param)
    return ApiError(500, str(exc), code="runtime_failure")


def api_wording(message: str) -> str:
    """``message`` with each library option a request sets named by its API field instead."""
    return _OPTION.sub(lambda m: _API_FIELDS.get(m.group(0), m.group(0)), message)


def shown(value: object) -> str:
    """A client's value quoted for an error message: ``repr`` cut to ``SHOWN_CHARS`` characters, a float
    as ``%.6g``, an integer of more than 15 digits by its digit count."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit number"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)
