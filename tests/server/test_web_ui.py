"""The web chat page in real headless Chromium: load it, send a message, see a streamed answer."""

import time


def test_chat_page_streams_an_answer(server, model_id, client, browser_page, monkeypatch):
    page = browser_page
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert page.eval_on_selector("#model", "s => [...s.options].map(o => o.value)") == [model_id]
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.fill("#system", "Be brief.")
    page.fill("#prompt", "Hello there")
    page.click("#send")
    page.wait_for_selector(".msg.assistant .meta:not(:empty)", timeout=30_000)
    answer = page.eval_on_selector(".msg.assistant .text", "e => e.textContent")
    meta = page.inner_text(".msg.assistant .meta")
    assert page.inner_text(".msg.user") == "Hello there"
    assert answer.strip(), "the streamed answer is shown"
    assert "completion tokens" in meta and "tok/s" in meta
    expected = client.chat.completions.create(
        model=model_id, max_tokens=12, temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}])
    assert answer == expected.choices[0].message.content

    engine = server.pool.loaded[model_id]
    original = engine.stream

    def slow_stream(request):  # slow enough that the user can press Stop mid-answer
        def chunks():
            for chunk in original(request):
                time.sleep(0.05)
                yield chunk
        return chunks()

    monkeypatch.setattr(engine, "stream", slow_stream)
    page.fill("#max-tokens", "300")
    page.fill("#prompt", "Go on")
    page.click("#send")
    page.wait_for_function("(document.querySelectorAll('.msg.assistant .text')[1] || {}).textContent")
    page.click("#stop")
    page.wait_for_function("(document.querySelectorAll('.msg.assistant .meta')[1] || {}).textContent",
                           timeout=10_000)
    assert "stopped" in page.eval_on_selector_all(".msg.assistant .meta", "m => m[1].textContent")
    assert page.is_enabled("#send")
