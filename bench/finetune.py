"""Fine-tuning throughput: `slm finetune` (slmkit's loop) vs a plain trl SFTTrainer script.

Both fine-tune SmolLM2-135M-Instruct with the same LoRA settings on the same chat data
(built from Python's own documentation), the same batch size and sequence length, for one
pass over the data, each in its own process. Reported: training tokens/s (input tokens
through the training loop / loop wall seconds), tokens per CPU-second of the process (less
sensitive to other work on a shared machine) and the peak resident memory of each process.

Run: .venv/bin/python bench/finetune.py [--examples 16] [--method lora|full]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ_LEN, LEARNING_RATE = 4, 256, 2e-4
# trl's SFTConfig turns gradient checkpointing on by default (less memory, more compute);
# slmkit's loop does not checkpoint activations, so trl is measured both ways.
RUNNERS = {"slmkit": "slm finetune", "trl": "trl SFTTrainer (defaults: gradient checkpointing on)",
           "trl-no-gc": "trl SFTTrainer, gradient_checkpointing=False"}


def build_data(path: Path, count: int) -> None:
    from pydoc_data.topics import topics

    records = []
    for key in sorted(topics)[:count]:
        answer = " ".join(topics[key].split())[:300]
        records.append({"messages": [{"role": "user", "content": f"Explain the Python topic '{key}'."},
                                     {"role": "assistant", "content": answer}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def run_slmkit(data: Path, method: str) -> dict:
    from slmkit.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(method=method, learning_rate=LEARNING_RATE, epochs=1, batch_size=BATCH,
                            micro_batch_size=BATCH, seq_len=SEQ_LEN, validation_fraction=0.0)
    result = finetune("smollm2-135m", [data], config, name=f"bench-{method}-{os.getpid()}")
    return {"tokens": result.training.tokens, "seconds": result.training.seconds,
            "cpu_seconds": result.training.cpu_seconds, "steps": result.training.steps}


def run_trl(data: Path, method: str, checkpointing: bool = True) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from slmkit.references import resolve_hf

    path = str(resolve_hf("smollm2-135m").path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = load_dataset("json", data_files=str(data), split="train")
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, num_train_epochs=1,
                     max_length=SEQ_LEN, learning_rate=LEARNING_RATE, lr_scheduler_type="cosine",
                     save_strategy="no", report_to=[], logging_steps=1000, use_cpu=True, dataloader_num_workers=0,
                     seed=0, disable_tqdm=True, gradient_checkpointing=checkpointing)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora if method == "lora" else None)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started, cpu_started = time.perf_counter(), time.process_time()
    output = trainer.train()
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "steps": output.global_step}


def child(runner: str, data: Path, method: str) -> None:
    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    runs = {"slmkit": lambda: run_slmkit(data, method), "trl": lambda: run_trl(data, method, checkpointing=True),
            "trl-no-gc": lambda: run_trl(data, method, checkpointing=False)}
    result = runs[runner]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def measure(runner: str, data: Path, method: str, home: Path) -> dict:
    env = {**os.environ, "SLM_HOME": str(home)}
    done = subprocess.run([sys.executable, __file__, "--child", runner, "--data", str(data), "--method", method],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{runner} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--child")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.method)
    from slmkit.models import slm_home

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "chat.jsonl"
        build_data(data, args.examples)
        home = Path(scratch) / "home"
        home.mkdir()
        builtin = slm_home() / "models" / "smollm2-135m"
        if builtin.is_dir():  # reuse the converted built-in instead of converting it again
            (home / "models").mkdir()
            (home / "models" / "smollm2-135m").symlink_to(builtin)
        results = {runner: measure(runner, data, args.method, home) for runner in RUNNERS}
    print(f"\nSmolLM2-135M-Instruct, {args.method}, {args.examples} chat examples, batch {BATCH}, "
          f"max length {SEQ_LEN}, 1 epoch, {os.cpu_count()} CPU cores\n")
    print("| trainer | steps | tokens | loop seconds | training tokens/s | tokens per CPU-second | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for runner, r in results.items():
        label = RUNNERS[runner]
        print(f"| {label} | {r['steps']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens'] / r['seconds']:.1f} | "
              f"{r['tokens'] / r['cpu_seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    for unit in ("seconds", "cpu_seconds"):
        speed = {runner: r["tokens"] / r[unit] for runner, r in results.items()}
        print(f"\nslm finetune / trl SFTTrainer (defaults), tokens per {unit}: {speed['slmkit'] / speed['trl']:.2f}x; "
              f"/ trl without gradient checkpointing: {speed['slmkit'] / speed['trl-no-gc']:.2f}x")


if __name__ == "__main__":
    main()
