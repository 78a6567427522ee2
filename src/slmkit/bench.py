"""``slm bench MODEL``: every format × backend of one model, and the peers, measured in one run.

Rows (:data:`ROWS`): PyTorch fp32; GGUF f16, q8_0, q4_k_m through slmkit's llama.cpp backend;
ONNX fp32 and int8 through the ONNX Runtime backend; and the peers — raw llama-cpp-python on
the original bundled GGUF and on slmkit's own q4_k_m file, and plain ``transformers``
``generate``. Missing exports are made first (without parity checks) in the store or ``workdir``.

Each row runs in its own Python process, so load time and peak RSS belong to that engine
alone. Columns: size on disk, load time, time to first token (short chat prompt), prefill
tok/s (a ~256-token prompt), decode tok/s (greedy, ``tokens`` new tokens), peak RSS and
perplexity on held-out text (:func:`slmkit.perplexity.perplexity`; peers show "-").
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROWS = ("torch-fp32", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "onnx-fp32", "onnx-int8",
        "peer-llama-cpp-original", "peer-llama-cpp-q4_k_m", "peer-transformers")
CHAT_PROMPT = "Write a short story about a lighthouse keeper."
PERPLEXITY_TOKENS = 1024


@dataclasses.dataclass
class BenchRow:
    row: str
    engine: str
    artifact: str
    size_bytes: int
    load_s: float
    time_to_first_token_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    decoded_tokens: int
    peak_rss_bytes: int
    perplexity: float | None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _prepare(model: str, rows: tuple[str, ...], workdir: Path | None, threads: int,
             progress: Callable[[str], None]) -> dict[str, str]:
    """Paths each row runs on, making missing exports first."""
    from slmkit.export import output_path, resolve_source
    from slmkit.export.gguf import GGUF_FILE, export_gguf
    from slmkit.export.onnx import export_onnx
    from slmkit.references import builtin_file

    source = resolve_source(model)
    paths = {"source": str(source.path)}

    def target(suffix: str) -> Path:
        return (Path(workdir) / f"{source.name}-{suffix}") if workdir else output_path(source, suffix, None)

    for quant in ("f16", "q8_0", "q4_k_m"):
        if f"gguf-{quant}" in rows or (quant == "q4_k_m" and "peer-llama-cpp-q4_k_m" in rows):
            folder = target(quant)
            if not folder.exists():
                progress(f"exporting GGUF {quant}")
                export_gguf(str(source.path), quant, folder, threads=threads, check=False)
            paths[f"gguf-{quant}"] = str(folder / GGUF_FILE)
    for int8, suffix in ((False, "onnx"), (True, "onnx-int8")):
        if f"onnx-{'int8' if int8 else 'fp32'}" in rows:
            folder = target(suffix)
            if not folder.exists():
                progress(f"exporting ONNX {'int8' if int8 else 'fp32'}")
                export_onnx(str(source.path), int8=int8, output=folder, threads=threads, check=False)
            paths[f"onnx-{'int8' if int8 else 'fp32'}"] = str(folder)
    if "peer-llama-cpp-original" in rows:
        paths["original-gguf"] = str(builtin_file("smollm2-135m"))
    return paths


def run_bench(model: str, rows: tuple[str, ...] = ROWS, tokens: int = 128, threads: int = 2,
              workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Measure each of ``rows`` for ``model`` in a fresh process; returns one BenchRow per row."""
    from slmkit.errors import InvalidRequestError

    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise InvalidRequestError(f"Unknown bench rows {unknown}. Choose from: {', '.join(ROWS)}.")
    progress = progress or (lambda text: None)
    paths = _prepare(model, rows, workdir, threads, progress)
    results = []
    for row in rows:
        progress(f"measuring {row}")
        spec = json.dumps({"row": row, "paths": paths, "tokens": tokens, "threads": threads})
        done = subprocess.run([sys.executable, "-m", "slmkit.bench", spec], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench row {row} failed:\n{done.stderr[-3000:]}")
        results.append(BenchRow(**json.loads(done.stdout.strip().splitlines()[-1])))
        progress(f"{row}: {json.dumps(results[-1].as_dict())}")
    return results


def _file_size(path: str) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".safetensors", ".data"))


def _long_prompt(tokenizer_encode: Callable[[str], list[int]]) -> str:
    from slmkit.export.parity import held_out_text

    text = held_out_text(4000)
    while len(tokenizer_encode(text)) > 256:
        text = text[: int(len(text) * 0.9)]
    return text


def _measure_engine(engine, tokens: int) -> dict:
    from slmkit.engine import GenerationRequest
    from slmkit.export.parity import held_out_text
    from slmkit.generate import collect
    from slmkit.perplexity import perplexity

    collect(engine.stream(GenerationRequest(prompt="Hello", max_new_tokens=4)))  # warm-up
    long_prompt = _long_prompt(engine.tokenize)
    prefill = collect(engine.stream(GenerationRequest(prompt=long_prompt, max_new_tokens=1))).stats
    chat = collect(engine.stream(GenerationRequest(messages=[{"role": "user", "content": CHAT_PROMPT}],
                                                   max_new_tokens=4))).stats
    decode = collect(engine.stream(GenerationRequest(prompt=held_out_text(600), max_new_tokens=tokens))).stats
    ppl = perplexity(engine, held_out_text(), window=256, max_tokens=PERPLEXITY_TOKENS).perplexity
    return {"time_to_first_token_s": chat.time_to_first_token_s,
            "prefill_tokens_per_s": prefill.prompt_tokens / prefill.time_to_first_token_s,
            "decode_tokens_per_s": decode.decode_tokens_per_s, "decoded_tokens": decode.completion_tokens,
            "perplexity": ppl}


def _measure_llama_cpp_peer(path: str, tokens: int, threads: int) -> dict:
    """Plain llama-cpp-python as its README shows it: Llama(...) and create_completion."""
    from slmkit.engine.llamacpp_backend import open_llama
    from slmkit.export.parity import held_out_text

    started = time.perf_counter()
    llm = open_llama(Path(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    load = time.perf_counter() - started
    llm.create_completion("Hello", max_tokens=4, temperature=0)
    long_prompt = _long_prompt(lambda text: llm.tokenize(text.encode(), add_bos=False))
    started = time.perf_counter()
    llm.create_completion(long_prompt, max_tokens=1, temperature=0)
    prefill_s = time.perf_counter() - started
    prefill_tokens = len(llm.tokenize(long_prompt.encode(), add_bos=False))
    chat_start = time.perf_counter()
    for _ in llm.create_chat_completion([{"role": "user", "content": CHAT_PROMPT}], max_tokens=4, temperature=0,
                                        stream=True):
        ttft = time.perf_counter() - chat_start
        break
    first, count, started = None, 0, time.perf_counter()
    for _ in llm.create_completion(held_out_text(600), max_tokens=tokens, temperature=0, stream=True):
        count += 1
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"load_s": load, "time_to_first_token_s": ttft, "prefill_tokens_per_s": prefill_tokens / prefill_s,
            "decode_tokens_per_s": (count - 1) / (end - first) if count > 1 else 0.0, "decoded_tokens": count,
            "perplexity": None}


def _measure_transformers_peer(path: str, tokens: int, threads: int) -> dict:
    """Plain transformers: from_pretrained and generate (greedy), timed around the calls."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmkit.export.parity import held_out_text

    torch.set_num_threads(threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    load = time.perf_counter() - started

    def timed(ids, new_tokens: int) -> float:
        started = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return time.perf_counter() - started

    with torch.inference_mode():
        timed(tokenizer("Hello", return_tensors="pt").input_ids, 4)
        long_ids = tokenizer(_long_prompt(tokenizer.encode), return_tensors="pt").input_ids
        prefill_s = timed(long_ids, 1)
        chat_ids = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}],
                                                 add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ttft = timed(chat_ids["input_ids"], 1)
        decode_ids = tokenizer(held_out_text(600), return_tensors="pt").input_ids
        first = timed(decode_ids, 1)
        total = timed(decode_ids, tokens)
    return {"load_s": load, "time_to_first_token_s": ttft, "prefill_tokens_per_s": long_ids.shape[1] / prefill_s,
            "decode_tokens_per_s": (tokens - 1) / (total - first), "decoded_tokens": tokens, "perplexity": None}


def _measure_row(row: str, paths: dict[str, str], tokens: int, threads: int) -> BenchRow:
    import resource

    if row == "peer-transformers":
        values, engine, artifact = _measure_transformers_peer(paths["source"], tokens, threads), "transformers", \
            paths["source"]
    elif row.startswith("peer-llama-cpp"):
        artifact = paths["original-gguf"] if row.endswith("original") else paths["gguf-q4_k_m"]
        values, engine = _measure_llama_cpp_peer(artifact, tokens, threads), "llama-cpp-python"
    else:
        from slmkit.engine.llamacpp_backend import LlamaCppEngine
        from slmkit.engine.onnx_backend import OnnxEngine
        from slmkit.engine.torch_backend import TorchEngine

        artifact = paths["source"] if row == "torch-fp32" else paths[row]
        started = time.perf_counter()
        if row == "torch-fp32":
            loaded, engine = TorchEngine(Path(artifact), threads=threads), "slmkit torch"
        elif row.startswith("gguf"):
            loaded, engine = LlamaCppEngine(Path(artifact), threads=threads), "slmkit llamacpp"
        else:
            loaded, engine = OnnxEngine(Path(artifact), threads=threads), "slmkit onnxruntime"
        values = {"load_s": time.perf_counter() - started, **_measure_engine(loaded, tokens)}
        loaded.close()
    size = _file_size(artifact if not row.startswith(("torch", "peer-transformers")) else paths["source"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return BenchRow(row=row, engine=engine, artifact=artifact, size_bytes=size, peak_rss_bytes=peak, **values)


def markdown_table(results: list[BenchRow]) -> str:
    """The bench as a markdown table, with decode speed relative to raw llama.cpp on the same file."""
    by_row = {r.row: r for r in results}
    lines = ["| row | engine | size MB | load s | TTFT s | prefill tok/s | decode tok/s | peak RSS MB | perplexity |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ppl = f"{r.perplexity:.3f}" if r.perplexity is not None else "-"
        lines.append(f"| {r.row} | {r.engine} | {r.size_bytes / 1e6:.0f} | {r.load_s:.2f} | "
                     f"{r.time_to_first_token_s:.3f} | {r.prefill_tokens_per_s:.0f} | {r.decode_tokens_per_s:.1f} | "
                     f"{r.peak_rss_bytes / 1e6:.0f} | {ppl} |")
    ratios = []
    pairs = (("gguf-q4_k_m", "peer-llama-cpp-q4_k_m", "slmkit llamacpp / raw llama-cpp-python, same q4_k_m file"),
             ("onnx-int8", "torch-fp32", "ONNX int8 / slmkit torch fp32"),
             ("torch-fp32", "peer-transformers", "slmkit torch fp32 / transformers generate"))
    for mine, peer, label in pairs:
        if mine in by_row and peer in by_row and by_row[peer].decode_tokens_per_s:
            ratios.append(f"- decode {label}: {by_row[mine].decode_tokens_per_s / by_row[peer].decode_tokens_per_s:.2f}x")
    f32 = by_row.get("torch-fp32")
    for quant in ("gguf-q8_0", "gguf-q4_k_m", "onnx-int8"):
        if f32 and f32.perplexity and quant in by_row and by_row[quant].perplexity:
            ratios.append(f"- perplexity {quant} vs torch fp32: {by_row[quant].perplexity / f32.perplexity - 1:+.2%}")
    return "\n".join(lines + [""] + ratios)


def write_chart(results: list[BenchRow], path: Path) -> None:
    """A PNG bar chart of decode tok/s per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.barh([r.row for r in results], [r.decode_tokens_per_s for r in results], color="#4c72b0")
    axis.set_xlabel("decode tokens/s (greedy, 2 threads)")
    axis.invert_yaxis()
    figure.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)


def main() -> None:
    """Child-process entry: measure one row given as JSON, print its result as JSON."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)
    spec = json.loads(sys.argv[1])
    row = _measure_row(spec["row"], spec["paths"], spec["tokens"], spec["threads"])
    print(json.dumps(row.as_dict()))


if __name__ == "__main__":
    main()
