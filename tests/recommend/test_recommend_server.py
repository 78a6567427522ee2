"""POST /v1/recommendations on `slm serve --model RECOMMENDER`: answers, validation, keys, reload."""

import pytest
from fastapi.testclient import TestClient
from rec_helpers import cyclic_rows, tiny_config, write_csv


@pytest.fixture()
def store(tmp_path, slm_home):
    from slmkit.recommend.train import train_recommender

    rows = cyclic_rows(users=20, length=10)
    log = write_csv(tmp_path / "log.csv", rows)
    train_recommender([log], "shop", tiny_config(max_steps=10))
    return log, rows


def client_for(models, **settings):
    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    app = create_app(ServerSettings(models=models, embedding_models=[], allowed_hosts=["testserver"], **settings))
    return TestClient(app)


def test_user_and_history_requests(store):
    from slmkit.recommend.predict import load_recommender

    seen = set(load_recommender("shop").histories["u1"])
    with client_for(["shop"]) as client:
        assert client.get("/health").status_code == 200  # a recommender is not loaded as a chat engine
        answer = client.post("/v1/recommendations", json={"user": "u1", "k": 5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "shop" and body["source"] == "model" and len(body["data"]) == 5
        assert [e["rank"] for e in body["data"]] == [1, 2, 3, 4, 5] and not {e["item"] for e in body["data"]} & seen
        fresh = client.post("/v1/recommendations", json={"model": "shop", "history": ["i2", 5, "zzz"], "k": 2})
        assert fresh.status_code == 200 and fresh.json()["unknown_items"] == ["5", "zzz"]
        empty = client.post("/v1/recommendations", json={"history": []})
        assert empty.json()["source"] == "popularity" and len(empty.json()["data"]) == 10


@pytest.mark.parametrize("body", [
    b"x{{", b"[]", b"42", b"null", b'{"user": "u1"', b"\xff\xfe",
    b'{"user": "u1", "k": 0}', b'{"user": "u1", "k": 101}', b'{"user": "u1", "k": "10"}', b'{"user": "u1", "k": 1.5}',
    b'{"user": "u1", "history": ["i1"]}', b"{}", b'{"history": [{"a": 1}]}', b'{"user": ["u1"]}',
    b'{"history": "i1"}', b'{"user": "u1", "exclude_seen": "yes"}',
])
def test_bad_bodies_are_400_with_the_openai_envelope(store, body):
    with client_for(["shop"]) as client:
        answer = client.post("/v1/recommendations", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert "/tmp" not in error["message"] and "Traceback" not in answer.text


def test_unknown_user_and_model_are_404(store):
    with client_for(["shop"]) as client:
        user = client.post("/v1/recommendations", json={"user": "nobody"})
        model = client.post("/v1/recommendations", json={"model": "other", "user": "u1"})
    assert user.status_code == 404 and user.json()["error"]["param"] == "user"
    assert model.status_code == 404 and "shop" in model.json()["error"]["message"]


def test_api_key_is_required(store):
    with client_for(["shop"], api_keys=["secret"]) as client:
        assert client.post("/v1/recommendations", json={"user": "u1"}).status_code == 401
        allowed = client.post("/v1/recommendations", json={"user": "u1"}, headers={"Authorization": "Bearer secret"})
        assert allowed.status_code == 200


def test_queue_bound_gives_429(store):
    with client_for(["shop"], max_batch_size=1, max_queue=0) as client:
        client.app.state.pool.acquire("shop")  # one request in flight fills the bound
        try:
            busy = client.post("/v1/recommendations", json={"user": "u1"})
        finally:
            client.app.state.pool.release("shop")
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"


def test_an_update_reaches_the_running_server(store):
    from slmkit.recommend.train import train_recommender

    log, rows = store
    with client_for(["shop"]) as client:
        assert client.post("/v1/recommendations", json={"user": "newcomer"}).status_code == 404
        write_csv(log, rows + [("newcomer", "i1", 1_900_000_000), ("newcomer", "i2", 1_900_000_001)])
        train_recommender([log], "shop", tiny_config(max_steps=4), resume=True)
        answer = client.post("/v1/recommendations", json={"user": "newcomer", "k": 3})
    assert answer.status_code == 200 and answer.json()["user"] == "newcomer"


def test_recommenders_are_listed_as_recommenders(store):
    with client_for(["shop"]) as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert listed["shop"]["kind"] == "recommender" and listed["shop"]["loaded"] is False
        assert client.post("/v1/recommendations", json={"user": "u1"}).status_code == 200
        one = client.get("/v1/models/shop").json()
        assert one["kind"] == "recommender" and one["loaded"] is True
        assert "shop" in client.get("/health").json()["loaded_models"]


def test_recommenders_count_in_the_memory_budget(store, tmp_path):
    import shutil

    from slmkit.models import models_dir

    shutil.copytree(models_dir() / "shop", models_dir() / "shop2")
    with client_for(["shop", "shop2"], max_memory_bytes=1) as client:  # room for one model at a time
        pool = client.app.state.pool
        assert client.post("/v1/recommendations", json={"model": "shop", "user": "u1"}).status_code == 200
        assert list(pool.loaded) == ["shop"] and pool.snapshot()["shop"]["memory_bytes"] > 0
        assert client.post("/v1/recommendations", json={"model": "shop2", "user": "u1"}).status_code == 200
        assert list(pool.loaded) == ["shop2"]  # the idle one was evicted to make room
        assert client.post("/v1/recommendations", json={"model": "shop", "user": "u1"}).status_code == 200
        assert list(pool.loaded) == ["shop"]
