import socket
import threading
import time

import httpx
import pytest


class LiveServer:
    """A real uvicorn server on a free loopback port, running in a thread."""

    def __init__(self, settings):
        import uvicorn

        from slmkit.server.app import create_app

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            settings.port = probe.getsockname()[1]
        self.settings = settings
        self.app = create_app(settings)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_level="warning"))
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


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], max_batch_size=8, default_max_tokens=40)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def model_id(tiny_model_dir):
    return str(tiny_model_dir)


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
