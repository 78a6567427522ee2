"""Security defaults and hostile input: keys on every route, host check, size limits, and
malformed bodies that must be 4xx, never 5xx, never leaking internals."""

import base64
import json
import re
import socket
import time

import httpx
import pytest

from conftest import LiveServer

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir):
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], embedding_models=[], api_keys=[KEY],
                              max_body_bytes=64 * 1024, max_tokens_limit=100, default_max_tokens=20)
    with LiveServer(settings) as live:
        yield live


def test_every_route_but_health_needs_the_key(keyed):
    routes = [(method, route.path) for route in keyed.app.routes for method in getattr(route, "methods", ())
              if method not in ("HEAD", "OPTIONS")]
    assert len(routes) >= 10, routes
    for method, path in routes:
        url = keyed.url + path.replace("{model_id:path}", "x")
        response = httpx.request(method, url, json={})
        if path == "/health":
            assert response.status_code == 200
        else:
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.request(method, url, json={}, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == (200 if path == "/health" else 401)


def test_key_as_bearer_or_basic(keyed, model_id):
    ok = httpx.get(keyed.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    page = httpx.get(keyed.url + "/")
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    assert httpx.get(keyed.url + "/", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_foreign_host_header_is_refused(server):
    response = httpx.get(server.url + "/v1/models", headers={"Host": "evil.example"})
    assert response.status_code == 403
    assert httpx.get(server.url + "/v1/models", headers={"Host": "localhost:1234"}).status_code == 200


def test_no_cors_by_default(server):
    response = httpx.get(server.url + "/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_oversized_bodies_get_413(keyed, model_id):
    headers = {"Authorization": f"Bearer {KEY}"}
    big = {"model": model_id, "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = httpx.post(keyed.url + "/v1/chat/completions", json=big, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked():
        for _ in range(100):
            yield b"x" * 1024

    response = httpx.post(keyed.url + "/v1/chat/completions", content=chunked(),
                          headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_huge_header_is_refused_quickly(server):
    started = time.perf_counter()
    try:
        status = httpx.get(server.url + "/v1/models", headers={"X-Big": "a" * 1_000_000}, timeout=5).status_code
    except httpx.ReadError:  # the server answered 400 and closed while the client was still sending
        status = 400
    assert 400 <= status < 500 and time.perf_counter() - started < 1.0
    assert httpx.get(server.url + "/health").status_code == 200


BAD_BODIES = [b"x{{", b"[]", b"42", b"null", b'{"model": "m", "messages": [', b"\xff\xfe\x00garbage", b"",
              b'{"model": 5, "messages": []}', b"[" * 10000 + b"]" * 10000, b'{"a":' * 5000 + b"1" + b"}" * 5000]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_bodies_are_400_in_the_openai_shape(server, body):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        response = httpx.post(server.url + path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (path, body[:20], response.status_code, response.text[:200])
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", 10**9, None, True])
def test_bad_max_tokens_values(keyed, model_id, value):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": value}
    response = httpx.post(keyed.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    if value is None:
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] <= 20
    else:
        assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("field,value", [("temperature", -1), ("temperature", "hot"), ("top_p", 0), ("stop", [""]),
                                         ("stop", ["a", "b", "c", "d", "e"]), ("messages", []),
                                         ("messages", [{"role": "robot", "content": "x"}]), ("seed", 2**70),
                                         ("logprobs", True), ("tools", [{"type": "function"}]),
                                         ("response_format", {"type": "json_schema"}), ("n", 5)])
def test_bad_fields_are_400_naming_the_parameter(server, model_id, field, value):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, field: value}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].split(".")[0] == field
    ok = httpx.post(server.url + "/v1/chat/completions",
                    json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200, "the server is not wedged by a bad request"


def test_wrong_content_type_is_4xx(server, model_id):
    body = json.dumps({"model": model_id, "messages": [{"role": "user", "content": "hi"}]})
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers)
        assert 400 <= response.status_code < 500


def test_error_bodies_never_leak_paths_or_tracebacks(server, model_id, tiny_model_dir):
    bodies = [b"x{{", json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(),
              json.dumps({"model": model_id, "messages": [{"role": "user", "content": "w " * 900}]}).encode()]
    for body in bodies:
        text = httpx.post(server.url + "/v1/chat/completions", content=body,
                          headers={"Content-Type": "application/json"}).text
        assert "Traceback" not in text and not re.search(r"/(root|home|tmp|usr)/", text.replace(str(tiny_model_dir), "")), text


def test_metrics_count_requests_and_tokens(server, client, model_id):
    client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    text = httpx.get(server.url + "/metrics").text
    assert re.search(r'slm_requests_total\{route="/v1/chat/completions",status="200"\} [1-9]', text)
    assert re.search(rf'slm_completion_tokens_total\{{model="{re.escape(model_id)}"\}} [1-9]', text)
    for name in ("slm_time_to_first_token_seconds_bucket", "slm_request_latency_seconds_bucket", "slm_queue_depth",
                 "slm_loaded_models", "slm_model_memory_bytes"):
        assert name in text


def test_openapi_schema_is_published(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/embeddings" in schema["paths"]


def random_value(rng, depth=0):
    keys = ["model", "messages", "role", "content", "max_tokens", "input", "stop"]
    makers = [
        lambda: None, lambda: True, lambda: rng.randint(-(2**70), 2**70), lambda: float("nan"),
        lambda: "x" * rng.randrange(0, 50), lambda: 1.5,
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(3))],
        lambda: {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        lambda: [{"role": random_value(rng, depth + 1), "content": random_value(rng, depth + 1)}],
    ]
    return makers[rng.randrange(len(makers) if depth < 3 else 6)]()


def test_fuzzed_bodies_never_cause_5xx(server, model_id):
    import random

    rng = random.Random(1234)
    fields = ["model", "messages", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "input",
              "encoding_format", "prompt", "stream_options"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(400):
            body = {field: random_value(rng) for field in rng.sample(fields, rng.randrange(1, 6))}
            if rng.random() < 0.5:
                body["model"] = model_id
            path = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"][i % 3]
            if body.get("stream") is True:
                body["stream"] = False
            response = http.post(path, content=json.dumps(body, allow_nan=True),
                                 headers={"Content-Type": "application/json"})
            assert response.status_code < 500, (path, body, response.text[:300])
            assert "error" in response.json() or response.status_code == 200


def test_request_heads_are_bounded_but_bodies_and_kept_alive_connections_are_not(server):
    """httptools (the parser `slm serve` runs when installed) has no bound on a request head of
    its own: server/http_protocol.py adds h11's. A head just under the bound, a body far over it
    and several requests on one connection still work."""
    from slmkit.server.http_protocol import MAX_HEAD_BYTES, http_protocol

    assert http_protocol() != "h11", "httptools is a dependency: the bounded protocol should be the one in use"
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES * 4))
        raw.settimeout(5)
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")
    near = {"X-Near": "a" * (MAX_HEAD_BYTES - 1024)}
    assert httpx.get(server.url + "/health", headers=near).status_code == 200
    with httpx.Client() as client:  # one kept-alive connection, several requests
        for _ in range(3):
            big = {"model": "m", "messages": [{"role": "user", "content": "hi " * 30_000}], "max_tokens": 1}
            assert client.post(server.url + "/v1/chat/completions", json=big).status_code in (200, 400, 404)
            assert client.get(server.url + "/health").status_code == 200
