"""`slm serve --router NAME`: model "auto" is answered by the specialist the router picks (a chat
model, a knowledge base, the document extractor, a recommender), the response names it in a
field and a header, and /metrics counts the decisions."""

import json

import pytest
from fastapi.testclient import TestClient
from route_data import write_routes

TITLES = ["Blue Kettle", "Copper Pan", "Oak Cutting Board", "Chef Knife", "Salad Bowl", "Pepper Mill",
          "Tea Towel", "Bread Tin", "Usual Spatula, The", "Glass Jar", "Steel Whisk", "Spice Rack"]
ROUTES = {
    "general": ["Hello, how are you today?", "Write a short poem about autumn.", "What is the capital of Italy?",
                "Tell me a joke about dogs.", "How far away is the Sun?", "Suggest a name for my cat.",
                "Why is the sky blue?", "Give me three ideas for a rainy day."],
    "kb:support": ["How do I reset my password?", "I forgot my password, what do I do?",
                   "How long does a refund take?", "Where do I ask for a refund?", "Can I change my e-mail address?",
                   "My account is locked, how do I unlock it?", "How do I get my money back for an order?",
                   "Where are the security settings of my account?"],
    "docs:invoice": [f"Extract the fields of this invoice:\nInvoice No. {n}\nDate: 0{n % 9 + 1}/03/2024\n"
                     f"Total: ${n * 7}.00" for n in range(10, 18)],
    "recommend:shop": ["I bought the Blue Kettle. What else would I like?", "Recommend products like the Chef Knife.",
                       "I have a Salad Bowl and a Pepper Mill, suggest more items.",
                       "What goes well with a Copper Pan?", "Suggest kitchen items for someone who owns a Bread Tin.",
                       "I liked the Tea Towel, recommend similar products.", "What should I buy after a Glass Jar?",
                       "Shop suggestions for a Spice Rack owner?"],
}
DOCS = {"accounts.md": "# Accounts\n\n## Password reset\n\nTo reset your password, open Settings, choose Security and "
                       "press Reset password. A link is sent to your e-mail address.\n",
        "billing.md": "# Billing\n\n## Refunds\n\nRefunds are paid within 14 days to the original card.\n"}


@pytest.fixture(scope="module")
def routed(tiny_model_dir, tmp_path_factory):
    """A server with a tiny chat model, a knowledge base, a recommender and a router over them."""
    from slmkit.kb.index import ingest
    from slmkit.recommend.train import RecommendConfig, train_recommender
    from slmkit.router.train import train_router
    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    home = tmp_path_factory.mktemp("routed-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLM_HOME", str(home))
        docs = home / "docs"
        docs.mkdir()
        for name, text in DOCS.items():
            (docs / name).write_text(text)
        ingest("support", [docs])
        logs = home / "log.csv"
        logs.write_text("user,item,timestamp\n" + "".join(
            f"u{u},i{(u + s) % len(TITLES)},{1_700_000_000 + 60 * s}\n" for u in range(30) for s in range(8)))
        items = home / "items.jsonl"
        items.write_text("".join(json.dumps({"item": f"i{n}", "title": t}) + "\n" for n, t in enumerate(TITLES)))
        train_recommender([logs], "shop", RecommendConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, max_length=16, batch_size=8,
                                                          micro_batch_size=8, max_steps=5, validate_every=0,
                                                          checkpoint_every=0), items_file=items)
        train_router([write_routes(home / "routes.jsonl", ROUTES)], "helpdesk")
        settings = ServerSettings(models=[str(tiny_model_dir), "shop"], router="helpdesk", default_max_tokens=8,
                                  allowed_hosts=["testserver"])
        with TestClient(create_app(settings)) as client:
            yield client


def ask(client, text, **more):
    return client.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 8, "temperature": 0,
                                                     "messages": [{"role": "user", "content": text}], **more})


def test_general_prompt_is_answered_by_the_chat_model(routed, tiny_model_dir):
    response = ask(routed, "Write a limerick about a sleepy owl.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-slm-route"] == "general" and body["route"]["specialist"] == "general"
    assert body["model"] == tiny_model_dir.name and body["usage"]["completion_tokens"] > 0


def test_support_question_goes_to_the_knowledge_base(routed):
    response = ask(routed, "I can't remember my password. How can I reset it?")
    body = response.json()
    assert response.headers["x-slm-route"] == "kb:support" and body["model"] == "kb:support"
    assert body["sources"][0]["file"] == "accounts.md"


def test_invoice_goes_to_the_extractor_and_answers_json(routed):
    response = ask(routed, "Extract the fields of this invoice:\nInvoice No. 4711\nDate: 05/06/2024\nTotal: $99.00")
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-slm-route"] == "docs:invoice"
    assert json.loads(body["choices"][0]["message"]["content"]) == body["values"]
    assert set(body["values"]) >= {"invoice_number", "total_amount"}


def test_recommendation_request_gets_titles_after_the_items_named(routed):
    response = ask(routed, "I own the copper pan and the usual spatula. Recommend what to buy next.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-slm-route"] == "recommend:shop"
    assert body["named_items"] == ["i1", "i8"]
    titles = [entry["title"] for entry in body["recommendations"]]
    assert body["choices"][0]["message"]["content"].split("\n") == titles and len(titles) == 5
    assert not {"Copper Pan", "Usual Spatula, The"} & set(titles)  # items already owned are not recommended


def test_stream_names_the_route_in_the_header_and_first_event(routed):
    with routed.stream("POST", "/v1/chat/completions", json={
            "model": "auto", "stream": True, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Tell me a fun fact about whales."}]}) as response:
        assert response.headers["x-slm-route"] == "general"
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    assert events[0]["route"]["specialist"] == "general"


def test_metrics_count_routes_and_auto_is_listed(routed):
    ask(routed, "How long does a refund take?")
    metrics = routed.get("/metrics").text
    assert 'slm_router_decisions_total{fell_back="false",route="kb:support"}' in metrics
    models = {m["id"]: m["kind"] for m in routed.get("/v1/models").json()["data"]}
    assert models["auto"] == "router"


def test_auto_without_a_user_message_is_400(routed):
    response = routed.post("/v1/chat/completions", json={"model": "auto",
                                                         "messages": [{"role": "system", "content": "be nice"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_auto_without_a_router_is_404(tiny_model_dir):
    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    with TestClient(create_app(ServerSettings(models=[str(tiny_model_dir)], embedding_models=[],
                                              allowed_hosts=["testserver"]))) as client:
        response = ask(client, "hello")
    assert response.status_code == 404


def test_named_items_match_whole_titles_then_close_ones():
    from slmkit.recommend.model import Catalogue
    from slmkit.server.routing import named_items

    catalogue = Catalogue([f"i{n}" for n in range(len(TITLES))], {f"i{n}": t for n, t in enumerate(TITLES)})
    assert named_items("I liked The Usual Spatula and the blue kettle", catalogue) == ["i8", "i0"]
    assert named_items("something like the Copper Pann, and a Chef Knif", catalogue) == ["i1", "i3"]
    assert named_items("nothing from the shop here", catalogue) == []
