"""The real bundled SmolLM2-135M-Instruct: import, chat template, answers, streaming."""

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("real-home")
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(home)
    yield home
    if old is None:
        del os.environ["SLM_HOME"]
    else:
        os.environ["SLM_HOME"] = old


@pytest.fixture(scope="module")
def engine(real_home):
    from slmkit.engine import load_engine

    return load_engine("smollm2-135m", backend="torch")  # these tests check the float import


def test_import_writes_a_card_and_is_not_repeated(engine, real_home, monkeypatch):
    from slmkit.models import get_model
    from slmkit.references import resolve

    stored = get_model("smollm2-135m")
    assert stored.card.stage == "import" and stored.card.parameters == 134_515_008
    assert stored.card.source["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (stored.path / "model.safetensors").exists() and (stored.path / "chat_template.jinja").exists()

    import slmkit.formats.gguf_import as gguf_import

    def fail(*args, **kwargs):
        raise AssertionError("the built-in model was imported twice")

    monkeypatch.setattr(gguf_import, "convert_gguf_to_hf", fail)
    assert resolve("smollm2-135m").path == stored.path


def test_answers_a_question(engine):
    from slmkit.generate import generate

    result = generate(engine, "What is the capital of France?", max_new_tokens=32)
    assert "Paris" in result.text
    assert result.finish_reason == "stop", "the answer should end with <|im_end|>, not run to the limit"


def test_chat_template_is_chatml(engine):
    from slmkit.generate import build_request

    rendered = engine.tokenizer.decode(engine.prepare(build_request("Hi")))
    assert rendered.startswith("<|im_start|>system\n")
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_streaming_equals_whole_answer(engine):
    from slmkit.generate import build_request, generate

    prompt = "Name three colours, in Japanese and English, with emoji."
    streamed = list(engine.stream(build_request(prompt, max_new_tokens=60)))
    whole = generate(engine, prompt, max_new_tokens=60)
    assert "".join(c.text for c in streamed) == whole.text
    assert all("\ufffd" not in c.text for c in streamed)
    assert len(streamed) > 5
