"""Edge formats on SmolLM2-135M: every format × backend and the peers, in one run.

Runs `slm bench smollm2-135m` (slmkit.bench.run_bench): PyTorch fp32, GGUF f16/q8_0/q4_k_m on
slmkit's llama.cpp backend, ONNX fp32/int8 on the ONNX Runtime backend, raw llama-cpp-python
on the original bundled GGUF and on slmkit's q4_k_m file, and plain transformers generate —
2 threads each, each row in its own process. Prints the markdown table with the target ratios
and writes the bar chart. Missing exports are made first (in the store, or in --workdir).

On a shared machine, rows measured minutes apart see different load. ``--ab llama`` and
``--ab onnx`` measure the two speed targets interleaved instead (A, B, A, B, ... in one
process, same prompt, medians): slmkit's llama.cpp backend vs raw llama-cpp-python on the same
q4_k_m file, and ONNX int8 vs the PyTorch fp32 backend. ``--ab default`` compares the engine
``slm generate MODEL`` uses by default (llama.cpp on the built-in GGUF) with raw
llama-cpp-python on the same bundled file.
Usage: python bench/export.py [--chart docs/export-bench.png] [--tokens 128] [--workdir DIR]
       python bench/export.py --ab llama|onnx|default [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from slmkit.bench import markdown_table, run_bench, write_chart


def _engine_rate(engine, prompt: str, tokens: int) -> float:
    from slmkit.engine import GenerationRequest
    from slmkit.generate import collect

    return collect(engine.stream(GenerationRequest(prompt=prompt, max_new_tokens=tokens))).stats.decode_tokens_per_s


def _raw_llama_rate(llm, prompt: str, tokens: int) -> float:
    first, count = None, 0
    for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
        count += 1
        first = first or time.perf_counter()
    return (count - 1) / (time.perf_counter() - first)


def interleaved(which: str, model: str, tokens: int, rounds: int, threads: int) -> str:
    """Decode tok/s of slmkit vs its peer, alternating, as a markdown line per side and the ratio."""
    from slmkit.engine import load_engine
    from slmkit.engine.llamacpp_backend import open_llama
    from slmkit.export.parity import held_out_text
    from slmkit.references import builtin_file, resolve

    prompt = held_out_text(600)
    if which == "default":
        mine = load_engine(model, threads=threads)
        peer = open_llama(builtin_file(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
        sides = ((f"slm generate default ({type(mine).__name__}, {builtin_file(model).name})",
                  lambda: _engine_rate(mine, prompt, tokens)),
                 ("raw llama-cpp-python, same file", lambda: _raw_llama_rate(peer, prompt, tokens)))
    elif which == "llama":
        mine = load_engine(f"{model}-q4_k_m", backend="llamacpp", threads=threads)
        peer = open_llama(resolve(f"{model}-q4_k_m").path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
        sides = (("slmkit llamacpp, q4_k_m", lambda: _engine_rate(mine, prompt, tokens)),
                 ("raw llama-cpp-python, same file", lambda: _raw_llama_rate(peer, prompt, tokens)))
    else:
        mine = load_engine(f"{model}-onnx-int8", backend="onnxruntime", threads=threads)
        peer = load_engine(model, backend="torch", threads=threads)
        sides = (("slmkit onnxruntime, int8", lambda: _engine_rate(mine, prompt, tokens)),
                 ("slmkit torch, fp32", lambda: _engine_rate(peer, prompt, tokens)))
    for _, measure in sides:
        measure()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name, _ in sides}
    for _ in range(rounds):
        for name, measure in sides:
            rates[name].append(measure())
    mine.close()
    peer.close()
    medians = [statistics.median(rates[name]) for name, _ in sides]
    lines = [f"- {name}: median {m:.1f} tok/s ({', '.join(f'{r:.1f}' for r in rates[name])})"
             for (name, _), m in zip(sides, medians, strict=True)]
    return "\n".join(lines + [f"- ratio: {medians[0] / medians[1]:.2f}x"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="where exports go (default: the store)")
    parser.add_argument("--ab", choices=("llama", "onnx", "default"), default=None, help="interleaved A/B of one target")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.ab:
        print(interleaved(args.ab, args.model, args.tokens, args.rounds, args.threads))
        return
    results = run_bench(args.model, tokens=args.tokens, threads=args.threads, workdir=args.workdir,
                        progress=lambda text: print(f"... {text}", flush=True))
    print(markdown_table(results))
    if args.chart:
        write_chart(results, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
