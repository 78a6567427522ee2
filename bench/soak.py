"""Soak and fuzz benchmark for `slm serve` (loopback only; not a unit test).

Starts `slm serve` in a subprocess on 127.0.0.1 and, in one run:
1. fuzz: sends ``--fuzz`` schema-violating bodies (wrong types, None, huge ints, NaN, nesting
   10,000 deep, invalid UTF-8, truncated JSON, extreme sampling values) to the chat,
   completion and embedding routes, 8 at a time; every answer must be < 500;
2. soak: for ``--minutes``, rounds of ``--streams`` concurrent streaming clients (10 % hang
   up after two events) plus a few embedding requests; every client that stays must get
   ``[DONE]``, and after each round the server must hold no request slot
   (``slm_requests_in_flight``) and no active sequence.
The server's RSS, thread count and open file descriptors are sampled after the fuzz phase
and after every round; the table compares the first and last round (the peer is the server
itself at the start of the soak). By default it serves a tiny random model built here (the
soak measures the server, not the model); ``--model smollm2-135m`` runs it on the real one.

    python bench/soak.py --minutes 10 --streams 200 --fuzz 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mb": rss_kb / 1024, "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def gauge(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(float(m) for m in re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))


def random_value(rng: random.Random, depth: int = 0):
    keys = ["model", "messages", "role", "content", "max_tokens", "input", "stop", "temperature"]
    makers = [
        lambda: None, lambda: True, lambda: rng.randint(-(2**70), 2**70), lambda: float("nan"),
        lambda: float("inf"), lambda: "x" * rng.randrange(0, 50), lambda: rng.choice([1e-40, 1e-300, -1.0, 1.5, 1e300]),
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(3))],
        lambda: {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        lambda: [{"role": random_value(rng, depth + 1), "content": random_value(rng, depth + 1)}],
    ]
    return makers[rng.randrange(len(makers) if depth < 3 else 7)]()


def fuzz_body(rng: random.Random, model: str) -> bytes:
    kind = rng.random()
    if kind < 0.05:
        return b"[" * 10_000 + b"]" * 10_000  # nesting 10,000 deep
    if kind < 0.10:
        return b'{"model": "' + bytes([0xff, 0xfe, 0xc3]) + b'", "messages": []}'  # invalid UTF-8
    if kind < 0.15:
        whole = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        return whole[: rng.randrange(1, len(whole))]  # truncated
    fields = ["model", "messages", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed",
              "n", "stream", "input", "encoding_format", "prompt", "stream_options", "dimensions"]
    body = {field: random_value(rng) for field in rng.sample(fields, rng.randrange(1, 7))}
    if rng.random() < 0.6:
        body["model"] = model
    if rng.random() < 0.4:
        body["messages"] = [{"role": "user", "content": "hello"}]
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0 and rng.random() < 0.5:
        body["max_tokens"] = rng.randrange(1, 9)
    return json.dumps(body, allow_nan=True).encode()


def fuzz(url: str, model: str, count: int, seed: int = 1234) -> dict:
    rng = random.Random(seed)
    bodies = [(ROUTES[i % 3], fuzz_body(rng, model)) for i in range(count)]
    statuses: dict[int, int] = {}
    bad: list[str] = []

    def send(item):
        route, body = item
        response = httpx.post(url + route, content=body, headers={"Content-Type": "application/json"}, timeout=600)
        return route, body, response

    with ThreadPoolExecutor(8) as workers:
        for route, body, response in workers.map(send, bodies):
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                bad.append(f"{route} {body[:120]!r} -> {response.status_code} {response.text[:200]}")
    return {"statuses": statuses, "server_errors": bad}


def stream_client(url: str, model: str, prompt: str, hang_up: bool, max_tokens: int) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True}
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
            if response.status_code != 200:
                return f"status {response.status_code}"
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events += 1
                    if line == "data: [DONE]":
                        return "done"
                    if '"error"' in line:
                        return "error event"
                    if hang_up and events >= 2:
                        return "hung up"
    except httpx.HTTPError as exc:
        return f"transport {type(exc).__name__}"
    return "no [DONE]"


def soak_round(url: str, model: str, embedding_model: str, streams: int, max_tokens: int, rng: random.Random) -> dict:
    outcomes: dict[str, int] = {}
    with ThreadPoolExecutor(streams + 4) as workers:
        futures = [workers.submit(stream_client, url, model, f"Tell me about topic {rng.randrange(10**6)}.",
                                  i % 10 == 0, max_tokens) for i in range(streams)]
        embeds = [workers.submit(lambda: httpx.post(url + "/v1/embeddings", timeout=600, json={
            "model": embedding_model, "input": [f"sentence {i}" for i in range(16)]}).status_code) for _ in range(4)]
        for future in futures:
            outcomes[future.result()] = outcomes.get(future.result(), 0) + 1
        for future in embeds:
            key = f"embeddings {future.result()}"
            outcomes[key] = outcomes.get(key, 0) + 1
    drained_at = time.perf_counter()
    while (gauge(url, "slm_requests_in_flight") or gauge(url, "slm_active_sequences")) \
            and time.perf_counter() - drained_at < 30:
        time.sleep(0.1)
    return {"outcomes": outcomes, "in_flight": gauge(url, "slm_requests_in_flight"),
            "active": gauge(url, "slm_active_sequences"), "drain_s": time.perf_counter() - drained_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model reference (default: a tiny random model built here)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--fuzz", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="slm-soak-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_llama

        model = str(build_tiny_llama(workdir / "tiny-soak"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "slmkit", "serve", "--model", model, "--host", "127.0.0.1",
                               "--port", str(port), "--max-queue", str(args.streams + 16), "--default-max-tokens", "16",
                               "--max-tokens-limit", "64"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert server.poll() is None, (workdir / "server.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        served = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        chat_id = next(m["id"] for m in served if m["kind"] == "chat")
        embedding_id = next(m["id"] for m in served if m["kind"] == "embedding")
        # Load both models and warm the routes up first, so that model loading is not counted as growth.
        httpx.post(url + "/v1/embeddings", json={"model": embedding_id, "input": ["warm up"]}, timeout=600)
        httpx.post(url + "/v1/chat/completions", timeout=600, json={
            "model": chat_id, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4})
        start_stats = process_stats(server.pid)
        started = time.perf_counter()
        fuzzed = fuzz(url, chat_id, args.fuzz)
        fuzz_s = time.perf_counter() - started
        after_fuzz = process_stats(server.pid)
        rng = random.Random(7)
        rounds, samples = [], []
        soak_started = time.perf_counter()
        while time.perf_counter() - soak_started < args.minutes * 60 or not rounds:
            rounds.append(soak_round(url, chat_id, embedding_id, args.streams, args.max_tokens, rng))
            samples.append(process_stats(server.pid))
            print(f"round {len(rounds)}: {rounds[-1]} {samples[-1]}", file=sys.stderr, flush=True)
        soak_s = time.perf_counter() - soak_started
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    report(args, fuzzed, fuzz_s, start_stats, after_fuzz, rounds, samples, soak_s)


def report(args, fuzzed, fuzz_s, start_stats, after_fuzz, rounds, samples, soak_s) -> None:
    totals: dict[str, int] = {}
    for r in rounds:
        for key, value in r["outcomes"].items():
            totals[key] = totals.get(key, 0) + value
    kept = sum(v for k, v in totals.items() if k == "done")
    expected_kept = sum(args.streams - (args.streams + 9) // 10 for _ in rounds)
    first, last = samples[0], samples[-1]
    peak_rss = max(s["rss_mb"] for s in samples)
    five_xx = sum(v for k, v in fuzzed["statuses"].items() if k >= 500)
    print(f"\nmodel: {args.model or 'tiny random Llama (tests/tiny.py)'}; {args.fuzz} fuzzed bodies in {fuzz_s:.0f} s; "
          f"{len(rounds)} rounds of {args.streams} streams in {soak_s / 60:.1f} min\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| fuzzed bodies answered 5xx | {five_xx} of {args.fuzz} (statuses: {dict(sorted(fuzzed['statuses'].items()))}) |")
    print(f"| server RSS before / after fuzz | {start_stats['rss_mb']:.0f} / {after_fuzz['rss_mb']:.0f} MB "
          f"({after_fuzz['rss_mb'] - start_stats['rss_mb']:+.0f} MB) |")
    print(f"| streams completed with [DONE] (staying clients) | {kept} of {expected_kept} |")
    print(f"| other stream outcomes | { {k: v for k, v in totals.items() if k != 'done'} } |")
    print(f"| slots in flight / active sequences after each round (max) | "
          f"{max(r['in_flight'] for r in rounds):.0f} / {max(r['active'] for r in rounds):.0f} |")
    print(f"| drain time after a round (max) | {max(r['drain_s'] for r in rounds):.2f} s |")
    print(f"| RSS first round -> last round (peak) | {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB "
          f"({(last['rss_mb'] / first['rss_mb'] - 1) * 100:+.1f} %, peak {peak_rss:.0f} MB) |")
    print(f"| threads first -> last round | {first['threads']} -> {last['threads']} |")
    print(f"| open file descriptors first -> last round | {first['fds']} -> {last['fds']} |")
    if fuzzed["server_errors"]:
        print("\n5xx examples:\n" + "\n".join(fuzzed["server_errors"][:5]))


if __name__ == "__main__":
    main()
