"""`model: "kb:NAME"` through the server: grounded answers with their sources."""

import json

import httpx
import openai
import pytest

from conftest import LiveServer

DOCS = {
    "billing.md": "# Billing\n\n## Refunds\n\nRefunds are paid within 14 days to the original card. "
                  "Contact billing@example.com to request a refund.\n",
    "accounts.md": "# Accounts\n\n## Password reset\n\nTo reset your password, open Settings, choose Security "
                   "and press Reset password. A link is sent to your e-mail address.\n",
}


@pytest.fixture(scope="module")
def kb_server(tiny_model_dir, tmp_path_factory):
    import os

    from slmkit.kb.index import ingest
    from slmkit.server.settings import ServerSettings

    home = tmp_path_factory.mktemp("kb-home")
    docs = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(home)
    try:
        ingest("support", [docs])
        with LiveServer(ServerSettings(models=[str(tiny_model_dir)])) as live:
            yield live
    finally:
        if old is None:
            os.environ.pop("SLM_HOME")
        else:
            os.environ["SLM_HOME"] = old


def test_knowledge_bases_are_listed_as_models(kb_server):
    models = {m["id"]: m["kind"] for m in httpx.get(kb_server.url + "/v1/models").json()["data"]}
    assert models["kb:support"] == "knowledge_base"


def test_answer_carries_its_sources(kb_server):
    body = {"model": "kb:support", "messages": [{"role": "user", "content": "How do I reset my password?"}],
            "max_tokens": 8, "temperature": 0}
    whole = httpx.post(kb_server.url + "/v1/chat/completions", json=body).json()
    assert whole["sources"][0]["file"] == "accounts.md" and "Password reset" in whole["sources"][0]["section"]
    assert whole["abstained"] is False and whole["choices"][0]["message"]["content"]

    with httpx.stream("POST", kb_server.url + "/v1/chat/completions", json={**body, "stream": True}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    assert events[0]["sources"] == whole["sources"]
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert streamed == whole["choices"][0]["message"]["content"]


def test_unrelated_question_abstains(kb_server):
    body = {"model": "kb:support", "messages": [{"role": "user", "content": "Who painted the Mona Lisa?"}]}
    answer = httpx.post(kb_server.url + "/v1/chat/completions", json=body).json()
    assert answer["abstained"] is True and "don't know" in answer["choices"][0]["message"]["content"]


def test_unknown_knowledge_base_is_404_listing_known_ones(kb_server):
    client = openai.OpenAI(base_url=kb_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": "x"}])
    assert "kb:support" in missing.value.body["message"]


def test_chat_page_picks_a_knowledge_base_and_shows_sources(kb_server, browser_page):
    page = browser_page
    page.goto(kb_server.url + "/")
    page.wait_for_function("[...document.querySelector('#model').options].some(o => o.value === 'kb:support')")
    page.select_option("#model", "kb:support")
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "How are refunds paid?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant .sources", timeout=30_000)
    sources = page.inner_text(".msg.assistant .sources")
    assert "billing.md" in sources and "Refunds" in sources
