"""Which GGUF and which llama.cpp batch sizes the built-in model should run with.

For the shipped Q4_1 file and q8_0 / q4_k_m files exported from the float import, in one run:
- closeness to the float model: mean |difference| of per-token log-probabilities against the
  PyTorch float model on held-out text, and the perplexity of each;
- prefill: time to first token for a ~1,700-token prompt (prefix cache off) at several
  ``n_batch`` / ``n_ubatch`` sizes, beside the PyTorch float model;
- decode tokens/s of one greedy stream.

    python bench/llamacpp_settings.py  [--files q4_1 q8_0 q4_k_m] [--threads 2]

The q8_0 / q4_k_m files are exported once into a temporary folder (no parity check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

SIZES = ((512, 512), (2048, 512), (2048, 256), (2048, 128))


def long_request(tokens: int = 1700):
    from slmkit.engine import GenerationRequest
    from slmkit.export.parity import held_out_text

    system = held_out_text(tokens * 4)
    return GenerationRequest(messages=[{"role": "system", "content": system},
                                       {"role": "user", "content": "Summarize the text above in one line."}],
                             max_new_tokens=1)


def trim(engine, request, tokens: int = 1700):
    """Cut the system prompt so the rendered prompt is close to ``tokens`` tokens."""
    while engine.count_prompt_tokens(request) > tokens:
        text = request.messages[0]["content"]
        request.messages[0]["content"] = text[: int(len(text) * 0.97)]
    return request


def ttft(engine, request, repeats: int) -> float:
    from slmkit.generate import collect

    return statistics.median(collect(engine.stream(request)).stats.time_to_first_token_s for _ in range(repeats))


def decode_rate(engine, tokens: int = 96) -> float:
    from slmkit.engine import GenerationRequest
    from slmkit.generate import collect

    request = GenerationRequest(messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],
                                max_new_tokens=tokens)
    return statistics.median(collect(engine.stream(request)).stats.decode_tokens_per_s for _ in range(2))


def closeness(engine, reference_logprobs, ids) -> tuple[float, float]:
    import math

    got = engine.token_logprobs(ids)
    diff = statistics.fmean(abs(a - b) for a, b in zip(got, reference_logprobs, strict=True))
    return diff, math.exp(-statistics.fmean(got))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=["q4_1", "q8_0", "q4_k_m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import math

    from slmkit.engine.llamacpp_backend import LlamaCppEngine
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.export.gguf import export_gguf
    from slmkit.export.parity import held_out_text
    from slmkit.references import builtin_file, resolve, resolve_hf

    float_dir = resolve_hf("smollm2-135m").path
    torch_engine = TorchEngine(float_dir, threads=args.threads)
    ids = torch_engine.tokenize(held_out_text(6000))[:1024]
    reference = torch_engine.token_logprobs(ids)
    request = trim(torch_engine, long_request())
    prompt_tokens = torch_engine.count_prompt_tokens(request)
    torch_ttft = ttft(torch_engine, request, args.repeats)
    torch_rate = decode_rate(torch_engine)
    torch_engine.close()
    print(f"SmolLM2-135M-Instruct, {args.threads} threads, {os.cpu_count()} cores; prompt {prompt_tokens} tokens; "
          f"closeness on {len(ids)} held-out tokens\n")
    print("| file | size MB | mean abs logprob diff vs float | perplexity | n_batch/n_ubatch | TTFT s "
          "| vs PyTorch TTFT | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| PyTorch float32 | {sum(p.stat().st_size for p in float_dir.glob('*.safetensors')) / 1e6:.0f} | 0 "
          f"| {math.exp(-statistics.fmean(reference)):.3f} | - | {torch_ttft:.2f} | 1.00x | {torch_rate:.1f} |")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.files:
            if name == "q4_1":
                path, text_side = builtin_file("smollm2-135m"), resolve("smollm2-135m").path
            else:
                path = export_gguf("smollm2-135m", name, Path(scratch) / name, check=False).path / "model.gguf"
                text_side = None
            for n_batch, n_ubatch in SIZES:
                engine = LlamaCppEngine(path, threads=args.threads, batch_size=n_batch, ubatch_size=n_ubatch,
                                        prefix_cache_tokens=0, text_side=text_side)
                first = (n_batch, n_ubatch) == SIZES[0]
                diff, ppl = closeness(engine, reference, ids) if first else (None, None)
                seconds = ttft(engine, request, args.repeats)
                rate = decode_rate(engine) if first else None
                engine.close()
                print(f"| {name} | {path.stat().st_size / 1e6:.0f} | {'' if diff is None else f'{diff:.4f}'} | "
                      f"{'' if ppl is None else f'{ppl:.3f}'} | {n_batch}/{n_ubatch} | {seconds:.2f} | "
                      f"{torch_ttft / seconds:.2f}x | {'' if rate is None else f'{rate:.1f}'} |", flush=True)
    print(f"\n(measured {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
