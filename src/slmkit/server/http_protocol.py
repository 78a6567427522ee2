"""The HTTP/1.1 protocol uvicorn runs for `slm serve`: httptools, with a bound on request heads.

uvicorn parses HTTP with h11 (pure Python) unless httptools (llhttp, in C) is installed. On
streamed answers the difference is per token: each token's chunk is framed and written by the
protocol, and with h11 the server's event loop spent 0.19 ms per streamed token against 0.14 ms
with httptools and uvloop (8 streams of 96 tokens, thread CPU time; docs/benchmarks.md#serving).

h11 refuses a request head over 16 KB; uvicorn's httptools protocol has no such bound (a 1 MB
header was answered 200), so this one adds it: while a request's head is still arriving, the
bytes received for it are counted, and past ``MAX_HEAD_BYTES`` the connection is answered 431
and closed. The count is of whole reads, so a head is cut at the limit plus at most one read.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # h11's default bound on an incomplete request head


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.logger.warning("Request head over %d bytes refused.", MAX_HEAD_BYTES)
            self._send_431()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # the next request's head is counted from the next read on
        super().on_message_complete()

    def _send_431(self) -> None:
        body = b"Request header fields too large."
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                             b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def http_protocol():
    """The protocol class for ``uvicorn.Config(http=...)``: the bounded httptools one when
    httptools is installed, else uvicorn's h11 (which bounds heads itself)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return BoundedHttpToolsProtocol
