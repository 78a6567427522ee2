"""Serving benchmark: `slm serve` beside llama.cpp's own `llama-server`, SmolLM2-135M-Instruct.

Every server is started alone (2 threads) and asked the same things over its OpenAI chat
endpoint, greedy:
- one stream of 96 tokens (decode tokens/s, median of 2; SLM_BENCH_REPEATS changes it);
- 8 concurrent streams of 96 tokens (all tokens / wall time);
- time to first token for a ~1,700-token system prompt seen for the first time ("cold") and
  again with another question ("warm": what a prefix cache saves).

The targets come from a **paired** run first: the default `slm serve`, llama-server on the same
file and `slm serve --backend torch` are all up at once and asked in turns, round after round
(the order rotated each round, a fresh cold prompt each round), so each round's ratio compares
servers that saw the same machine within seconds. This VM's speed drifts by ±20 % between runs
minutes apart; measuring each server alone, one after another, put that drift into the ratio.
The paired table prints each target's median ratio over the rounds and its range.

Rows: llama-server (`-np 8`) on the q4_k_m file `slm export gguf` writes, on the Q4_1 file the
package ships and on a q8_0 export; `slm serve --backend torch` (the PyTorch path, the default
before issue 19); `slm serve` as it is by default now; `slm serve --backend llamacpp` on the
same q4_k_m file. Prints a markdown table and the ratios the targets in docs/benchmarks.md use.
Then `slm generate`'s decode speed beside a bare llama-cpp-python loop on the same file
(`--generate-only` runs just that).

    python bench/serve.py [--llama-server PATH] [--rounds N] [--paired-only]   (or SLM_LLAMA_SERVER=PATH)

llama-server is built from llama-cpp-python's source distribution outside the repository
(docs/benchmarks.md says how); without it the peer rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
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


def long_system_prompts(count: int = 1, tokens: int = 1700) -> list[str]:
    """``count`` different texts of ~``tokens`` tokens of English prose (SmolLM2's tokenizer)
    from Python's documentation: consecutive windows, so none is a prefix of another."""
    from transformers import AutoTokenizer

    from slmkit.export.parity import held_out_text
    from slmkit.references import resolve_hf

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf("smollm2-135m").path))
    ids = tokenizer(held_out_text(tokens * 6 * count), add_special_tokens=False)["input_ids"]
    if len(ids) < tokens * count:
        raise RuntimeError(f"Python's documentation gave {len(ids)} tokens, {tokens * count} are needed")
    return [tokenizer.decode(ids[i * tokens:(i + 1) * tokens]) for i in range(count)]


def one_stream(url: str, model: str) -> float:
    return chat(url, [{"role": "user", "content": STORIES[0]}], TOKENS, model)[1]


def eight_streams(url: str, model: str) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: chat(url, [{"role": "user", "content": s}], TOKENS, model), STORIES))
    return sum(r[2] for r in results) / (time.perf_counter() - started)


def ttft_cold_warm(url: str, system: str, model: str) -> tuple[float, float]:
    cold = chat(url, [{"role": "system", "content": system}, {"role": "user", "content": "What is this about?"}], 4,
                model)
    warm = chat(url, [{"role": "system", "content": system}, {"role": "user", "content": "Summarize it."}], 4, model)
    return cold[0], warm[0]


def measure(url: str, system: str, model: str) -> dict:
    one = [one_stream(url, model) for _ in range(REPEATS)]
    aggregate = eight_streams(url, model)
    cold, warm = ttft_cold_warm(url, system, model)
    return {"one_stream": statistics.median(one), "eight_streams": aggregate, "ttft_cold": cold, "ttft_warm": warm}


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


class Server:
    """One server process on a free port, up and warmed when the ``with`` block starts."""

    def __init__(self, command: list[str], what: str):
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.what = what
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = command[command.index("--model") + 1] if "--model" in command else "m"  # slm serve checks it

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(self.process, self.url, self.what)
            chat(self.url, [{"role": "user", "content": "Hi"}], 4, self.model)  # warm-up (first-call allocations)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_server(command: list[str], what: str, system: str) -> dict:
    with Server(command, what) as server:
        return measure(server.url, system, server.model)


def paired(commands: dict[str, list[str]], rounds: int, systems: list[str]) -> dict[str, dict[str, list[float]]]:
    """Every server up at once, asked in turns: per server, each metric's value in every round.
    The order is rotated each round so no server always goes first (or right after another's
    burst); each round's cold prompt is new to every server."""
    names = list(commands)
    values = {name: {"one_stream": [], "eight_streams": [], "ttft_cold": [], "ttft_warm": []} for name in names}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(Server(command, name)) for name, command in commands.items()}
        for index in range(rounds):
            order = names[index % len(names):] + names[:index % len(names)]
            if index % 2:
                order.reverse()
            for name in order:
                values[name]["one_stream"].append(one_stream(servers[name].url, servers[name].model))
            for name in order:
                values[name]["eight_streams"].append(eight_streams(servers[name].url, servers[name].model))
            for name in order:
                cold, warm = ttft_cold_warm(servers[name].url, systems[index], servers[name].model)
                values[name]["ttft_cold"].append(cold)
                values[name]["ttft_warm"].append(warm)
            print(f"  round {index + 1}/{rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    return values


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
    params.n_ctx, params.n_batch, params.n_ubatch = 2048, 512, 512
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


def print_targets(mine: dict, peer: dict, torch_result: dict) -> None:
    """The issue's targets, default `slm serve` against llama-server on the same file, from the
    paired run: each argument maps a metric to its values round by round."""
    def ratios(metric: str, other: dict) -> list[float]:
        return [a / b for a, b in zip(mine[metric], other[metric], strict=True)]

    faster_cold = {"ttft_cold": [min(a, b) for a, b in zip(torch_result["ttft_cold"], peer["ttft_cold"], strict=True)]}
    checks = [("one stream >= 0.95x", ratios("one_stream", peer), 0.95, True),
              ("8 streams >= 1.0x", ratios("eight_streams", peer), 1.0, True),
              ("warm TTFT <= 2x", ratios("ttft_warm", peer), 2.0, False),
              ("cold TTFT <= faster of PyTorch and llama-server", ratios("ttft_cold", faster_cold), 1.0, False)]
    print("\n| target (default `slm serve` vs llama-server on the same file) | median ratio | range over rounds "
          "| rounds met | met (median) |")
    print("|---|---|---|---|---|")
    for name, values, bound, at_least in checks:
        ratio = statistics.median(values)
        held = sum((v >= bound) if at_least else (v <= bound) for v in values)
        met = ratio >= bound if at_least else ratio <= bound
        print(f"| {name} | {ratio:.2f}x | {min(values):.2f}–{max(values):.2f}x | {held}/{len(values)} | "
              f"{'yes' if met else 'no'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", default=os.environ.get("SLM_LLAMA_SERVER"),
                        help="Path to llama.cpp's llama-server binary (or set SLM_LLAMA_SERVER).")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of the paired run (default 5).")
    parser.add_argument("--paired-only", action="store_true",
                        help="Only the paired run of the targets (no one-server-at-a-time table, no generate).")
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
    systems = long_system_prompts(args.rounds + 1)
    system = systems[-1]  # the one-at-a-time table's cold prompt: not one the paired run used
    default_plan = serving_plan("smollm2-135m")
    with tempfile.TemporaryDirectory() as scratch:
        gguf = {"Q4_1 shipped": builtin_file("smollm2-135m")}
        if default_plan["backend"] == "llamacpp" and default_plan["file"] != gguf["Q4_1 shipped"].name:
            from slmkit.references import resolve

            default_file = resolve("smollm2-135m", prefer_gguf=True).path  # e.g. the f16 file written at import
            gguf["default file"] = default_file / "model.gguf" if default_file.is_dir() else default_file
        same_name = "default file" if "default file" in gguf else "Q4_1 shipped"
        default_row = f"`slm serve` (default: {default_plan['backend']}, {default_plan['file']})"
        torch_row = "`slm serve --backend torch` (PyTorch fp32)"
        peer_rows = {name: f"`llama-server -np 8`, {name}" for name in ("default file", "Q4_1 shipped", "q4_k_m",
                                                                          "q8_0")}
        print(f"SmolLM2-135M-Instruct, {THREADS} threads, {os.cpu_count()} cores, greedy; {TOKENS}-token streams; "
              f"~1,700-token system prompt; load average at the start {os.getloadavg()[0]:.1f}\n")
        if peer:
            commands = {default_row: slm_serve_command("smollm2-135m", "auto"),
                        peer_rows[same_name]: llama_server_command(peer, gguf[same_name]),
                        torch_row: slm_serve_command("smollm2-135m", "torch")}
            print(f"Paired run: {len(commands)} servers up at once, asked in turns, {args.rounds} rounds", flush=True)
            values = paired(commands, args.rounds, systems[:args.rounds])
            print("\n| server (paired) | 1 stream tok/s | 8 streams tok/s | TTFT cold (s) | TTFT warm (s) |")
            print("|---|---|---|---|---|")
            for what, v in values.items():
                m = {metric: statistics.median(series) for metric, series in v.items()}
                print(f"| {what} | {m['one_stream']:.1f} | {m['eight_streams']:.1f} | {m['ttft_cold']:.2f} | "
                      f"{m['ttft_warm']:.3f} |")
            print(f"\n(medians over {args.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f})")
            print_targets(values[default_row], values[peer_rows[same_name]], values[torch_row])
        if args.paired_only:
            return
        files = {"q4_k_m": export_gguf("smollm2-135m", "q4_k_m", Path(scratch) / "q4_k_m", check=False).path,
                 "q8_0": export_gguf("smollm2-135m", "q8_0", Path(scratch) / "q8_0", check=False).path}
        gguf.update({name: path / "model.gguf" for name, path in files.items()})
        same_file_row = "`slm serve --backend llamacpp`, the same q4_k_m file"
        rows = [(peer_rows[name], llama_server_command(peer, gguf[name])) if peer else None
                for name in ("default file", "Q4_1 shipped") if name in gguf]
        rows += [(default_row, slm_serve_command("smollm2-135m", "auto")),
                 (torch_row, slm_serve_command("smollm2-135m", "torch")),
                 (peer_rows["q4_k_m"], llama_server_command(peer, gguf["q4_k_m"])) if peer else None,
                 (same_file_row, slm_serve_command(str(files["q4_k_m"]), "llamacpp")),
                 (peer_rows["q8_0"], llama_server_command(peer, gguf["q8_0"])) if peer else None]
        rows = [row for row in rows if row is not None]
        print("\nEach server alone, one after another (every row of the issue's table; ratios between rows carry "
              "the machine's drift between them):\n")
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
    same_file, peer_q4km = results[same_file_row], results[peer_rows["q4_k_m"]]
    print(f"\nq4_k_m, slm serve --backend llamacpp / llama-server: one stream "
          f"{same_file['one_stream'] / peer_q4km['one_stream']:.2f}x, 8 streams "
          f"{same_file['eight_streams'] / peer_q4km['eight_streams']:.2f}x")


if __name__ == "__main__":
    main()
