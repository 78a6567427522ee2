"""Post-export checks: does the exported model still answer like the model it came from?

The complaint users of other converters have most is a fine-tune that turns to garbage after
conversion (lost chat template, wrong end-of-turn token, a tokenizer that splits text
differently). After every export, :func:`check_parity` compares the export's engine with the
PyTorch model on the source artifact:

- greedy decoding of a set of chat prompts: the first ``tokens`` ids must be equal (required
  for unquantized exports; reported for quantized ones);
- a chat turn must end where the PyTorch turn ends (same finish reason, same length);
- the tokenizer the runtime itself uses (llama.cpp's, for GGUF) must split text the same way;
- perplexity on held-out text (one implementation, :func:`slmkit.perplexity.perplexity`) must
  stay within the budget of the quant type.

The result goes into the export's card under ``metrics.parity``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmkit.engine import GenerationRequest

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a Python list is.",
)
STOP_PROMPT = "What is the capital of France? Answer in one short sentence."
TOKENIZER_PROBE = "<|im_start|>user\nHello, world! 12345 naïve café 東京 😀  tabs\tand  spaces<|im_end|>\n"
# Allowed relative perplexity increase over the PyTorch fp32 model, per export type. The issue's
# targets are q8_0 ≤ 1% and q4_k_m ≤ 10%; the others are set from measurements (docs/export.md).
PERPLEXITY_BUDGETS = {
    "f32": 0.001, "f16": 0.005, "q8_0": 0.01, "q6_k": 0.03, "q5_k_m": 0.05, "q4_k_m": 0.10, "q4_0": 0.15,
    "onnx-fp32": 0.001, "onnx-int8": 0.10,
}


def held_out_text(chars: int = 8000) -> str:
    """English technical prose from Python's own documentation, away from the part the tiny
    test tokenizer was trained on. The same text is used by ``slm bench``."""
    from pydoc_data.topics import topics

    lines = [line for text in topics.values() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[3000:])[:chars]


def _greedy_ids(engine, prompt: str, max_new_tokens: int) -> tuple[list[int], str | None]:
    request = GenerationRequest(messages=[{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens)
    ids, reason = [], None
    for chunk in engine.stream(request):
        ids.extend(chunk.token_ids)
        reason = chunk.finish_reason or reason
    return ids, reason


def check_parity(reference_engine, engine, budget_key: str, exact: bool, tokens: int = 32,
                 perplexity_tokens: int = 1024, native_tokenize: Callable[[str], list[int]] | None = None,
                 stop_tokens: int = 128) -> dict:
    """Compare ``engine`` (an export) with ``reference_engine`` (PyTorch on the source).

    ``exact``: unquantized export, so greedy tokens and chat stops must match exactly.
    Returns a JSON-ready dict with ``passed`` and the measurements behind it.
    """
    from slmkit.perplexity import perplexity

    greedy = []
    for prompt in PROMPTS:
        want, _ = _greedy_ids(reference_engine, prompt, tokens)
        got, _ = _greedy_ids(engine, prompt, tokens)
        same = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
        greedy.append({"prompt": prompt, "match": want == got,
                       "first_difference": same if same is not None else (None if want == got else min(len(want),
                                                                                                        len(got)))})
    want_ids, want_reason = _greedy_ids(reference_engine, STOP_PROMPT, stop_tokens)
    got_ids, got_reason = _greedy_ids(engine, STOP_PROMPT, stop_tokens)
    chat_stop = {"prompt": STOP_PROMPT, "reference": [want_reason, len(want_ids)], "export": [got_reason, len(got_ids)],
                 "match": (want_reason, len(want_ids)) == (got_reason, len(got_ids))}

    text = held_out_text()
    source_ppl = perplexity(reference_engine, text, window=256, max_tokens=perplexity_tokens).perplexity
    export_ppl = perplexity(engine, text, window=256, max_tokens=perplexity_tokens).perplexity
    change = export_ppl / source_ppl - 1.0
    budget = PERPLEXITY_BUDGETS[budget_key]
    result = {
        "greedy_tokens": tokens,
        "greedy": greedy,
        "greedy_all_match": all(item["match"] for item in greedy),
        "chat_stop": chat_stop,
        "perplexity": {"reference": round(source_ppl, 4), "export": round(export_ppl, 4),
                       "relative_change": round(change, 5), "budget": budget, "within_budget": change <= budget,
                       "window": 256, "tokens": perplexity_tokens},
    }
    checks = [result["perplexity"]["within_budget"]]
    if native_tokenize is not None:
        result["runtime_tokenizer_match"] = native_tokenize(TOKENIZER_PROBE) == reference_engine.tokenize(
            TOKENIZER_PROBE)
        checks.append(result["runtime_tokenizer_match"])
    if exact:
        checks += [result["greedy_all_match"], chat_stop["match"]]
    result["passed"] = all(checks)
    return result


def reference_engine(source: Path, threads: int = 2):
    """The PyTorch engine every export is compared with."""
    from slmkit.engine.torch_backend import TorchEngine

    return TorchEngine(source, threads=threads)
