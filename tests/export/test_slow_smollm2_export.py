"""The real SmolLM2-135M through GGUF q4_k_m on llama.cpp: the issue's question, answered."""

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_q4_k_m_answers_like_pytorch(tmp_path):
    from slmkit.engine import GenerationRequest, load_engine
    from slmkit.export.gguf import export_gguf
    from slmkit.export.parity import STOP_PROMPT
    from slmkit.generate import collect

    result = export_gguf("smollm2-135m", "q4_k_m", tmp_path / "smol-q4", check=False)
    assert "Q4_K" in result.card.metrics["tensor_types"]
    request = GenerationRequest(messages=[{"role": "user", "content": STOP_PROMPT}], max_new_tokens=64)
    answers = {}
    for backend, model in (("llamacpp", str(result.path)), ("torch", "smollm2-135m")):
        engine = load_engine(model, backend=backend, threads=2)
        answers[backend] = collect(engine.stream(request))
        engine.close()
    assert "Paris" in answers["llamacpp"].text and "Paris" in answers["torch"].text
    assert answers["llamacpp"].finish_reason == answers["torch"].finish_reason == "stop"
