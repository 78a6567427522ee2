import getpass
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

# Every error body any live server in this suite sends (status >= 400, and SSE error events),
# checked at the end of the session for paths, tracebacks, usernames and environment values.
ERROR_BODIES: list[tuple[int, str, str]] = []


class CaptureErrorBodies:
    """ASGI wrapper recording error responses exactly as clients receive them."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [0]

        async def capturing_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"").decode("utf-8", "replace")
                if status[0] >= 400 or '"error"' in body:
                    ERROR_BODIES.append((status[0], scope["path"], body))
            await send(message)

        await self.app(scope, receive, capturing_send)


def leaks(body: str) -> list[str]:
    """What in ``body`` a client must never see."""
    found = [word for word in ("Traceback", 'File "', "site-packages") if word in body]
    found += re.findall(r"(?:/(?:root|home|tmp|usr|work|var|opt|etc|proc|srv)/[^\s\"']*)", body)
    secrets = {str(Path.home()), tempfile.gettempdir() + "/", sys.prefix, os.getcwd()}
    found += [s for s in secrets if len(s) > 4 and s in body]
    user = getpass.getuser()
    if len(user) > 3 and re.search(rf"\b{re.escape(user)}\b", body) and user != "root":
        found.append(f"user {user}")
    return found


@pytest.fixture(scope="module", autouse=True)
def empty_store(tmp_path_factory):
    """Every server test module sees an empty store unless it builds one: knowledge bases or
    models in the developer's ~/.slm must not change what a server lists. Module-scoped, so
    it is in place before the module's own server fixtures (which may set a store of their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLM_HOME", str(tmp_path_factory.mktemp("empty-store")))
        yield


@pytest.fixture(scope="session", autouse=True)
def error_bodies_never_leak():
    yield
    leaking = [(status, path, body[:300], leaks(body)) for status, path, body in ERROR_BODIES if leaks(body)]
    assert not leaking, f"error bodies leaked server details: {leaking[:5]}"


class LiveServer:
    """A real uvicorn server on a free loopback port, running in a thread."""

    def __init__(self, settings):
        import uvicorn

        from slmkit.server.app import create_app
        from slmkit.server.http_protocol import http_protocol

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            settings.port = probe.getsockname()[1]
        self.settings = settings
        self.app = create_app(settings)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(CaptureErrorBodies(self.app), host="127.0.0.1", port=settings.port,
                                                    log_level="warning", http=http_protocol()))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def pool(self):
        return self.app.state.pool


@pytest.fixture(scope="session")
def long_tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model with a 4096-token context: a 4000-token answer outlasts any signal or timeout
    a test sends while it streams, however fast the machine. Never modify it."""
    from tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("long") / "tiny-long", context=4096)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], max_batch_size=8, default_max_tokens=40)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def model_id(tiny_model_dir):
    """The name the server publishes the tiny model under (its path never reaches clients)."""
    return tiny_model_dir.name


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture()
def browser_page():
    """A page in Debian's headless Chromium, driven by Playwright (no browser download)."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()
