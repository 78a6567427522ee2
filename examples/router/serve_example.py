"""Serve the example router end to end: start `slm serve` with the real specialists and the
router "helpdesk", ask the first held-out prompt of each route with model "auto", and print
who answered and what (docs/router.md, "Serving the example router").

Needs, in the store ($SLM_HOME, default ~/.slm): the router helpdesk (`make example-router`),
the knowledge base pydoc (`make example-kb`) and the recommender movies
(`slm recommend train ml-100k.inter --items ml-100k.item --name movies`).

    python examples/router/serve_example.py [--port 8765] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SERVE = ["--model", "smollm2-135m", "--model", "movies", "--router", "helpdesk"]


def missing_specialists() -> list[str]:
    from slmkit.kb.index import kb_names
    from slmkit.models import store_path
    from slmkit.router.model import router_names

    missing = []
    if "helpdesk" not in router_names():
        missing.append("the router helpdesk: make example-router")
    if "pydoc" not in kb_names():
        missing.append("the knowledge base pydoc: make example-kb")
    if not (store_path("movies") / "catalogue.json").is_file():
        missing.append("the recommender movies: slm recommend train ml-100k.inter --items ml-100k.item --name movies")
    return missing


def first_prompt_per_route() -> dict[str, str]:
    prompts: dict[str, str] = {}
    for line in (HERE / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompts.setdefault(row["route"], row["prompt"])
    return prompts


def wait_until_healthy(server: subprocess.Popen, url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"slm serve exited with status {server.returncode} before it was ready (its log is above).")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"slm serve was not healthy after {timeout_s:.0f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-tokens", type=int, default=96, help="max_tokens of each request")
    args = parser.parse_args()
    missing = missing_specialists()
    if missing:
        sys.exit("Build the example's specialists first:\n  " + "\n  ".join(missing))
    url = f"http://127.0.0.1:{args.port}"
    command = [str(Path(sys.executable).with_name("slm")), "serve", *SERVE, "--port", str(args.port)]
    print("$ slm serve " + " ".join(command[2:]), flush=True)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_until_healthy(server, url)
        for label, prompt in first_prompt_per_route().items():
            started = time.perf_counter()
            response = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
                "model": "auto", "max_tokens": args.max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]})
            seconds = time.perf_counter() - started
            if response.status_code != 200:
                sys.exit(f"{label}: HTTP {response.status_code}: {response.text[:300]}")
            body = response.json()
            route = body["route"]
            shown = prompt if "\n" not in prompt else prompt.split("\n")[0] + f" [... {prompt.count(chr(10))} more lines]"
            print(f"\n## labelled {label}: routed to {route['specialist']} (confidence {route['confidence']:.2f}, "
                  f"fell back: {route['fell_back']}); model {body['model']}; {seconds:.1f} s")
            print(f"> {shown}")
            print(body["choices"][0]["message"]["content"].strip())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
