"""Router benchmark (docs/router.md): routing on the held-out routes, the two router designs,
and LoRA adapters on one shared base.

1. **routing** — the router `slm router train` builds (minilm-l6 sentence vectors + logistic
   regression) trained on examples/router/train.jsonl, scored on examples/router/heldout.jsonl
   (never used for a tuning decision): accuracy and decision time per prompt (p50/p95, one
   prompt at a time, as a server sees them). Beside it, the other design the issue names: the
   same minilm-l6 with a classification head fine-tuned end to end (transformers), same data.
2. **lora** — SmolLM2-135M-Instruct (the store's float import) with 4 random LoRA adapters
   (r=16, all linear layers: `slm finetune`'s defaults) on one base, against the base alone:
   weight memory, and greedy decode throughput of a batch of 8 sequences that all use one
   adapter, that mix the 4 adapters (2 rows each), and of the same batch on the adapter merged
   into a model of its own (the "serve each as a merged model" peer).
3. **quality** — the held-out invoices (the docs:invoice prompts): field accuracy of the
   extractor when the router sends them there, when the general model answers every prompt
   (always-general) and with perfect routing (every invoice to the extractor).

    python bench/router.py [--only routing,lora,quality]

Prints markdown tables. Numbers depend on the machine's load: say how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "router" / "train.jsonl"
HELDOUT = ROOT / "examples" / "router" / "heldout.jsonl"
THREADS = 2


def percentile(values, q):
    import numpy as np

    return float(np.percentile(values, q))


def routing() -> None:
    from slmkit.router.evaluate import evaluate_router
    from slmkit.router.model import load_router
    from slmkit.router.routes import read_routes
    from slmkit.router.train import train_router

    train, heldout = read_routes([TRAIN]), read_routes([HELDOUT])
    started = time.perf_counter()
    result = train_router([TRAIN], "bench-router")
    train_s = time.perf_counter() - started
    report = evaluate_router(load_router("bench-router", threads=1), heldout)  # one thread: see docs/router.md
    tuned = finetuned_classifier(train, heldout)
    print("\n### Routing on the held-out routes "
          f"({report['examples']} prompts; trained on {len(train)})\n")
    print("| router | held-out accuracy | validation accuracy (train split) | decision p50 ms | decision p95 ms "
          "| decision CPU p50 ms | train s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| minilm-l6 + logistic regression (`slm router`) | {report['accuracy']:.3f} | "
          f"{result.metrics['validation_accuracy']:.3f} | {report['decision_ms_p50']:.1f} | "
          f"{report['decision_ms_p95']:.1f} | {report['decision_cpu_ms_p50']:.1f} | {train_s:.0f} |")
    print(f"| minilm-l6 fine-tuned with a classification head | {tuned['accuracy']:.3f} | - | "
          f"{tuned['p50']:.1f} | {tuned['p95']:.1f} | {tuned['cpu_p50']:.1f} | {tuned['train_s']:.0f} |")
    print(f"\nthreshold {report['threshold']:.3f}, fallback rate {report['fallback_rate']:.3f}; per route: "
          + ", ".join(f"{k} P={v['precision']:.2f} R={v['recall']:.2f}" for k, v in report["per_route"].items()))
    if report["mistakes"]:
        print("mistakes: " + json.dumps(report["mistakes"][:5]))


def finetuned_classifier(train, heldout, epochs: int = 4) -> dict:
    """minilm-l6 with a sequence-classification head, fine-tuned on the training routes
    (trained on THREADS threads, timed on one like the other router)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slmkit.references import resolve_hf

    torch.manual_seed(0)
    path = resolve_hf("minilm-l6").path
    labels = sorted({e.route for e in train})
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=len(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    order = list(range(len(train)))
    started = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        torch.manual_seed(epoch)
        order = [order[i] for i in torch.randperm(len(order)).tolist()]
        for start in range(0, len(order), 16):
            batch = [train[i] for i in order[start:start + 16]]
            inputs = tokenizer([e.prompt for e in batch], truncation=True, max_length=128, padding=True,
                               return_tensors="pt")
            target = torch.tensor([labels.index(e.route) for e in batch])
            loss = torch.nn.functional.cross_entropy(model(**inputs).logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    train_s = time.perf_counter() - started
    torch.set_num_threads(1)
    model.eval()
    times, cpu, right = [], [], 0
    with torch.inference_mode():
        for example in heldout:
            began, began_cpu = time.perf_counter(), time.process_time()
            inputs = tokenizer([example.prompt], truncation=True, max_length=128, return_tensors="pt")
            predicted = labels[int(model(**inputs).logits[0].argmax())]
            times.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
            right += predicted == example.route
    torch.set_num_threads(THREADS)
    return {"accuracy": right / len(heldout), "p50": percentile(times, 50), "p95": percentile(times, 95),
            "cpu_p50": percentile(cpu, 50),
            "train_s": train_s}


def make_adapters(base: Path, folder: Path, count: int = 4, rank: int = 16) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    from slmkit.engine.torch_backend import load_causal_lm

    adapters = {}
    for number in range(count):
        torch.manual_seed(number)
        model = get_peft_model(load_causal_lm(base), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                                                init_lora_weights=False, task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.01)
        model.save_pretrained(folder / f"adapter{number}")
        adapters[f"adapter{number}"] = folder / f"adapter{number}"
    return adapters


def batch_tokens_per_s(engines: list, prompts: list[str], tokens: int) -> float:
    """All tokens / wall time of len(prompts) greedy streams started together (engine i for prompt i)."""
    from slmkit.engine import GenerationRequest, SamplingParams
    from slmkit.generate import collect

    counts, barrier = [0] * len(prompts), threading.Barrier(len(prompts) + 1)

    def run(index):
        barrier.wait()
        result = collect(engines[index].stream(GenerationRequest(
            messages=[{"role": "user", "content": prompts[index]}], max_new_tokens=tokens,
            sampling=SamplingParams(temperature=0))))
        counts[index] = len(result.token_ids)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def lora(repeats: int = 3, tokens: int = 32, rank: int = 16, memory_only: bool = False) -> None:
    import shutil

    import torch
    from peft import PeftModel

    from slmkit.engine import lora_stack
    from slmkit.engine.torch_backend import TorchEngine, load_causal_lm
    from slmkit.references import resolve_hf

    base = resolve_hf("smollm2-135m").path
    folder = Path(tempfile.mkdtemp(prefix="slm-bench-lora-"))
    adapters = make_adapters(base, folder, rank=rank)
    if memory_only:
        plain, shared = TorchEngine(base, threads=THREADS), TorchEngine(base, threads=THREADS, adapters=adapters)
        print(f"\n| r={rank}, 4 adapters | weights MB | x base |\n|---|---|---|\n| base alone | "
              f"{plain.memory_bytes / 1e6:.1f} | 1.00 |\n| base + 4 adapters (shared) | {shared.memory_bytes / 1e6:.1f} | "
              f"{shared.memory_bytes / plain.memory_bytes:.3f} |")
        plain.close()
        shared.close()
        shutil.rmtree(folder, ignore_errors=True)
        return
    merged_dir = folder / "merged0"
    PeftModel.from_pretrained(load_causal_lm(base), str(adapters["adapter0"])).merge_and_unload().save_pretrained(
        merged_dir)
    for file in base.iterdir():
        if "token" in file.name or file.suffix == ".jinja" or file.name == "generation_config.json":
            shutil.copy(file, merged_dir / file.name)
    plain = TorchEngine(base, threads=THREADS)
    shared = TorchEngine(base, threads=THREADS, adapters=adapters)  # stacks in lora_stack.STACK_DTYPE
    other_dtype = {torch.float16: torch.bfloat16, torch.bfloat16: torch.float16}[lora_stack.STACK_DTYPE]
    default_dtype, lora_stack.STACK_DTYPE = lora_stack.STACK_DTYPE, other_dtype
    shared_other = TorchEngine(base, threads=THREADS, adapters=adapters)  # the other 16-bit type, for its speed
    lora_stack.STACK_DTYPE = default_dtype
    merged = TorchEngine(merged_dir, threads=THREADS)
    views = [shared.adapter(name) for name in adapters]
    other_views = [shared_other.adapter(name) for name in adapters]
    prompts = [f"Write a short story about a {thing}." for thing in
               ("dragon", "lighthouse", "robot", "river", "library", "comet", "garden", "violin")]
    short = {torch.float16: "fp16", torch.bfloat16: "bf16"}
    runs = {f"one adapter (8 rows of adapter0), {short[default_dtype]} stacks": [views[0]] * 8,
            f"4 adapters mixed (2 rows each), {short[default_dtype]} stacks": [views[i % 4] for i in range(8)],
            f"4 adapters mixed (2 rows each), {short[other_dtype]} stacks": [other_views[i % 4] for i in range(8)],
            "adapter0 merged into its own model": [merged] * 8,
            "base alone (no adapters)": [plain] * 8}
    rates = {name: [] for name in runs}
    batch_tokens_per_s([views[0]] * 2, prompts[:2], 4)  # warm-up
    for _ in range(repeats):  # interleaved, so load changes hit every row alike
        for name, engines in runs.items():
            rates[name].append(batch_tokens_per_s(engines, prompts, tokens))
    lora_bytes = shared.memory_bytes - plain.memory_bytes
    print(f"\n### LoRA adapters on one base: SmolLM2-135M, 4 adapters r={rank} all-linear, batch of 8 x {tokens} greedy "
          f"tokens, {THREADS} threads, median of {repeats}\n")
    print("| | weights MB | x base |\n|---|---|---|")
    print(f"| base alone | {plain.memory_bytes / 1e6:.1f} | 1.00 |")
    print(f"| base + 4 adapters (shared) | {shared.memory_bytes / 1e6:.1f} | "
          f"{shared.memory_bytes / plain.memory_bytes:.3f} |")
    print(f"| 4 merged models (one per adapter) | {4 * plain.memory_bytes / 1e6:.1f} | 4.00 |")
    print(f"\n(adapters: {lora_bytes / 1e6:.1f} MB in all, {short[default_dtype]} stacks)\n")
    print("| batch of 8 | tokens/s | x one-adapter batch |\n|---|---|---|")
    single = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / single:.2f} |")
    print(f"\nmixed-adapter decoding steps counted by the scheduler: {shared.scheduler.mixed_adapter_steps}")
    for engine in (plain, shared, shared_other, merged):
        engine.close()
    shutil.rmtree(folder, ignore_errors=True)


def quality(limit: int = 0) -> None:
    """Field accuracy on the held-out invoices: routed, always-general, perfect routing."""
    import re

    sys.path.insert(0, str(ROOT / "examples" / "router"))
    from build_routes import invoice_texts  # the same documents heldout.jsonl holds

    from slmkit.docs.extract import extract_pages
    from slmkit.docs.normalize import same_value
    from slmkit.docs.schemas import load_schema
    from slmkit.docs.synthetic import HELDOUT_LAYOUTS, make_documents
    from slmkit.engine import GenerationRequest, SamplingParams, load_engine
    from slmkit.generate import collect
    from slmkit.router.model import load_router
    from slmkit.router.routes import read_routes

    prompts = [e.prompt for e in read_routes([HELDOUT]) if e.route == "docs:invoice"]
    documents = make_documents(len(prompts), {"invoice": HELDOUT_LAYOUTS["invoice"]}, 1001)
    texts = invoice_texts(HELDOUT_LAYOUTS["invoice"], len(prompts), seed=1001)
    assert all(text in prompt for text, prompt in zip(texts, prompts, strict=True)), "heldout.jsonl changed"
    if limit:
        prompts, documents, texts = prompts[:limit], documents[:limit], texts[:limit]
    router = load_router("bench-router") if Path(os.environ["SLM_HOME"], "routers", "bench-router").is_dir() else None
    if router is None:
        from slmkit.router.train import train_router

        train_router([TRAIN], "bench-router")
        router = load_router("bench-router", threads=THREADS)
    schema = load_schema("invoice")
    engine = load_engine("smollm2-135m", threads=THREADS)

    def score(values: dict, document) -> tuple[int, int]:
        right = sum(same_value(f.kind, values.get(f.name), document.fields[f.name]) for f in schema.fields
                    if f.name in document.fields)
        return right, sum(f.name in document.fields for f in schema.fields)

    arms = {"perfect routing (every invoice to the extractor)": [0, 0], "always-general": [0, 0], "routed": [0, 0]}
    routed_to = []
    for prompt, text, document in zip(prompts, texts, documents, strict=True):
        extracted = score(extract_pages([text], schema, engine)["values"], document)
        answer = collect(engine.stream(GenerationRequest(messages=[{"role": "user", "content": prompt}],
                                                         max_new_tokens=256, sampling=SamplingParams(temperature=0))))
        match = re.search(r"\{.*\}", answer.text, re.S)  # a JSON object in the chat answer, if any
        try:
            general_values = json.loads(match.group(0)) if match else {}
        except ValueError:
            general_values = {}
        general = score(general_values if isinstance(general_values, dict) else {}, document)
        route = router.decide(prompt).route
        routed_to.append(route)
        for arm, (right, total) in zip(arms, (extracted, general, extracted if route == "docs:invoice" else general),
                                       strict=True):
            arms[arm][0] += right
            arms[arm][1] += total
    print(f"\n### Routed quality: {len(prompts)} held-out invoices (docs:invoice prompts), field accuracy, "
          "SmolLM2-135M-Instruct\n")
    print("| who answers | field accuracy | x perfect routing |\n|---|---|---|")
    perfect = arms["perfect routing (every invoice to the extractor)"][0] / arms[
        "perfect routing (every invoice to the extractor)"][1]
    for arm, (right, total) in arms.items():
        print(f"| {arm} | {right / total:.3f} | {right / total / perfect:.2f} |")
    print(f"\nrouter sent {routed_to.count('docs:invoice')}/{len(prompts)} invoices to the extractor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="routing,lora,quality", help="comma-separated sections: routing, lora, quality")
    parser.add_argument("--limit", type=int, default=0, help="quality: score only the first N invoices (0 = all 25)")
    parser.add_argument("--lora-rank", type=int, default=16, help="lora: rank of the 4 adapters (slm finetune's default)")
    parser.add_argument("--memory-only", action="store_true", help="lora: weights memory only, no throughput runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(THREADS)
    home = tempfile.mkdtemp(prefix="slm-bench-router-")
    store = Path(os.environ.get("SLM_HOME") or Path.home() / ".slm")
    os.environ["SLM_HOME"] = home
    (Path(home) / "models").mkdir(parents=True)
    for name in ("smollm2-135m", "smollm2-135m-f16"):  # the float import and its f16 GGUF, read in place
        if (store / "models" / name).is_dir():
            os.symlink(store / "models" / name, Path(home) / "models" / name)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)", file=sys.stderr)
    sections = {"routing": routing, "lora": lambda: lora(rank=args.lora_rank, memory_only=args.memory_only),
                "quality": lambda: quality(args.limit)}
    for name in args.only.split(","):
        sections[name.strip()]()
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (1-minute, 2 cores)")


if __name__ == "__main__":
    main()
