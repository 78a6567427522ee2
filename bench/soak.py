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
import statistics
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
    return sum(float(m) for m in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M))


def server_stats(url: str, pid: int) -> dict:
    """The process's own numbers plus the server's leak gauges (asyncio tasks, Python threads)."""
    return {**process_stats(pid), "tasks": gauge(url, "slm_event_loop_tasks"), "py_threads": gauge(url, "slm_threads")}


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


def impatient_clients(url: str, model: str, count: int = 200, max_tokens: int = 10_000) -> dict:
    """RELIABILITY #13: ``count`` non-streaming requests for ``max_tokens`` tokens whose clients
    give up after 0.5 s; the server must drop them all, then answer a 10-token request in < 5 s."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0.7}

    def one(_) -> str:
        try:
            return f"status {httpx.post(url + '/v1/completions', json=body, timeout=0.5).status_code}"
        except httpx.TimeoutException:
            return "gave up"

    with ThreadPoolExecutor(count) as workers:
        outcomes: dict[str, int] = {}
        for outcome in workers.map(one, range(count)):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    given_up = time.perf_counter()
    while (gauge(url, "slm_requests_in_flight") or gauge(url, "slm_active_sequences")) \
            and time.perf_counter() - given_up < 60:
        time.sleep(0.1)
    drain_s = time.perf_counter() - given_up
    started = time.perf_counter()
    small = httpx.post(url + "/v1/completions", json={**body, "max_tokens": 10}, timeout=60)
    return {"outcomes": outcomes, "drain_s": drain_s, "small_status": small.status_code,
            "small_s": time.perf_counter() - started}


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


def start_server(args, workdir: Path) -> tuple[subprocess.Popen, str, object]:
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_llama

        model = str(build_tiny_llama(workdir / "tiny-soak", context=12288))  # room for 10k-token answers
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "slmkit", "serve", "--model", model, "--host", "127.0.0.1",
                               "--port", str(port), "--max-queue", str(args.streams + 16), "--default-max-tokens", "16",
                               "--max-tokens-limit", "10000"], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert server.poll() is None, (workdir / "server.log").read_text()[-2000:]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return server, url, log


def served_ids(url: str) -> tuple[str, str]:
    served = httpx.get(url + "/v1/models", timeout=30).json()["data"]
    chat_id = next(m["id"] for m in served if m["kind"] == "chat")
    embedding_id = next(m["id"] for m in served if m["kind"] == "embedding")
    # Load both models and warm the routes up first, so that model loading is not counted as growth.
    httpx.post(url + "/v1/embeddings", json={"model": embedding_id, "input": ["warm up"]}, timeout=600)
    httpx.post(url + "/v1/chat/completions", timeout=600, json={
        "model": chat_id, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4})
    return chat_id, embedding_id


def idle_sample(url: str, pid: int, seconds: float = 15.0) -> dict:
    """Stats after an idle pause: idle worker threads exit and in-flight garbage is gone, so what
    remains is what the server keeps."""
    time.sleep(seconds)
    return server_stats(url, pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["rounds", "load"], default="rounds",
                        help="rounds: fuzz, then bursts of --streams streams (RELIABILITY #2, #12); "
                             "load: 32 closed-loop clients of mixed traffic paced to --load x capacity (RELIABILITY #18)")
    parser.add_argument("--model", default=None, help="model reference (default: a tiny random model built here)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0,
                        help="traffic before the first sample of the soak (allocator and caches warm up)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--fuzz", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.7, help="load mode: target fraction of measured capacity")
    parser.add_argument("--save-baseline", type=Path, help="load mode: store this run's rate and TTFT here")
    parser.add_argument("--baseline", type=Path, help="load mode: reuse a stored run's pause and compare TTFT")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="slm-soak-"))
    server, url, log = start_server(args, workdir)
    try:
        chat_id, embedding_id = served_ids(url)
        if args.mode == "load":
            return load_soak(args, url, server.pid, chat_id, embedding_id)
        start_stats = server_stats(url, server.pid)
        started = time.perf_counter()
        fuzzed = fuzz(url, chat_id, args.fuzz)
        fuzz_s = time.perf_counter() - started
        after_fuzz = server_stats(url, server.pid)
        impatient = impatient_clients(url, chat_id)
        print(f"impatient clients: {impatient}", file=sys.stderr, flush=True)
        rng = random.Random(7)
        warm_started = time.perf_counter()
        while time.perf_counter() - warm_started < args.warmup_minutes * 60:
            warm = soak_round(url, chat_id, embedding_id, args.streams, args.max_tokens, rng)
            print(f"warm-up round: {warm} {server_stats(url, server.pid)}", file=sys.stderr, flush=True)
        rounds, samples = [], []
        soak_started = time.perf_counter()
        while time.perf_counter() - soak_started < args.minutes * 60 or not rounds:
            rounds.append(soak_round(url, chat_id, embedding_id, args.streams, args.max_tokens, rng))
            samples.append(server_stats(url, server.pid))
            print(f"round {len(rounds)}: {rounds[-1]} {samples[-1]}", file=sys.stderr, flush=True)
        soak_s = time.perf_counter() - soak_started
        idle = idle_sample(url, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    report(args, fuzzed, fuzz_s, start_stats, after_fuzz, impatient, rounds, samples, soak_s, idle)


LOAD_MIX = (("stream", 0.6), ("chat", 0.25), ("embeddings", 0.15))


def load_request(url: str, chat_id: str, embedding_id: str, kind: str, max_tokens: int, rng: random.Random) -> dict:
    """One request of the mixed load; returns its kind, status and (for streams) time to first token."""
    started = time.perf_counter()
    try:
        if kind == "embeddings":
            response = httpx.post(url + "/v1/embeddings", timeout=600, json={
                "model": embedding_id, "input": [f"sentence {rng.randrange(10**6)}" for _ in range(8)]})
            return {"kind": kind, "status": response.status_code, "s": time.perf_counter() - started}
        body = {"model": chat_id, "messages": [{"role": "user", "content": f"Tell me about {rng.randrange(10**6)}."}],
                "max_tokens": max_tokens, "temperature": 0.7, "stream": kind == "stream"}
        if kind == "chat":
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
            return {"kind": kind, "status": response.status_code, "s": time.perf_counter() - started}
        ttft, done = None, False
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
            for line in response.iter_lines():
                if ttft is None and line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                    ttft = time.perf_counter() - started
                done = done or line == "data: [DONE]"
            return {"kind": kind, "status": response.status_code if done else 599, "ttft": ttft,
                    "s": time.perf_counter() - started}
    except httpx.HTTPError as exc:
        return {"kind": kind, "status": 598, "error": type(exc).__name__, "s": time.perf_counter() - started}


CLIENTS = 32


def closed_loop(url, chat_id, embedding_id, args, seconds: float, think_s: float, rng_seed: int,
                measure_from: float | None = None, on_tick=None) -> list[dict]:
    """``CLIENTS`` clients, each sending the mix above back to back with an exponential pause
    of mean ``think_s`` between requests. Closed-loop on purpose: when the machine slows down
    the offered load falls with it instead of piling up a backlog."""
    stop = time.perf_counter() + seconds
    results: list[dict] = []

    def client(index: int) -> None:
        rng = random.Random(rng_seed * 1000 + index)
        while time.perf_counter() < stop:
            kind = rng.choices([k for k, _ in LOAD_MIX], [w for _, w in LOAD_MIX])[0]
            sent = time.perf_counter()
            result = load_request(url, chat_id, embedding_id, kind, args.max_tokens, rng)
            results.append({"t_min": (sent - (measure_from or sent)) / 60, **result})
            if think_s:
                time.sleep(rng.expovariate(1 / think_s))

    with ThreadPoolExecutor(CLIENTS + 1) as workers:
        futures = [workers.submit(client, i) for i in range(CLIENTS)]
        while on_tick and not all(f.done() for f in futures):
            on_tick()
            time.sleep(0.5)
        for future in futures:
            future.result()
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load_soak(args, url: str, pid: int, chat_id: str, embedding_id: str) -> None:
    """RELIABILITY #18: ``CLIENTS`` closed-loop clients whose pauses hold the server near --load
    of its capacity, for --minutes after a warm-up; RSS, FDs, tasks and threads sampled every
    minute; TTFT p99 per 10-minute window against a stored baseline run with the same pause."""
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    if baseline:
        capacity, think_s = baseline["capacity_rps"], baseline["think_s"]
    else:
        # Capacity: the clients with no pause. At a fraction f of it, each client's cycle is
        # latency / f, so the pause is latency x (1/f - 1).
        flat_out = closed_loop(url, chat_id, embedding_id, args, 60, 0.0, rng_seed=1)
        capacity = sum(r["status"] == 200 for r in flat_out) / 60
        think_s = statistics.mean(r["s"] for r in flat_out) * (1 / args.load - 1)
        for attempt in range(3):  # latency falls as the load does: correct the pause on short trials
            trial = closed_loop(url, chat_id, embedding_id, args, 30, think_s, rng_seed=2 + attempt)
            rate = sum(r["status"] == 200 for r in trial) / 30
            print(f"pause {think_s * 1000:.0f} ms -> {rate / capacity:.0%} of capacity", file=sys.stderr, flush=True)
            think_s = max(0.0, think_s + CLIENTS / (args.load * capacity) - CLIENTS / rate)
    print(f"capacity {capacity:.1f} req/s; pause {think_s * 1000:.0f} ms between requests", file=sys.stderr, flush=True)
    samples = []
    started = time.perf_counter()
    measure_from = started + args.warmup_minutes * 60
    next_sample = [measure_from]

    def tick() -> None:
        now = time.perf_counter()
        if now >= next_sample[0]:
            samples.append({"t_min": (now - measure_from) / 60, **server_stats(url, pid)})
            print(f"sample {samples[-1]}", file=sys.stderr, flush=True)
            next_sample[0] += 60

    results = closed_loop(url, chat_id, embedding_id, args, (args.warmup_minutes + args.minutes) * 60, think_s,
                          rng_seed=11, measure_from=measure_from, on_tick=tick)
    rate = sum(1 for r in results if r["t_min"] >= 0) / (args.minutes * 60)
    idle = idle_sample(url, pid)
    measured = [r for r in results if r["t_min"] >= 0]
    ttfts = [r["ttft"] for r in measured if r.get("ttft") is not None]
    windows = []
    for start_min in range(0, max(1, int(args.minutes)), 10):
        values = [r["ttft"] for r in measured if r.get("ttft") is not None and start_min <= r["t_min"] < start_min + 10]
        if values:
            windows.append((start_min, len(values), percentile(values, 0.5), percentile(values, 0.99)))
    statuses: dict[str, int] = {}
    for r in measured:
        key = f"{r['kind']} {r['status']}"
        statuses[key] = statuses.get(key, 0) + 1
    summary = {"capacity_rps": capacity, "think_s": think_s, "rate_rps": rate, "load": args.load, "minutes": args.minutes,
               "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p99_s": percentile(ttfts, 0.99),
               "model": args.model or "tiny random Llama (tests/tiny.py)"}
    if args.save_baseline:
        args.save_baseline.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.save_baseline.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(args.save_baseline)
    first, last = samples[0], samples[-1]
    five_xx = sum(1 for r in measured if r["status"] >= 500)
    print(f"\nmodel: {summary['model']}; capacity {capacity:.1f} req/s ({CLIENTS} clients back to back); "
          f"{CLIENTS} clients pausing {think_s * 1000:.0f} ms got {rate:.1f} req/s ({rate / capacity:.0%} of capacity); "
          f"{args.warmup_minutes:g} min warm-up, then {args.minutes:g} min measured; {len(measured)} requests\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| requests answered 5xx or cut (no [DONE]) | {five_xx} of {len(measured)} |")
    print(f"| outcomes | {dict(sorted(statuses.items()))} |")
    print(f"| RSS first sample -> last sample (peak) | {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB "
          f"({(last['rss_mb'] / first['rss_mb'] - 1) * 100:+.1f} %, peak {max(s['rss_mb'] for s in samples):.0f} MB) |")
    print(f"| RSS after a 15 s idle pause at the end | {idle['rss_mb']:.0f} MB "
          f"({(idle['rss_mb'] / first['rss_mb'] - 1) * 100:+.1f} % vs first sample) |")
    print(f"| open file descriptors first -> last -> idle | {first['fds']} -> {last['fds']} -> {idle['fds']} |")
    print(f"| asyncio tasks / Python threads at idle (start of soak: tasks {first['tasks']:.0f}) | "
          f"{idle['tasks']:.0f} / {idle['py_threads']:.0f} |")
    print(f"| TTFT p50 / p99 over the run | {summary['ttft_p50_s'] * 1000:.0f} / {summary['ttft_p99_s'] * 1000:.0f} ms |")
    for start_min, count, p50, p99 in windows:
        against = f"; {p99 / baseline['ttft_p99_s'] - 1:+.0%} vs baseline p99 {baseline['ttft_p99_s'] * 1000:.0f} ms" \
            if baseline else ""
        print(f"| TTFT minutes {start_min}-{start_min + 10} ({count} streams) | p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms{against} |")


def report(args, fuzzed, fuzz_s, start_stats, after_fuzz, impatient, rounds, samples, soak_s, idle) -> None:
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
          f"{args.warmup_minutes:g} min of warm-up rounds, then {len(rounds)} rounds of {args.streams} streams in "
          f"{soak_s / 60:.1f} min\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| fuzzed bodies answered 5xx | {five_xx} of {args.fuzz} (statuses: {dict(sorted(fuzzed['statuses'].items()))}) |")
    print(f"| server RSS before / after fuzz | {start_stats['rss_mb']:.0f} / {after_fuzz['rss_mb']:.0f} MB "
          f"({after_fuzz['rss_mb'] - start_stats['rss_mb']:+.0f} MB) |")
    print(f"| 200 non-streaming 10,000-token requests, clients gone after 0.5 s | {impatient['outcomes']}; slots and "
          f"sequences drained {impatient['drain_s']:.1f} s after the last gave up; then a 10-token request: "
          f"{impatient['small_status']} in {impatient['small_s']:.2f} s |")
    print(f"| streams completed with [DONE] (staying clients) | {kept} of {expected_kept} |")
    print(f"| other stream outcomes | { {k: v for k, v in totals.items() if k != 'done'} } |")
    print(f"| slots in flight / active sequences after each round (max) | "
          f"{max(r['in_flight'] for r in rounds):.0f} / {max(r['active'] for r in rounds):.0f} |")
    print(f"| drain time after a round (max) | {max(r['drain_s'] for r in rounds):.2f} s |")
    print(f"| RSS first round -> last round (peak) | {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB "
          f"({(last['rss_mb'] / first['rss_mb'] - 1) * 100:+.1f} %, peak {peak_rss:.0f} MB) |")
    print(f"| RSS after a 15 s idle pause at the end | {idle['rss_mb']:.0f} MB "
          f"({(idle['rss_mb'] / first['rss_mb'] - 1) * 100:+.1f} % vs first round) |")
    print(f"| threads first -> last round -> idle | {first['threads']} -> {last['threads']} -> {idle['threads']} |")
    print(f"| asyncio tasks after each round (max) -> idle (before the soak: {start_stats['tasks']:.0f}) | "
          f"{max(s['tasks'] for s in samples):.0f} -> {idle['tasks']:.0f} |")
    print(f"| open file descriptors first -> last round | {first['fds']} -> {last['fds']} |")
    if fuzzed["server_errors"]:
        print("\n5xx examples:\n" + "\n".join(fuzzed["server_errors"][:5]))


if __name__ == "__main__":
    main()
