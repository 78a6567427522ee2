"""Edge formats on SmolLM2-135M: every format × backend and the peers, in one run.

Runs `slm bench smollm2-135m` (slmkit.bench.run_bench): PyTorch fp32, GGUF f16/q8_0/q4_k_m on
slmkit's llama.cpp backend, ONNX fp32/int8 on the ONNX Runtime backend, raw llama-cpp-python
on the original bundled GGUF and on slmkit's q4_k_m file, and plain transformers generate —
2 threads each, each row in its own process. Prints the markdown table with the target ratios
and writes the bar chart. Missing exports are made first (in the store, or in --workdir).
Usage: python bench/export.py [--chart docs/export-bench.png] [--tokens 128] [--workdir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slmkit.bench import markdown_table, run_bench, write_chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="where exports go (default: the store)")
    args = parser.parse_args()
    results = run_bench(args.model, tokens=args.tokens, threads=args.threads, workdir=args.workdir,
                        progress=lambda text: print(f"... {text}", flush=True))
    print(markdown_table(results))
    if args.chart:
        write_chart(results, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
