"""Serving benchmark: `slm serve` beside llama.cpp's own `llama-server`, SmolLM2-135M-Instruct.

Every server is started alone (2 threads) and asked the same things over its OpenAI chat
endpoint, greedy:
- one stream of 96 tokens (decode tokens/s, median of 2; SLM_BENCH_REPEATS changes it);
- 8 concurrent streams of 96 tokens (all tokens / wall time);
- time to first token for a ~1,700-token system prompt seen for the first time ("cold") and
  again with another question ("warm": what a prefix cache saves).

Rows: llama-server (`-np 8`) on the q4_k_m file `slm export gguf` writes, on the Q4_1 file the
package ships and on a q8_0 export; `slm serve --backend torch` (the PyTorch path, the default
before issue 19); `slm serve` as it is by default now; `slm serve --backend llamacpp` on the
same q4_k_m file. Prints a markdown table and the ratios the targets in docs/benchmarks.md use.
Then `slm generate`'s decode speed beside a bare llama-cpp-python loop on the same file
(`--generate-only` runs just that).

    python bench/serve.py [--llama-server PATH]   (or SLM_LLAMA_SERVER=PATH)

llama-server is built from llama-cpp-python's source distribution outside the repository
(docs/benchmarks.md says how); without it the peer rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

THREADS = 2
TOKENS = 96
REPEATS = int(os.environ.get("SLM_BENCH_REPEATS", "2"))  # one-stream runs (median)
STORIES = [f"Write a long, detailed story about a {thing}." for thing in
           ("dragon", "lighthouse", "robot", "river", "library", "comet", "garden", "violin")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chat(url: str, messages: list[dict], max_tokens: int, model: str) -> tuple[float, float, int]:
    """(time to first token s, decode tokens/s, tokens) of one streamed greedy answer."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    deltas = usage = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=900) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens", 0)
            if event.get("choices") and event["choices"][0].get("delta", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                deltas += 1
    tokens = usage or deltas
    first = first or time.perf_counter()
    decode = (tokens - 1) / (last - first) if tokens > 1 and last and last > first else 0.0
    return first - started, decode, tokens


def long_system_prompt(tokens: int = 1700) -> str:
    """~``tokens`` tokens of English prose (SmolLM2's tokenizer) from Python's documentation."""
    from transformers import AutoTokenizer

    from slmkit.export.parity import held_out_text
    from slmkit.references import resolve_hf

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf("smollm2-135m").path))
    text = held_out_text(tokens * 6)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def measure(url: str, system: str, model: str) -> dict:
    one = [chat(url, [{"role": "user", "content": STORIES[0]}], TOKENS, model) for _ in range(REPEATS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: chat(url, [{"role": "user", "content": s}], TOKENS, model), STORIES))
    aggregate = sum(r[2] for r in results) / (time.perf_counter() - started)
    cold = chat(url, [{"role": "system", "content": system}, {"role": "user", "content": "What is this about?"}], 4,
                model)
    warm = chat(url, [{"role": "system", "content": system}, {"role": "user", "content": "Summarize it."}], 4, model)
    return {"one_stream": statistics.median(r[1] for r in one), "eight_streams": aggregate,
            "ttft_cold": cold[0], "ttft_warm": warm[0]}


def wait_healthy(process: subprocess.Popen, url: str, what: str) -> None:
    for _ in range(3000):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} at start")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become healthy")


def run_server(command: list[str], what: str, system: str) -> dict:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, what)
        model = command[command.index("--model") + 1] if "--model" in command else "m"  # slm serve checks it
        chat(url, [{"role": "user", "content": "Hi"}], 4, model)  # warm-up (first-call allocations)
        return measure(url, system, model)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def llama_server_command(binary: str, gguf: Path) -> list[str]:
    # --no-repack: llama.cpp's repacked (AMX) weights crash on multi-token batches on this CPU,
    # and slmkit runs without them too. -c: 2,048 tokens per slot for the 1,700-token prompt.
    return [binary, "-m", str(gguf), "-np", "8", "-c", str(8 * 2048), "-t", str(THREADS), "-tb", str(THREADS),
            "--no-repack", "--host", "127.0.0.1", "--port", "{port}", "--no-webui"]


def slm_serve_command(model: str, backend: str) -> list[str]:
    return [sys.executable, "-m", "slmkit", "serve", "--model", model, "--backend", backend, "--threads",
            str(THREADS), "--max-batch-size", "8", "--port", "{port}", "--embedding-model", "minilm-l6"]


def generate_against_raw_llama(rounds: int = 3, tokens: int = 128) -> None:
    """`slm generate`'s decode speed (the library call the verb wraps, default backend and file)
    beside a bare llama-cpp-python loop on the same file: one-token llama_decode calls and a
    NumPy argmax, nothing else (the most a Python caller of llama.cpp can get)."""
    import llama_cpp
    import numpy as np
    from llama_cpp import _internals

    from slmkit.engine import load_engine
    from slmkit.engine.llamacpp_backend import quiet_llama
    from slmkit.generate import build_request, collect

    engine = load_engine("smollm2-135m")
    prompt = "Write a long story about a lighthouse keeper and the sea."
    request = build_request(prompt, max_new_tokens=tokens, temperature=0.0)
    prompt_ids = engine.prepare(request)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 2048, 512, 256
    params.n_threads = params.n_threads_batch = THREADS
    params.no_perf = True
    with quiet_llama():  # its C-level log would otherwise flood the table
        raw = _internals.LlamaContext(model=engine.model, params=params, verbose=False)  # same weights, own KV

    def raw_decode() -> float:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(raw.ctx), True)
        ids = (llama_cpp.llama_token * len(prompt_ids))(*prompt_ids)
        llama_cpp.llama_decode(raw.ctx, llama_cpp.llama_batch_get_one(ids, len(prompt_ids)))
        one = (llama_cpp.llama_token * 1)()
        started = time.perf_counter()
        for _ in range(tokens - 1):
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(raw.ctx, -1), shape=(engine.vocab_size,))
            one[0] = int(row.argmax())
            llama_cpp.llama_decode(raw.ctx, llama_cpp.llama_batch_get_one(one, 1))
        return (tokens - 1) / (time.perf_counter() - started)

    ours, bare = [], []
    for _ in range(rounds):  # alternating, so both see the same machine
        result = collect(engine.stream(request))
        ours.append(result.stats.decode_tokens_per_s)
        bare.append(raw_decode())
    engine.close()
    mine, peer = statistics.median(ours), statistics.median(bare)
    print(f"\n`slm generate` decode vs a bare llama-cpp-python loop, same file ({engine.path.parent.name}/"
          f"{engine.path.name}), {tokens} tokens, median of {rounds}, load average {os.getloadavg()[0]:.1f}\n")
    print("| decoder | tok/s |\n|---|---|")
    print(f"| `slm generate` (library, default backend) | {mine:.1f} |\n| bare llama.cpp loop | {peer:.1f} |")
    print(f"\n| target | measured | met |\n|---|---|---|\n| `slm generate` decode >= 0.95x raw llama.cpp | "
          f"{mine / peer:.2f}x | {'yes' if mine / peer >= 0.95 else 'no'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", default=os.environ.get("SLM_LLAMA_SERVER"),
                        help="Path to llama.cpp's llama-server binary (or set SLM_LLAMA_SERVER).")
    parser.add_argument("--generate-only", action="store_true",
                        help="Only compare `slm generate`'s decode speed with a bare llama.cpp loop.")
    args = parser.parse_args()
    if args.generate_only:
        return generate_against_raw_llama()

    from slmkit.engine import serving_plan
    from slmkit.export.gguf import export_gguf
    from slmkit.references import builtin_file

    peer = args.llama_server or shutil.which("llama-server")
    if peer and not Path(peer).is_file():
        peer = None
    if not peer:
        print("llama-server not found: the llama.cpp rows are skipped. Build it (docs/benchmarks.md) and pass "
              "--llama-server PATH or set SLM_LLAMA_SERVER.\n")
    system = long_system_prompt()
    default_plan = serving_plan("smollm2-135m")
    with tempfile.TemporaryDirectory() as scratch:
        files = {"q4_k_m": export_gguf("smollm2-135m", "q4_k_m", Path(scratch) / "q4_k_m", check=False).path,
                 "Q4_1 shipped": builtin_file("smollm2-135m"),
                 "q8_0": export_gguf("smollm2-135m", "q8_0", Path(scratch) / "q8_0", check=False).path}
        gguf = {name: (path / "model.gguf" if path.is_dir() else path) for name, path in files.items()}
        if default_plan["backend"] == "llamacpp" and default_plan["file"] != gguf["Q4_1 shipped"].name:
            from slmkit.references import resolve

            default_file = resolve("smollm2-135m", prefer_gguf=True).path  # e.g. the f16 file written at import
            gguf["default file"] = default_file / "model.gguf" if default_file.is_dir() else default_file
        default_row = f"`slm serve` (default: {default_plan['backend']}, {default_plan['file']})"
        torch_row = "`slm serve --backend torch` (PyTorch fp32)"
        same_file_row = "`slm serve --backend llamacpp`, the same q4_k_m file"
        peer_rows = {name: f"`llama-server -np 8`, {name}" for name in gguf}
        # The rows the targets compare come first (in case a loaded machine cuts the run short).
        rows = [(peer_rows["default file"], llama_server_command(peer, gguf["default file"]))
                if peer and "default file" in gguf else None,
                (peer_rows["Q4_1 shipped"], llama_server_command(peer, gguf["Q4_1 shipped"])) if peer else None,
                (default_row, slm_serve_command("smollm2-135m", "auto")),
                (torch_row, slm_serve_command("smollm2-135m", "torch")),
                (peer_rows["q4_k_m"], llama_server_command(peer, gguf["q4_k_m"])) if peer else None,
                (same_file_row, slm_serve_command(str(files["q4_k_m"]), "llamacpp")),
                (peer_rows["q8_0"], llama_server_command(peer, gguf["q8_0"])) if peer else None]
        rows = [row for row in rows if row is not None]
        print(f"SmolLM2-135M-Instruct, {THREADS} threads, {os.cpu_count()} cores, greedy; {TOKENS}-token streams; "
              f"~1,700-token system prompt; load average at the start {os.getloadavg()[0]:.1f}\n")
        print("| server | 1 stream tok/s | 8 streams tok/s | TTFT cold (s) | TTFT warm (s) | load average |")
        print("|---|---|---|---|---|---|", flush=True)
        results = {}
        for what, command in rows:  # each row printed as soon as it is measured
            results[what] = r = run_server(command, what, system)
            print(f"| {what} | {r['one_stream']:.1f} | {r['eight_streams']:.1f} | {r['ttft_cold']:.2f} | "
                  f"{r['ttft_warm']:.3f} | {os.getloadavg()[0]:.1f} |", flush=True)
    generate_against_raw_llama()
    if not peer:
        return
    same = results[peer_rows["default file" if "default file" in gguf else "Q4_1 shipped"]]
    mine, torch_result = results[default_row], results[torch_row]
    faster_cold = min(torch_result["ttft_cold"], same["ttft_cold"])
    print("\n| target (default `slm serve` vs llama-server on the same file) | measured | met |")
    print("|---|---|---|")
    checks = [("one stream >= 0.95x", mine["one_stream"] / same["one_stream"], 0.95, True),
              ("8 streams >= 1.0x", mine["eight_streams"] / same["eight_streams"], 1.0, True),
              ("warm TTFT <= 2x", mine["ttft_warm"] / same["ttft_warm"], 2.0, False),
              ("cold TTFT <= faster of PyTorch and llama-server", mine["ttft_cold"] / faster_cold, 1.0, False)]
    for name, ratio, bound, at_least in checks:
        met = ratio >= bound if at_least else ratio <= bound
        print(f"| {name} | {ratio:.2f}x | {'yes' if met else 'no'} |")
    same_file, peer_q4km = results[same_file_row], results[peer_rows["q4_k_m"]]
    print(f"\nq4_k_m, slm serve --backend llamacpp / llama-server: one stream "
          f"{same_file['one_stream'] / peer_q4km['one_stream']:.2f}x, 8 streams "
          f"{same_file['eight_streams'] / peer_q4km['eight_streams']:.2f}x")


if __name__ == "__main__":
    main()
