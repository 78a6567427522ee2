"""OpenAI-shaped error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

from slmkit.errors import SlmError


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


GENERIC_MESSAGES = {  # what a client sees for a server-side failure; details stay in the server log
    "corrupt_model": "The model could not be loaded on the server. The operator should check the server log.",
    "engine_stopped": "The model's engine stopped and is being loaded again. Retry shortly.",
}


def slm_error_body(exc: SlmError) -> dict:
    message = exc.message
    if exc.http_status >= 500:
        # Never show server paths or internals to clients.
        message = GENERIC_MESSAGES.get(exc.code, "The generation failed on the server. The operator should check "
                                                 "the server log.")
    return error_body(message, exc.error_type, exc.param, exc.code)


def slm_error_response(exc: SlmError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.http_status == 503 else None
    return JSONResponse(slm_error_body(exc), status_code=exc.http_status, headers=headers)


class HTTPError(Exception):
    """Raised inside handlers for a non-SlmError status (401, 413, 429, ...)."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.param, self.code, self.headers = param, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.error_type, self.param, self.code, self.headers)
