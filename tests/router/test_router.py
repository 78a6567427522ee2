"""Routers: routes files, training (minilm-l6 + logistic regression), the artifact, decisions,
the fallback threshold and evaluation."""

import json

import numpy as np
import pytest
from route_data import HELDOUT, TRAIN, write_routes

from slmkit.errors import InvalidRequestError, ModelNotFoundError
from slmkit.router.routes import read_routes, specialist


@pytest.fixture()
def router_home(trained_router, monkeypatch):
    home, name = trained_router
    monkeypatch.setenv("SLM_HOME", str(home))
    return home, name


@pytest.mark.parametrize("line,message", [
    ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
    ('{"prompt": "", "route": "general"}', "'prompt' must be a non-empty string"),
    ('{"prompt": "hi"}', "'route' must be a non-empty string"),
])
def test_bad_routes_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "routes.jsonl"
    path.write_text('{"prompt": "hello", "route": "general"}\n' + line + "\n")
    with pytest.raises(InvalidRequestError) as error:
        read_routes([path])
    assert f"{path}:2" in error.value.message and message in error.value.message


def test_route_labels_name_their_specialist():
    assert specialist("general") == ("general", "")
    assert specialist("kb:pydoc") == ("knowledge_base", "pydoc")
    assert specialist("docs:invoice") == ("extractor", "invoice")
    assert specialist("recommend:movies") == ("recommender", "movies")
    assert specialist("my-lora") == ("chat", "my-lora")


def test_training_refuses_one_route_or_too_few_examples(tmp_path, slm_home):
    from slmkit.router.train import train_router

    one = write_routes(tmp_path / "one.jsonl", {"general": TRAIN["general"]})
    with pytest.raises(InvalidRequestError, match="at least two routes"):
        train_router([one], "x")
    few = write_routes(tmp_path / "few.jsonl", {"general": TRAIN["general"], "kb:pydoc": ["What is pass?"]})
    with pytest.raises(InvalidRequestError, match="fewer than 4 examples"):
        train_router([few], "x")


def test_router_routes_unseen_prompts_and_its_artifact_holds_no_pickle(router_home):
    from slmkit.artifact import read_card
    from slmkit.router.model import load_router, routers_dir

    home, name = router_home
    path = routers_dir() / name
    assert sorted(p.name for p in path.iterdir()) == ["classifier.safetensors", "router.json", "slm.json"]
    card = read_card(path)
    assert card.stage == "router" and card.metrics["routes"] == {route: 8 for route in TRAIN}
    router = load_router(name)
    # The loaded classifier reproduces the training prompts and generalizes to new wording.
    train = [(p, r) for r, ps in TRAIN.items() for p in ps]
    assert [d.route for d in router.decide_many([p for p, _ in train])] == [r for _, r in train]
    for route, prompts in HELDOUT.items():
        for prompt in prompts:
            decision = router.decide(prompt)
            assert decision.predicted == route, (prompt, decision)
            assert 0 < decision.confidence <= 1 and decision.seconds > 0


def test_below_the_threshold_the_fallback_answers(router_home):
    from slmkit.router.model import load_router

    router = load_router(router_home[1])
    router.threshold = 1.01  # nothing is that sure
    decision = router.decide("What does the pass statement do in Python?")
    assert decision.fell_back and decision.route == "general" and decision.predicted == "kb:pydoc"


def test_threshold_is_the_most_accurate_one_on_the_examples():
    from slmkit.router.train import choose_threshold

    routes = ["general", "kb:pydoc"]
    # Confident right answers, and one unsure wrong one whose true route is the fallback.
    probabilities = np.array([[0.1, 0.9], [0.95, 0.05], [0.45, 0.55], [0.2, 0.8]])
    threshold, accuracy = choose_threshold(probabilities, routes, ["kb:pydoc", "general", "general", "kb:pydoc"],
                                           "general")
    assert 0.55 < threshold <= 0.8 and accuracy == 1.0
    assert choose_threshold(probabilities, routes, ["kb:pydoc", "general", "kb:pydoc", "kb:pydoc"],
                            "general") == (0.0, 1.0)


def test_eval_reports_accuracy_per_route_and_confusion(router_home, tmp_path):
    from slmkit.router.evaluate import evaluate_router
    from slmkit.router.model import load_router

    swapped = {"general": HELDOUT["general"], "kb:pydoc": HELDOUT["recommend:movies"]}  # two deliberately wrong
    report = evaluate_router(load_router(router_home[1]), read_routes([write_routes(tmp_path / "h.jsonl", swapped)]))
    assert report["examples"] == 4 and report["accuracy"] == 0.5
    assert report["per_route"]["kb:pydoc"]["recall"] == 0.0 and report["per_route"]["general"]["recall"] == 1.0
    labels = report["labels"]
    assert report["confusion"][labels.index("kb:pydoc")][labels.index("recommend:movies")] == 2
    assert len(report["mistakes"]) == 2 and 0 < report["decision_ms_p50"] <= report["decision_ms_p95"]


def test_existing_router_is_not_overwritten_and_unknown_one_is_named(router_home, tmp_path):
    from slmkit.router.model import load_router
    from slmkit.router.train import train_router

    with pytest.raises(InvalidRequestError, match="exists"):
        train_router([write_routes(tmp_path / "t.jsonl", TRAIN)], router_home[1])
    with pytest.raises(ModelNotFoundError, match="demo"):
        load_router("nope")


def test_cli_train_eval_route(tmp_path, slm_home, routes_files):
    from typer.testing import CliRunner

    from slmkit.cli import app

    runner = CliRunner()
    train_file, heldout_file = routes_files
    result = runner.invoke(app, ["router", "train", str(train_file), "--name", "cli-router", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"]["train_examples"] == 24
    result = runner.invoke(app, ["router", "eval", "cli-router", str(heldout_file), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] == 1.0 and report["examples"] == 6
    result = runner.invoke(app, ["router", "route", "cli-router", "Recommend films like Rocky", "--json"])
    assert json.loads(result.output)["route"] == "recommend:movies"
    assert "cli-router" in runner.invoke(app, ["router", "list"]).output
    assert runner.invoke(app, ["router", "rm", "cli-router"]).exit_code == 0
    assert "No routers yet" in runner.invoke(app, ["router", "list"]).output


def test_only_the_start_of_a_huge_prompt_is_read(router_home):
    from slmkit.router.model import ROUTING_CHARS, load_router

    router = load_router(router_home[1])
    start = "What does the pass statement do in Python? "
    huge = start * (2_000_000 // len(start))  # a 2 MB message is not tokenized whole
    assert router.decide(huge).confidence == pytest.approx(router.decide(huge[:ROUTING_CHARS]).confidence)
    assert router.probabilities([huge]).shape == (1, len(router.routes))


def test_the_servers_router_counts_against_the_memory_budget(router_home, tiny_model_dir):
    """The router's embedding model is held by the pool as resident: loading it makes room under
    --max-memory (an idle model is unloaded), and it stays counted."""
    import asyncio

    from slmkit.server.metrics import ServerMetrics
    from slmkit.server.pool import ModelPool, _estimate_bytes
    from slmkit.server.routing import AUTO, AutoRouter, router_bytes
    from slmkit.server.settings import ServerSettings

    home, name = router_home
    chat = _estimate_bytes(tiny_model_dir)
    needed = router_bytes(name)
    assert needed > 50_000_000  # minilm-l6's weights, not only the classifier
    pool = ModelPool(ServerSettings(models=[str(tiny_model_dir)], embedding_models=[], max_memory_bytes=needed + chat // 2))

    async def load_chat():
        (await pool.checkout(tiny_model_dir.name)).release()

    asyncio.run(load_chat())
    assert list(pool.loaded) == [tiny_model_dir.name]
    pool._handed_out.clear()  # past the eviction grace period
    router = AutoRouter(name, ServerMetrics(pool), threads=1, pool=pool).router()
    assert pool.resident == {AUTO: router} and router.memory_bytes > 50_000_000
    assert list(pool.loaded) == []  # the idle chat model made room for the router
    pool.close()
