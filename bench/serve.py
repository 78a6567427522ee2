"""Serving benchmark on the real SmolLM2-135M-Instruct (run by `make bench`).

Measures, in one run:
- one stream through HTTP (`slm serve` in a subprocess, client here) vs the engine called
  directly in this process: time to first token and decode tokens/s;
- aggregate tokens/s with 1, 4 and 8 concurrent HTTP streams (batched decoding), median of
  three rounds each.
Prints a markdown table and writes docs/img/serve-bench.png.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

MODEL = os.environ.get("SLM_BENCH_MODEL", "smollm2-135m")
MAX_TOKENS = 128
REPEATS = 3
PROMPTS = [f"Write a long, detailed story about a {thing}." for thing in
           ("dragon", "lighthouse", "robot", "river", "library", "comet", "garden", "violin")]
ROOT = Path(__file__).resolve().parent.parent


def direct(engine, prompt):
    from slmkit.generate import build_request, collect

    result = collect(engine.stream(build_request(prompt, max_new_tokens=MAX_TOKENS)))
    return result.stats.time_to_first_token_s, result.stats.decode_tokens_per_s, result.stats.completion_tokens


def over_http(url, prompt):
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
    return first - started, decode, tokens


def start_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "slmkit", "serve", "--model", MODEL, "--port", str(port),
                                "--embedding-model", "minilm-l6", "--max-batch-size", "8"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def aggregate(url, concurrency):
    """Median over REPEATS rounds of: tokens all streams produced / wall time of the round."""
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda p: over_http(url, p), PROMPTS[:concurrency]))
        rates.append(sum(r[2] for r in results) / (time.perf_counter() - started))
    return statistics.median(rates)


def main():
    from slmkit.engine import load_engine

    engine = load_engine(MODEL)
    direct_runs = [direct(engine, PROMPTS[0]) for _ in range(REPEATS)]
    engine.close()
    process, url = start_server()
    try:
        over_http(url, PROMPTS[0])  # warm-up
        http_runs = [over_http(url, PROMPTS[0]) for _ in range(REPEATS)]
        throughput = {c: aggregate(url, c) for c in (1, 4, 8)}
    finally:
        process.terminate()
        process.wait(timeout=30)

    def median(runs, i):
        return statistics.median(r[i] for r in runs)

    d_ttft, d_tps = median(direct_runs, 0), median(direct_runs, 1)
    h_ttft, h_tps = median(http_runs, 0), median(http_runs, 1)
    print(f"model {MODEL}, {MAX_TOKENS} new tokens, greedy, median of {REPEATS}, {os.cpu_count()} CPU cores\n")
    print("| path | time to first token (s) | decode tok/s | vs direct |")
    print("|---|---|---|---|")
    print(f"| engine, direct call | {d_ttft:.3f} | {d_tps:.1f} | 1.00x |")
    print(f"| HTTP stream (`slm serve`) | {h_ttft:.3f} | {h_tps:.1f} | {h_tps / d_tps:.2f}x |")
    print(f"\nHTTP overhead on decode tok/s: {100 * (1 - h_tps / d_tps):.1f}% (target < 10%)\n")
    print("| concurrent streams | aggregate tok/s | vs 1 stream |")
    print("|---|---|---|")
    for concurrency, value in throughput.items():
        print(f"| {concurrency} | {value:.1f} | {value / throughput[1]:.2f}x |")
    print(f"\n8 streams vs 1: {throughput[8] / throughput[1]:.2f}x (target >= 3x)")
    plot(throughput, d_tps, h_tps)


def plot(throughput, direct_tps, http_tps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["direct", "HTTP"], [direct_tps, http_tps], color=["#888", "#2f6feb"])
    left.set_title("one stream: decode tok/s")
    right.bar([str(c) for c in throughput], list(throughput.values()), color="#2f6feb")
    right.set_title("aggregate tok/s by concurrent streams")
    right.set_xlabel("concurrent streams")
    figure.suptitle(f"slm serve, {MODEL}, {os.cpu_count()} CPU cores")
    figure.tight_layout()
    out = ROOT / "docs" / "img" / "serve-bench.png"
    figure.savefig(out.with_suffix(".tmp.png"), dpi=100)
    os.replace(out.with_suffix(".tmp.png"), out)


if __name__ == "__main__":
    main()
