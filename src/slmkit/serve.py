"""``slm serve``: run the OpenAI-compatible server with uvicorn."""

from __future__ import annotations

import logging
import os
import re

from slmkit.errors import InvalidRequestError, SlmError
from slmkit.server.settings import ServerSettings

log = logging.getLogger("slmkit.server")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024**2,
          "g": 1e9, "gb": 1e9, "gib": 1024**3, "t": 1e12, "tb": 1e12, "tib": 1024**4}


def parse_size(text: str) -> int:
    """'2GB', '512MiB', '1000000' -> bytes."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise InvalidRequestError(f"Cannot read {text!r} as a size: write e.g. 2GB, 512MiB or a number of bytes.")
    return int(float(match.group(1)) * _UNITS[unit])


def banner(settings: ServerSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    auth = ' -H "Authorization: Bearer $SLM_API_KEY"' if settings.api_keys else ""
    model = settings.models[0] if settings.models else "MODEL"
    return (
        f"slmkit server on {url}  (web chat: {url}/ , API: {url}/v1 , docs: {url}/docs)\n"
        f"models: {', '.join(settings.models)}; embeddings: {', '.join(settings.embedding_models)}\n"
        f"try:\n  curl {url}/v1/chat/completions{auth} -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}], "
        f"\"stream\": true}}'"
    )


def exposure_warning(settings: ServerSettings) -> str | None:
    """A loud warning when the server is reachable from the network and needs no key."""
    if settings.host in LOOPBACK or settings.host.startswith("127.") or settings.api_keys:
        return None
    return (f"WARNING: --host {settings.host} exposes this server to the network WITHOUT an API key: anyone who can "
            "reach the port can use it. Pass --api-key KEY (or set SLM_API_KEY), or bind 127.0.0.1.")


def check_models(settings: ServerSettings) -> None:
    """Fail before binding when a chat model reference names nothing (the reason, not a 503 later)."""
    from slmkit.references import resolve

    for reference in settings.models[:1]:
        resolve(reference)
    if settings.adapters:
        from slmkit.engine.torch_backend import adapter_directory

        for reference in settings.adapters.values():
            adapter_directory(reference)
    if settings.router:
        from slmkit.router.model import router_path

        router_path(settings.router)


MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for this process (no-op elsewhere).

    The server runs requests on up to a few hundred worker threads; glibc gives busy threads
    arenas of their own (up to 8 per core), and their freed memory is rarely returned, which
    showed in the 200-stream soak as RSS climbing for the first minutes. Two arenas keep
    RSS lower; the Python allocator and torch do not depend on them."""
    import contextlib
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to cap
        ctypes.CDLL(name).mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX


def serve(settings: ServerSettings) -> None:
    """Serve until interrupted; SIGTERM drains in-flight requests for ``drain_timeout_s``.

    Raises the load error (and the server exits) if the first model cannot be loaded."""
    import uvicorn

    from slmkit.server.app import create_app
    from slmkit.server.http_protocol import http_protocol

    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
    limit_malloc_arenas()
    check_models(settings)
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(create_app(settings, on_fatal=on_fatal), host=settings.host, port=settings.port,
                            log_level="info", timeout_graceful_shutdown=int(settings.drain_timeout_s),
                            server_header=False, http=http_protocol())
    server = uvicorn.Server(config)
    server.run()
    if failures:
        exc = failures[0]
        if isinstance(exc, SlmError):
            raise SlmError(f"Cannot serve {settings.models[0]}: {exc.message}") from exc
        raise SlmError(f"Cannot serve {settings.models[0]}: {type(exc).__name__}: {exc}") from exc
