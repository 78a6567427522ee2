"""The server as a process: start-up health, draining on SIGTERM, `slm chat --url`."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from conftest import LiveServer


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_serve(model_dir, port, drain_timeout):
    """`slm serve` on the tiny model as a child process (stop it with ``process.kill()``)."""
    return subprocess.Popen([sys.executable, "-m", "slmkit", "serve", "--model", str(model_dir), "--port", str(port),
                             "--embedding-model", "minilm-l6", "--drain-timeout", drain_timeout],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_healthy(url, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became healthy")


def test_sigterm_lets_in_flight_requests_finish_then_exits(tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(tiny_model_dir, port, drain_timeout="20")
    try:
        wait_healthy(url, process)
        body = {"model": str(tiny_model_dir), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
                "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            try:  # draining: new requests are refused while the in-flight one finishes
                refused = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}, timeout=10)
                assert refused.status_code == 503
            except httpx.TransportError:
                pass
            rest = list(lines)
        assert "data: [DONE]" in rest, "the in-flight stream was allowed to finish"
        # uvicorn re-raises the signal once it has shut down cleanly, so -SIGTERM is a clean exit.
        assert process.wait(timeout=25) in (0, -signal.SIGTERM)
    finally:
        process.kill()
    assert "slmkit server on" in process.stderr.read()


def test_health_is_503_when_the_model_cannot_load(tmp_path):
    from slmkit.server.settings import ServerSettings

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"junk")
    settings = ServerSettings(models=[str(broken)], embedding_models=[])
    live = LiveServer(settings)
    live.thread.start()
    try:
        deadline, status = time.time() + 30, None
        while time.time() < deadline:
            try:
                response = httpx.get(live.url + "/health", timeout=1)
                status = response.status_code, response.json()["status"]
                if status[1] == "error":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert status == (503, "error")
        failed = httpx.post(live.url + "/v1/chat/completions",
                            json={"model": str(broken), "messages": [{"role": "user", "content": "x"}]})
        assert failed.status_code == 500 and str(tmp_path) not in failed.text
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=10)


def test_slm_chat_against_a_running_server(server, model_id, client):
    session = subprocess.run([sys.executable, "-m", "slmkit", "chat", "--url", server.url, "-n", "6"],
                             input="Hello\n/exit\n", capture_output=True, text=True, timeout=120)
    assert session.returncode == 0, session.stderr
    expected = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello"}],
                                              max_tokens=6, temperature=0).choices[0].message.content
    assert expected in session.stdout


def run_serve(*args, seconds=90):
    return subprocess.run([sys.executable, "-m", "slmkit", "serve", "--port", str(free_port()),
                           "--embedding-model", "minilm-l6", *args], capture_output=True, text=True, timeout=seconds,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_slm_serve_exits_with_the_reason_when_the_model_cannot_load(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"junk")
    for args, reason in ((["--model", str(broken)], "Cannot serve"),
                         (["--model", str(tmp_path / "missing")], "missing"),
                         (["--model", str(tiny_model_dir), "--backend", "nonsense"], "nonsense"),
                         (["--model", str(tiny_model_dir), "--prefill", "gpu"], "prefill must be auto, torch, llamacpp")):
        done = run_serve(*args)
        assert done.returncode == 1, (args, done.stderr[-500:])
        assert reason in done.stderr.splitlines()[-1], done.stderr[-500:]


def test_slm_serve_warns_loudly_when_exposed_without_a_key(tmp_path):
    # The model does not exist, so the server stops before it binds anything.
    done = run_serve("--host", "0.0.0.0", "--model", str(tmp_path / "missing"))
    assert done.returncode == 1 and "WARNING: --host 0.0.0.0 exposes this server" in done.stderr
    keyed = run_serve("--host", "0.0.0.0", "--api-key", "k", "--model", str(tmp_path / "missing"))
    assert keyed.returncode == 1 and "WARNING" not in keyed.stderr


def test_sigterm_with_drain_timeout_zero_aborts_in_flight_and_exits_fast(long_tiny_model_dir):
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(long_tiny_model_dir, port, drain_timeout="0")
    try:
        wait_healthy(url, process)
        children = psutil.Process(process.pid).children(recursive=True)
        # 4000 tokens: a 400-token answer from the tiny model could finish inside uvicorn's own
        # shutdown pause on a fast machine, and then there is nothing in flight to cut.
        body = {"model": str(long_tiny_model_dir), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000,
                "temperature": 0.7, "seed": 1, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            next(lines)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                rest = list(lines)
            except httpx.TransportError:
                rest = []
        assert "data: [DONE]" not in rest, "with no drain time the in-flight stream is cut, not finished"
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 5
        assert not [child for child in children if child.is_running()], "no child process outlives the server"
    finally:
        process.kill()
