"""OpenAI-shaped error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

from slmkit.errors import SlmError


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


def slm_error_response(exc: SlmError) -> JSONResponse:
    status = exc.http_status
    message = exc.message
    if status >= 500:
        # A broken model file is the operator's problem; never show server paths to clients.
        message = "The model could not be loaded on the server. The operator should check the server log."
    return error_response(status, message, exc.error_type, exc.param, exc.code)


class HTTPError(Exception):
    """Raised inside handlers for a non-SlmError status (401, 413, 429, ...)."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.param, self.code, self.headers = param, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.error_type, self.param, self.code, self.headers)
