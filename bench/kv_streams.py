"""One KV cache shared by all sequences (unified) against one KV stream per sequence, as the
llama.cpp backend decodes 8 streams: a bare llama-cpp-python loop, no server.

8 sequences of 40 prompt tokens each decode 96 steps together (one token each per
``llama_decode``) on the bundled model's default GGUF (f16), 2 threads; each mode runs in a
fresh process, the modes interleaved, and the median step time of each round is printed with
the ratio. Flash attention is llama.cpp's default (auto) unless ``--flash-attn on|off``.

    python bench/kv_streams.py [--rounds 3] [--flash-attn auto|on|off]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

STEPS, PROMPT, STREAMS = 96, 40, 8


def measure(unified: bool, flash_attn: int) -> float:
    """Median ms per 8-token decode step, in this process."""
    import time

    import llama_cpp
    import numpy as np
    from llama_cpp import _internals

    from slmkit.engine.llamacpp_backend import has_amx
    from slmkit.references import resolve

    path = resolve("smollm2-135m", prefer_gguf=True).path
    path = path / "model.gguf" if path.is_dir() else path
    model_params = llama_cpp.llama_model_default_params()
    model_params.use_extra_bufts = not has_amx()  # as the backend loads it
    model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
    params = llama_cpp.llama_context_default_params()
    params.n_seq_max = STREAMS + 1
    params.n_ctx = 8192 if unified else (STREAMS + 1) * 2048
    params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = 2
    params.kv_unified = unified
    params.flash_attn_type = flash_attn
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    rng = np.random.default_rng(0)

    def feed(items):
        n = 0
        for seq, start, tokens in items:
            for i, token in enumerate(tokens):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = int(token), start + i, 1
                batch.seq_id[n][0], batch.logits[n] = seq, i == len(tokens) - 1
                n += 1
        batch.n_tokens = n
        if llama_cpp.llama_decode(context.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    for seq in range(STREAMS):
        feed([(seq, 0, rng.integers(100, 40000, PROMPT))])
    times = []
    for step in range(STEPS):
        started = time.perf_counter()
        feed([(seq, PROMPT + step, [rng.integers(100, 40000)]) for seq in range(STREAMS)])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--child", choices=("unified", "streams"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    flash = {"auto": -1, "off": 0, "on": 1}[args.flash_attn]
    if args.child:
        print(measure(args.child == "unified", flash))
        return
    rows = []
    for _ in range(args.rounds):
        round_ms = {}
        for mode in ("unified", "streams"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--flash-attn", args.flash_attn],
                                 capture_output=True, text=True, check=True).stdout
            round_ms[mode] = float(out.strip().splitlines()[-1])
        rows.append(round_ms)
    print(f"SmolLM2-135M f16, {STREAMS} streams x {PROMPT}-token prompts, {STEPS} steps, 2 threads, "
          f"flash attention {args.flash_attn}\n")
    print("| round | unified cache ms/step | one stream per sequence ms/step | streams / unified speed |")
    print("|---|---|---|---|")
    for index, r in enumerate(rows, 1):
        print(f"| {index} | {r['unified']:.1f} | {r['streams']:.1f} | {r['unified'] / r['streams']:.3f}x |")
    ratio = statistics.median(r["unified"] / r["streams"] for r in rows)
    print(f"\nmedian: one KV stream per sequence decodes {ratio:.3f}x as fast as one unified cache")


if __name__ == "__main__":
    main()
