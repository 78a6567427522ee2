"""The evidence of docs/distill.md: is pruning + distillation worth it?

A student with at most a third of SmolLM2-135M-Instruct's parameters is built three ways with
the same token budget and the same data order, then compared with the teacher:

  (a) scratch            same architecture, random weights, next-token loss
  (b) pruned, trained    the teacher pruned to that architecture, then next-token loss
  (c) pruned, distilled  the same pruned model, then logit distillation from the teacher

plus (b0), the pruned model before any training. Each is scored on held-out perplexity
(Python's documentation topics not used for training), on a task (say the next word of a
held-out passage where that word already appeared earlier: LAMBADA-style, answered greedily
through slmkit's engine), on parameters, size on disk and decode speed. Validation loss
against tokens seen goes to a plot.

Run with `make example-distill` (about 40 minutes on 2 CPU cores). Everything goes to
build/distill-evidence/, including its own model store, so it never touches ~/.slm. A killed
run continues where it stopped: finished stages are skipped, training resumes from its last
checkpoint.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sysconfig
import time
from pathlib import Path

TEACHER = "smollm2-135m"
# Minitron-style width pruning: every layer stays, the residual stream goes from 576 to 288
# channels and each MLP keeps 40% of its channels. Of the shapes tried (docs/distill.md), this
# kept the lowest perplexity right after pruning at under a third of the teacher's parameters.
PRUNING = {"hidden_size": 288, "mlp_ratio": 0.4}
CORPUS_TOKENS = 400_000  # training text; 5% of it is the validation split
SETTINGS = {"batch_size": 8, "micro_batch_size": 4, "seq_len": 256, "warmup_steps": 10, "learning_rate": 1e-3,
            "validation_fraction": 0.05, "packing": True, "seed": 0, "lr_schedule": "cosine",
            "checkpoint_every": 20, "eval_every": 20}
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "head_dim", "rms_norm_eps", "rope_theta", "rope_parameters", "tie_word_embeddings", "hidden_act",
             "attention_bias", "mlp_bias")
LABELS = {"teacher": "teacher: SmolLM2-135M-Instruct", "pruned": "(b0) pruned, no training",
          "scratch": "(a) from scratch", "pruned-trained": "(b) pruned + next-token training",
          "distilled": "(c) pruned + distilled"}


def build_data(out: Path, tokenizer) -> None:
    """train.jsonl (even pydoc topics, then stdlib docstrings), heldout.txt (odd topics), cloze.jsonl."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    documents = [topics[n] for n in names[0::2]]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if any(part in ("test", "tests", "idle_test", "site-packages") for part in path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= 200:
                    documents.append(text)
    kept, tokens = [], 0
    for text in documents:
        if tokens >= CORPUS_TOKENS:
            break
        kept.append(json.dumps({"text": text}))
        tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    (out / "train.jsonl").write_text("\n".join(kept) + "\n")
    held_out = [topics[n] for n in names[1::2]]
    (out / "heldout.txt").write_text("\n\n".join(held_out))
    (out / "cloze.jsonl").write_text("".join(json.dumps(item) + "\n" for item in cloze_items(held_out)))


def cloze_items(passages: list[str], per_passage: int = 3, context_chars: int = 1200) -> list[dict]:
    """Passage prefixes whose next word (5+ characters) already appeared in the prefix."""
    items = []
    for passage in passages:
        candidates = []
        for match in re.finditer(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]{4,})\b", passage):
            start = match.start()
            if start < 400 or passage[start - 1] != " " or passage[start - 2].isspace():
                continue
            before = passage[max(0, start - context_chars):start - 1]
            if re.search(rf"\b{re.escape(match[1])}\b", before):
                candidates.append((start, match[1], before))
        for part in range(per_passage):  # spread over the passage, deterministically
            if candidates:
                start, word, before = candidates[len(candidates) * (2 * part + 1) // (2 * per_passage)]
                prompt = before[before.find(" ") + 1:] if len(before) == context_chars else before
                items.append({"prompt": prompt, "expected": word})
    return list({item["prompt"]: item for item in items}.values())


def first_word(answer: str) -> str:
    match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", answer)
    return match[1] if match else ""


def measure(name: str, out: Path) -> dict:
    """Parameters, size, held-out perplexity, cloze accuracy and decode speed of a stored model."""
    import torch

    from slmkit.engine import load_engine
    from slmkit.engine.torch_backend import load_causal_lm
    from slmkit.evaluate import load_tasks, score_tasks
    from slmkit.perplexity import perplexity
    from slmkit.references import resolve_hf

    path = resolve_hf(name).path
    engine = load_engine(name, backend="torch")
    held_out = perplexity(engine, (out / "heldout.txt").read_text(), window=256, max_tokens=16384).perplexity
    scores = score_tasks(engine, load_tasks(out / "cloze.jsonl"), max_new_tokens=8, raw=True)
    correct = [first_word(r["answer"]) == r["expected"] for r in scores.results]
    engine.close()
    model = load_causal_lm(path)
    prompt = torch.tensor([decode_prompt_ids(path)])
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        started = time.perf_counter()
        model.generate(prompt, max_new_tokens=128, min_new_tokens=128, do_sample=False)
        seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return {"parameters": sum(p.numel() for p in model.parameters()), "size_mb": size / 1e6,
            "heldout_perplexity": held_out, "cloze_accuracy": sum(correct) / len(correct), "cloze_items": len(correct),
            "decode_tokens_per_s": 128 / seconds}


def decode_prompt_ids(path: Path) -> list[int]:
    from slmkit.engine.torch_backend import load_tokenizer

    return load_tokenizer(path)("The import statement combines two operations; it searches for the named",
                                add_special_tokens=False)["input_ids"]


def validation_curve(training: dict) -> list[list[float]]:
    tokens_per_step = SETTINGS["batch_size"] * SETTINGS["seq_len"]
    return [[step * tokens_per_step, loss] for step, loss in training["validation"]]


def starting_losses(names: list[str], out: Path) -> list[float]:
    """Next-token loss of stored models (same tokenizer) on the runs' validation split, before training."""
    from accelerate import Accelerator

    from slmkit.data import load_examples, prepare
    from slmkit.engine.torch_backend import load_causal_lm, load_tokenizer
    from slmkit.references import resolve_hf
    from slmkit.training import TrainConfig
    from slmkit.training.loop import causal_lm_loss, validation_loss

    tokenizer = load_tokenizer(resolve_hf(names[0]).path)
    prepared = prepare(tokenizer, load_examples([out / "train.jsonl"]), SETTINGS["seq_len"],
                       SETTINGS["validation_fraction"], SETTINGS["seed"], SETTINGS["packing"])
    config = TrainConfig(batch_size=SETTINGS["batch_size"], micro_batch_size=SETTINGS["micro_batch_size"])
    return [validation_loss(Accelerator(cpu=True), load_causal_lm(resolve_hf(name).path), prepared.validation,
                            causal_lm_loss, config, tokenizer.pad_token_id or 0) for name in names]


def build_once(name: str, build):
    """Run ``build`` unless the store already holds ``name``: (its result, minutes taken), or None."""
    from slmkit.models import store_path

    if store_path(name).exists():
        return None
    print(f"== {name}", flush=True)
    started = time.perf_counter()
    result = build()
    return result, (time.perf_counter() - started) / 60


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for key, style in (("scratch", "tab:gray"), ("pruned-trained", "tab:blue"), ("distilled", "tab:green")):
        curve = results["curves"][key]
        axis.plot([t / 1e3 for t, _ in curve], [loss for _, loss in curve], marker="o", markersize=3, color=style,
                  label=LABELS[key])
    axis.axhline(results["curves"]["teacher"], color="tab:red", linestyle="--", label=LABELS["teacher"])
    axis.set_xlabel("training tokens seen (thousands)")
    axis.set_ylabel("validation loss (next-token, nats)")
    axis.set_title(f"Students of {results['students_parameters'] / 1e6:.1f}M parameters, same data and budget")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    temporary = path.with_suffix(".partial.png")
    figure.savefig(temporary, dpi=120)
    temporary.replace(path)


def table(results: dict) -> str:
    teacher = results["models"]["teacher"]
    lines = ["| model | parameters | size (MB) | held-out perplexity | next-word task | of teacher's score "
             "| decode tok/s | time to build |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in ("teacher", "pruned", "scratch", "pruned-trained", "distilled"):
        row = results["models"][key]
        minutes = results["minutes"].get(key)
        lines.append(f"| {LABELS[key]} | {row['parameters'] / 1e6:.1f}M | {row['size_mb']:.0f} "
                     f"| {row['heldout_perplexity']:.1f} | {row['cloze_accuracy']:.3f} "
                     f"| {row['cloze_accuracy'] / teacher['cloze_accuracy']:.0%} | {row['decode_tokens_per_s']:.1f} "
                     f"| {_build_time(minutes, results['training_minutes'].get(key))} |")
    return "\n".join(lines)


def _build_time(minutes: float | None, training: float | None) -> str:
    if minutes is None:
        return "—"
    if training is None or minutes - training < 1:
        return f"{minutes:.1f} min"
    return f"{minutes:.1f} min ({minutes - training:.1f} of them the teacher's pass)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/distill-evidence"))
    parser.add_argument("--steps", type=int, default=180, help="optimizer steps per student (8 x 256 tokens each)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SLM_HOME"] = str((args.out / "home").resolve())

    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.artifact import write_text_atomic
    from slmkit.distill import DistillConfig, distill
    from slmkit.engine.torch_backend import load_tokenizer
    from slmkit.finetune import FinetuneConfig, finetune
    from slmkit.models import store_path
    from slmkit.pretrain import PretrainConfig, pretrain
    from slmkit.prune import PruneConfig, prune
    from slmkit.references import resolve_hf

    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"models": {}, "minutes": {},
                                                                                   "curves": {}}

    def save() -> None:
        write_text_atomic(results_path, json.dumps(results, indent=1))

    teacher_path = resolve_hf(TEACHER).path
    if not (args.out / "cloze.jsonl").exists():
        build_data(args.out, load_tokenizer(teacher_path))
    data = [args.out / "train.jsonl"]
    shared = {k: v for k, v in SETTINGS.items() if k not in ("packing",)}
    names = {key: f"evidence-{key}" for key in ("pruned", "scratch", "pruned-trained", "distilled")}

    def stage(key: str, build) -> None:
        if built := build_once(names[key], build):
            result, results["minutes"][key] = built
            if getattr(result, "training", None) is not None:
                results["curves"][key] = validation_curve({"validation": result.training.validation})
            save()

    stage("pruned", lambda: prune(TEACHER, PruneConfig(**PRUNING), name=names["pruned"]))
    pruned_config = json.loads((store_path(names["pruned"]) / "config.json").read_text())
    shape_file = args.out / "student-shape.json"
    shape_file.write_text(json.dumps({k: pruned_config[k] for k in TEXT_KEYS if k in pruned_config}, indent=1))
    stage("scratch", lambda: pretrain(data, PretrainConfig(preset=str(shape_file), tokenizer=TEACHER, packing=True,
                                                           context_length=pruned_config["max_position_embeddings"],
                                                           max_steps=args.steps, weight_decay=0.0, **shared),
                                      name=names["scratch"], resume=True))
    stage("pruned-trained", lambda: finetune(names["pruned"], data, FinetuneConfig(method="full", packing=True,
                                                                                   max_steps=args.steps, **shared),
                                             name=names["pruned-trained"], resume=True))
    stage("distilled", lambda: distill(TEACHER, names["pruned"], data, DistillConfig(max_steps=args.steps, **shared),
                                       name=names["distilled"], resume=True))

    for key in ("teacher", "pruned", "scratch", "pruned-trained", "distilled"):
        if key not in results["models"]:
            print(f"== measuring {LABELS[key]}", flush=True)
            results["models"][key] = measure(TEACHER if key == "teacher" else names[key], args.out)
            save()
    if "teacher" not in results["curves"]:
        results["curves"]["teacher"], pruned_start = starting_losses([TEACHER, names["pruned"]], args.out)
        for key in ("pruned-trained", "distilled"):
            results["curves"][key].insert(0, [0, pruned_start])
        save()
    results["training_minutes"] = {key: json.loads((store_path(names[key]) / "slm.json").read_text())["metrics"]
                                   ["train_seconds"] / 60 for key in ("scratch", "pruned-trained", "distilled")}
    results["students_parameters"] = results["models"]["distilled"]["parameters"]
    results["teacher_parameters"] = results["models"]["teacher"]["parameters"]
    save()
    plot(results, args.out / "validation-loss.png")
    markdown = table(results)
    write_text_atomic(args.out / "results.md", markdown + "\n")
    print(markdown)
    a, c = results["models"]["scratch"], results["models"]["distilled"]
    print(f"\n(c) vs (a) held-out perplexity: {1 - c['heldout_perplexity'] / a['heldout_perplexity']:.0%} lower "
          "(target: at least 20%)")
    print(f"(c) keeps {c['cloze_accuracy'] / results['models']['teacher']['cloze_accuracy']:.0%} of the teacher's "
          "task score (target: at least 90%)")
    print(f"students: {results['students_parameters'] / results['teacher_parameters']:.1%} of the teacher's parameters")


if __name__ == "__main__":
    main()
