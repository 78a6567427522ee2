"""One error hierarchy for slmkit.

Every user-facing failure is an ``SlmError``. The CLI prints its message on one line and
exits non-zero; the server maps ``http_status``/``code`` into OpenAI's error envelope.
Messages say what is wrong and what to do about it.
"""

from __future__ import annotations


class SlmError(Exception):
    """Base class: a failure the user can act on (never a bug in slmkit)."""

    http_status = 400
    error_type = "invalid_request_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code


class ModelNotFoundError(SlmError):
    http_status = 404
    code = "model_not_found"
    param = "model"


class CorruptModelError(SlmError):
    """A model file or directory exists but cannot be read as a model."""

    http_status = 500
    error_type = "server_error"
    code = "corrupt_model"


class ContextLengthExceededError(SlmError):
    code = "context_length_exceeded"
    param = "messages"


class InvalidRequestError(SlmError):
    """A bad argument: wrong value, wrong type, or a combination slmkit does not support."""


class ArtifactExistsError(SlmError):
    code = "already_exists"


class UnsafeModelFileError(SlmError):
    """A file slmkit refuses to load because loading it could run code (pickle)."""

    code = "unsafe_model_file"
