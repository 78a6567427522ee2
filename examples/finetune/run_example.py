"""The worked example of docs/finetune.md, end to end: build the license task from Debian's
copyright files, score SmolLM2-135M-Instruct on the held-out split, fine-tune it with LoRA
and with full weights, score both, and print a markdown table with the minutes each took.

Run with `make example-finetune` (or `python examples/finetune/run_example.py`). Everything
goes to build/example-finetune/, including its own model store, so it never touches ~/.slm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SETTINGS = {  # shared by both methods; the learning rates differ (below)
    "epochs": 1.0, "batch_size": 4, "micro_batch_size": 4, "seq_len": 256, "warmup_steps": 2,
    "validation_fraction": 0.1, "seed": 0,
}
LEARNING_RATES = {"lora": 1e-3, "full": 5e-5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/example-finetune"))
    parser.add_argument("--methods", default="lora,full")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SLM_HOME"] = str((args.out / "home").resolve())
    data = args.out / "data"
    subprocess.run([sys.executable, str(HERE / "build_license_task.py"), str(data)], check=True)

    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.evaluate import evaluate
    from slmkit.finetune import FinetuneConfig, finetune
    from slmkit.models import store_path

    rows = []
    began = started = time.perf_counter()
    base = evaluate("smollm2-135m", data=data / "test.jsonl", max_new_tokens=16)
    rows.append(("SmolLM2-135M-Instruct (base)", base.tasks, None, time.perf_counter() - started))
    print(f"base: exact match {base.tasks.exact_match:.3f}", flush=True)
    for method in args.methods.split(","):
        name = f"license-{method}"
        if store_path(name).exists():
            raise SystemExit(f"{store_path(name)} exists; delete {args.out} to rerun from scratch.")
        started = time.perf_counter()
        config = FinetuneConfig(method=method, learning_rate=LEARNING_RATES[method], **SETTINGS)
        result = finetune("smollm2-135m", [data / "train.jsonl"], config, name=name,
                          progress=lambda e, method=method: print(f"  {method} step {e['step']}/{e['total_steps']} "
                                                   f"loss {e['loss']:.4f} {e['tokens_per_s']:.0f} tok/s", flush=True))
        train_minutes = (time.perf_counter() - started) / 60
        scores = evaluate(name, data=data / "test.jsonl", max_new_tokens=16)
        rows.append((f"{method} fine-tune", scores.tasks, result.card.metrics, train_minutes * 60))
        print(f"{method}: exact match {scores.tasks.exact_match:.3f}", flush=True)
    print_table(rows, json.loads((data / "stats.json").read_text()))
    print(f"\nTotal: {(time.perf_counter() - began) / 60:.1f} minutes (data, scoring and training).")


def print_table(rows, stats) -> None:
    print(f"\nHeld-out split: {stats['test']} texts of {stats['licenses']} licenses; trained on {stats['train']}.\n")
    print("| model | exact match | JSON-field accuracy | train loss | validation loss | train tokens/s "
          "| minutes (base: scoring; others: training) |")
    print("|---|---|---|---|---|---|---|")
    for label, tasks, metrics, seconds in rows:
        losses = (f"{metrics['train_loss']:.3f} | {metrics['validation_loss']:.3f} | "
                  f"{metrics['train_tokens_per_s']:.1f}") if metrics else "– | – | –"
        print(f"| {label} | {tasks.exact_match:.3f} | {tasks.json_field_accuracy:.3f} | {losses} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
