"""ASGI middleware that guards every request before any route runs.

- Host check: a server bound to loopback answers only Host names that mean loopback (plus
  any the operator allows), which defeats DNS-rebinding pages in a local browser.
- API keys: with keys configured, every path but ``/health`` needs ``Authorization: Bearer
  KEY`` (or HTTP Basic with the key as password, so the web page works in a browser).
  Keys are compared in constant time.
- Body size: a declared ``Content-Length`` over the limit is refused before reading; a
  chunked body is counted as it arrives and cut off at the limit.
"""

from __future__ import annotations

import base64
import hmac
import json

from starlette.exceptions import HTTPException

from slmkit.server.errors import error_body

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
OPEN_PATHS = {"/health"}


async def _send_error(send, status: int, message: str, error_type: str, code: str | None,
                      extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(message, error_type, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class GuardMiddleware:
    def __init__(self, app, *, api_keys: list[str], max_body_bytes: int, loopback_only_hosts: bool,
                 allowed_hosts: list[str]):
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.max_body_bytes = max_body_bytes
        self.loopback_only_hosts = loopback_only_hosts
        self.allowed_hosts = LOOPBACK_HOSTS | {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only_hosts and _host_name(headers.get("host", "").lower()) not in self.allowed_hosts:
            return await _send_error(send, 403, "Host not allowed. Start the server with --allow-host NAME to accept it.",
                                     "permission_error", "host_not_allowed")
        if self.api_keys and scope["path"] not in OPEN_PATHS and not self._authorized(headers.get("authorization", "")):
            challenge = [(b"www-authenticate", b'Basic realm="slmkit"')] if scope["path"] == "/" else []
            return await _send_error(send, 401, "Missing or invalid API key. Send 'Authorization: Bearer YOUR_KEY'.",
                                     "authentication_error", "invalid_api_key", challenge)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _send_error(send, 400, "Invalid Content-Length header.", "invalid_request_error", None)
            if int(declared) > self.max_body_bytes:
                return await _send_error(send, 413, f"Request body is larger than the limit of {self.max_body_bytes} bytes.",
                                         "invalid_request_error", "request_too_large")
        return await self.app(scope, self._limited(receive), send)

    def _limited(self, receive):
        """Count body bytes as they arrive; past the limit, fail the read with a 413 that the
        app's error handler renders (FastAPI re-raises HTTPExceptions from body reads)."""
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise HTTPException(413)
            return message

        return wrapped

    def _authorized(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except ValueError:
                return False
        elif scheme.lower() != "bearer":
            return False
        candidate = value.strip().encode()
        # Compare with every key so timing reveals neither the key nor which one matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.api_keys]
        return any(matches)
