"""A distilled draft model for assisted (speculative) decoding of SmolLM2-135M-Instruct.

1. Prune the teacher to a ~20M-parameter draft: 6 of its 30 layers, 288 of its 576 embedding
   channels, 40% of the MLP channels. It keeps the tokenizer, which assisted decoding needs.
2. Distill it on the documentation corpus of run_evidence.py (the teacher's cached logits are
   reused: same data, same settings).
3. Let the teacher answer a few hundred questions about Python (saved as a chat dataset) and
   distill the draft further on those answers, so it learns the teacher's assistant style,
   which is what it will have to predict.
4. Measure: the teacher answers held-out questions greedily with and without the draft,
   alternating, and the script prints the acceptance rate, the speed-up and whether every
   output is identical.

Run after run_evidence.py (`make example-distill` runs both); results go to
build/distill-evidence/draft.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run_evidence import SETTINGS, TEACHER, build_data, build_once  # noqa: E402

DRAFT_PRUNING = {"hidden_size": 288, "mlp_ratio": 0.4, "layers": 24}
# Questions a user of the teacher might ask; none of them is among the training prompts.
HELD_OUT_QUESTIONS = [
    "Explain what a Python generator is.",
    "How do I read a file line by line in Python?",
    "What is the difference between a list and a tuple in Python?",
    "How do I handle an exception in Python?",
    "What does the with statement do in Python?",
    "How can I sort a list of dictionaries by a key in Python?",
    "What is a decorator in Python? Give a short example.",
    "How do I create a virtual environment for a Python project?",
    "What are Python's f-strings?",
    "Explain list comprehensions in Python.",
]


def training_questions() -> list[str]:
    """Questions about the standard library's modules and the language reference's topics."""
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted({p.stem for p in stdlib.glob("*.py") if not p.stem.startswith("_")}
                     | {p.name for p in stdlib.iterdir() if (p / "__init__.py").exists() and not p.name.startswith("_")})
    questions = [f"What is the Python {module} module used for?" for module in modules
                 if module not in ("this", "antigravity", "test", "idlelib")]
    questions += [f"Explain the Python topic '{topic}' briefly." for topic in sorted(topics)]
    return questions


def measure(draft: str, draft_tokens: int, new_tokens: int) -> dict:
    from slmkit.engine import GenerationRequest, load_engine
    from slmkit.generate import collect

    plain_engine = load_engine(TEACHER, backend="torch")
    assisted_engine = load_engine(TEACHER, backend="torch", draft=draft, draft_tokens=draft_tokens)
    rows = []
    for question in [HELD_OUT_QUESTIONS[0], *HELD_OUT_QUESTIONS]:  # the first run warms both up
        request = GenerationRequest(messages=[{"role": "user", "content": question}], max_new_tokens=new_tokens)
        plain = collect(plain_engine.stream(request))
        assisted = collect(assisted_engine.stream(request))
        rows.append((question, plain, assisted))
    rows = rows[1:]
    plain_engine.close()
    assisted_engine.close()
    drafted = sum(a.stats.draft_tokens for _, _, a in rows)
    accepted = sum(a.stats.accepted_draft_tokens for _, _, a in rows)
    plain_tps = statistics.median(p.stats.decode_tokens_per_s for _, p, _ in rows)
    assisted_tps = statistics.median(a.stats.decode_tokens_per_s for _, _, a in rows)
    tokens = sum(len(p.token_ids) for _, p, _ in rows)
    return {"draft": draft, "draft_tokens": draft_tokens, "questions": len(rows), "generated_tokens": tokens,
            "identical": sum(p.token_ids == a.token_ids for _, p, a in rows),
            "acceptance": accepted / max(drafted, 1), "accepted_per_step": accepted / max(drafted / draft_tokens, 1),
            "plain_tokens_per_s": plain_tps, "assisted_tokens_per_s": assisted_tps,
            "speedup": assisted_tps / plain_tps,
            "plain_seconds": sum(p.stats.total_s for _, p, _ in rows),
            "assisted_seconds": sum(a.stats.total_s for _, _, a in rows)}


def forward_costs(draft: str, context: int = 120, calls: int = 20) -> dict:
    """Median milliseconds of one forward pass with a ``context``-token KV cache: the teacher on
    1, 3 and 5 new tokens (a plain step, a check of 2 or 4 drafted tokens) and the draft on 1."""
    import torch
    from transformers import DynamicCache

    from slmkit.engine.torch_backend import load_causal_lm
    from slmkit.references import resolve_hf

    def median_ms(model, new_tokens: int) -> float:
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, 49000, (1, context), generator=generator)
        times = []
        with torch.inference_mode():
            for _ in range(calls):
                cache = DynamicCache()
                model(input_ids=prompt, cache=cache, use_cache=True)
                new = torch.randint(0, 49000, (1, new_tokens), generator=generator)
                started = time.perf_counter()
                model(input_ids=new, cache=cache, use_cache=True, logits_to_keep=new_tokens)
                times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    teacher, small = load_causal_lm(resolve_hf(TEACHER).path), load_causal_lm(resolve_hf(draft).path)
    return {**{f"teacher_{n}_tokens_ms": median_ms(teacher, n) for n in (1, 3, 5)},
            "draft_1_token_ms": median_ms(small, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/distill-evidence"))
    parser.add_argument("--steps", type=int, default=180, help="distillation steps on the documentation corpus")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SLM_HOME"] = str((args.out / "home").resolve())

    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.artifact import write_text_atomic
    from slmkit.data import Example
    from slmkit.distill import DistillConfig, distill, generate_dataset
    from slmkit.engine.torch_backend import load_tokenizer
    from slmkit.models import store_path
    from slmkit.prune import PruneConfig, prune
    from slmkit.references import resolve_hf

    if not (args.out / "train.jsonl").exists():
        build_data(args.out, load_tokenizer(resolve_hf(TEACHER).path))
    shared = {k: v for k, v in SETTINGS.items() if k != "packing"}
    minutes = {}

    def stage(name: str, build) -> None:
        if built := build_once(name, build):
            minutes[name] = built[1]

    stage("evidence-draft-pruned", lambda: prune(TEACHER, PruneConfig(**DRAFT_PRUNING), name="evidence-draft-pruned"))
    stage("evidence-draft-docs", lambda: distill(TEACHER, "evidence-draft-pruned", [args.out / "train.jsonl"],
                                                 DistillConfig(max_steps=args.steps, **shared),
                                                 name="evidence-draft-docs", resume=True))
    answers = args.out / "teacher-answers.jsonl"
    if not answers.exists():
        print("== the teacher answers the training questions", flush=True)
        started = time.perf_counter()
        questions = [Example(source=f"question {i}", prompt=q) for i, q in enumerate(training_questions())]
        generate_dataset(TEACHER, questions, answers, max_new_tokens=args.new_tokens)
        minutes["teacher answers"] = (time.perf_counter() - started) / 60
    stage("evidence-draft", lambda: distill(TEACHER, "evidence-draft-docs", [answers],
                                            DistillConfig(**{**shared, "learning_rate": 5e-4, "warmup_steps": 0,
                                                             "epochs": 4.0, "packing": False}),
                                            name="evidence-draft", resume=True))
    results = {"minutes": minutes, "parameters": json.loads((store_path("evidence-draft") / "slm.json").read_text())
               .get("parameters"), "runs": []}
    for draft_tokens in (2, 4):
        print(f"== measuring assisted decoding, {draft_tokens} draft tokens", flush=True)
        results["runs"].append(measure("evidence-draft", draft_tokens, args.new_tokens))
    results["forward_costs"] = forward_costs("evidence-draft")
    write_text_atomic(args.out / "draft.json", json.dumps(results, indent=1))
    lines = ["| draft tokens per step | acceptance | accepted per step | plain tok/s | assisted tok/s | speed-up "
             "| identical outputs |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        lines.append(f"| {run['draft_tokens']} | {run['acceptance']:.0%} | {run['accepted_per_step']:.2f} "
                     f"| {run['plain_tokens_per_s']:.1f} | {run['assisted_tokens_per_s']:.1f} | {run['speedup']:.2f}x "
                     f"| {run['identical']}/{run['questions']} |")
    markdown = "\n".join(lines)
    write_text_atomic(args.out / "draft.md", markdown + "\n")
    costs = ", ".join(f"{name[:-3].replace('_', ' ')} {value:.1f} ms" for name, value in results["forward_costs"].items())
    print(f"draft: {results['parameters'] / 1e6:.1f}M parameters\n{markdown}\nforward passes: {costs}")


if __name__ == "__main__":
    main()
