"""The specialist of docs/documents.md: SmolLM2-135M-Instruct fine-tuned with LoRA to copy fields
out of invoices, contracts and tickets, then scored against the untuned model and a regex
baseline on layouts it never saw (bench/docs.py).

Run with `make example-docs` (or `python examples/docs/run_example.py`). Everything goes to
build/example-docs/, with its own model store, so it never touches ~/.slm. A killed run picks
up where it stopped: the data is rebuilt only when missing, training resumes from its newest
checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NAME = "docs-extractor"
# One pass over the 228 training examples: 28 optimizer steps of 8 (8.4 min on 2 idle cores).
# Chosen on dev (5 documents: 0.941 field accuracy against 0.882 after 12 steps); the held-out
# split was measured only afterwards (0.833, where 12 steps had given 0.852: docs/documents.md).
SETTINGS = {"method": "lora", "learning_rate": 2e-3, "max_steps": 28, "batch_size": 8, "micro_batch_size": 4,
            "seq_len": 560, "warmup_steps": 1, "validation_fraction": 0.05, "seed": 0, "lora_r": 16, "lora_alpha": 32,
            "checkpoint_every": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/example-docs"))
    parser.add_argument("--skip-bench", action="store_true", help="train only; run bench/docs.py later")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SLM_HOME"] = str((args.out / "home").resolve())
    data = args.out / "data"
    if not (data / "heldout" / "gold.jsonl").exists():
        subprocess.run([sys.executable, str(HERE / "build_data.py"), str(data)], check=True)

    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.finetune import FinetuneConfig, finetune
    from slmkit.models import store_path

    if not store_path(NAME).exists():
        started = time.perf_counter()
        resume = (Path(os.environ["SLM_HOME"]) / "runs" / NAME).exists()
        result = finetune("smollm2-135m", [data / "train.jsonl"], FinetuneConfig(**SETTINGS), name=NAME, resume=resume,
                          progress=lambda e: print(f"step {e['step']}/{e['total_steps']} loss {e['loss']:.4f} "
                                                   f"{e['tokens_per_s']:.0f} tok/s", flush=True))
        print(f"trained {NAME} in {(time.perf_counter() - started) / 60:.1f} min: {result.card.metrics}", flush=True)
    if not args.skip_bench:
        subprocess.run([sys.executable, str(ROOT / "bench" / "docs.py"), "--data", str(data), "--model", NAME, "--speed"],
                       check=True)


if __name__ == "__main__":
    main()
