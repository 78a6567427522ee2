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
3. **quality** — every held-out prompt scored by its own route's metric (general: answered by
   the general model; kb:pydoc: the answer holds the reference key terms of
   examples/router/heldout_answers.jsonl; docs:invoice: field accuracy; recommend:movies: the
   share of MovieLens users who watched the named movies whose next movie is in the answer's 5
   titles) when the router picks who answers, when the general model answers everything
   (always-general) and with perfect routing. Needs the pydoc knowledge base (`make example-kb`),
   the recommender `movies` (docs/router.md) in the store and MovieLens 100K.

    python bench/router.py [--only routing,lora,quality]

Prints markdown tables. Numbers depend on the machine's load: say how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "router" / "train.jsonl"
HELDOUT = ROOT / "examples" / "router" / "heldout.jsonl"
DATA = ROOT.parent / "shared" / "data" / "ml-100k"  # MovieLens 100K (RecBole atomic files), as docs/recommend.md
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


def lora(repeats: int = 5, tokens: int = 32, rank: int = 16, memory_only: bool = False) -> None:
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
    names = list(runs)
    for repeat in range(repeats):  # interleaved, each repeat starting one row later, so load changes hit every row alike
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            rates[name].append(batch_tokens_per_s(runs[name], prompts, tokens))
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


def recommendation_references(data_dir: Path) -> list[list[str]]:
    """Every MovieLens user's items in time order (the logs the recommender was trained on)."""
    from slmkit.recommend.data import read_logs, user_sequences

    return list(user_sequences(read_logs([data_dir / "ml-100k.inter"])).values())


def next_item_hit(history: list[str], answer_items: list[str], sequences: list[list[str]]) -> tuple[float, int]:
    """(share of the MovieLens users who watched every ``history`` item whose next item after the
    last of them is among ``answer_items``, how many such users); (nan, 0) when there are none."""
    hits, users = 0, 0
    for sequence in sequences:
        if history and all(item in sequence for item in history):
            last = max(sequence.index(item) for item in history)
            if last + 1 < len(sequence):
                users += 1
                hits += sequence[last + 1] in answer_items
    return (hits / users if users else float("nan")), users


def quality(limit: int = 0, data_dir: Path = DATA, details: Path | None = None) -> None:
    """Each held-out prompt scored by its own route's metric when the router picks who answers,
    when the general model answers everything, and with perfect routing."""
    import concurrent.futures
    import math
    import re

    sys.path.insert(0, str(ROOT / "examples" / "router"))
    from build_routes import invoice_texts  # the same documents heldout.jsonl holds

    from slmkit.docs.extract import extract_pages
    from slmkit.docs.normalize import same_value
    from slmkit.docs.schemas import load_schema
    from slmkit.docs.synthetic import HELDOUT_LAYOUTS, make_documents
    from slmkit.engine import GenerationRequest, SamplingParams, load_engine
    from slmkit.generate import collect
    from slmkit.kb.answer import answer_stream
    from slmkit.kb.evaluate import keywords_present
    from slmkit.recommend.predict import load_recommender, recommend
    from slmkit.router.model import load_router
    from slmkit.router.routes import read_routes
    from slmkit.server.routing import named_items

    examples = read_routes([HELDOUT])
    keywords = {json.loads(line)["prompt"]: json.loads(line)["answer_keywords"]
                for line in (ROOT / "examples" / "router" / "heldout_answers.jsonl").read_text().splitlines()}
    invoices = [e.prompt for e in examples if e.route == "docs:invoice"]
    documents = dict(zip(invoices, make_documents(len(invoices), {"invoice": HELDOUT_LAYOUTS["invoice"]}, 1001),
                         strict=True))
    texts = dict(zip(invoices, invoice_texts(HELDOUT_LAYOUTS["invoice"], len(invoices), seed=1001), strict=True))
    assert all(texts[prompt] in prompt for prompt in invoices), "heldout.jsonl changed"
    if limit:  # the first `limit` prompts of each route
        examples = [e for e in examples if [x.route for x in examples[:examples.index(e)]].count(e.route) < limit]
    home = Path(os.environ["SLM_HOME"])
    if not (home / "routers" / "bench-router").is_dir():
        from slmkit.router.train import train_router

        train_router([TRAIN], "bench-router")
    router = load_router("bench-router", threads=1)
    engine = load_engine("smollm2-135m", threads=THREADS)
    movies = load_recommender("movies", threads=THREADS)
    sequences = recommendation_references(data_dir)
    schema = load_schema("invoice")

    def chat(prompt: str) -> str:
        return collect(engine.stream(GenerationRequest(messages=[{"role": "user", "content": prompt}],
                                                       max_new_tokens=256, sampling=SamplingParams(temperature=0)))).text

    def answer(route: str, prompt: str) -> str:
        """What the server answers when ``route`` answers ``prompt`` (server/routing.py, knowledge.py)."""
        if route == "kb:pydoc":  # select mode: the first --model is not the kb specialist
            reply = answer_stream("pydoc", [{"role": "user", "content": prompt}], engine, mode="select")
            return "".join(chunk.text for chunk in reply.chunks)
        if route == "docs:invoice":
            return json.dumps(extract_pages([prompt], schema, engine)["values"])
        if route == "recommend:movies":
            result = recommend(movies, history=named_items(prompt, movies.catalogue), k=5)
            return "\n".join(entry["title"] or entry["item"] for entry in result.items)
        return chat(prompt)

    def score(route: str, prompt: str, answered_by: str, text: str) -> float:
        """The true ``route``'s metric of ``text`` (nan: not scored)."""
        if route == "general":  # answered by the general model = 1, by any specialist = 0
            return float(answered_by == "general")
        if route == "kb:pydoc":
            return float(keywords_present(text, keywords[prompt])) if prompt in keywords else float("nan")
        if route == "docs:invoice":
            match = re.search(r"\{.*\}", text, re.S)  # the JSON object in the answer, if any
            try:
                values = json.loads(match.group(0)) if match else {}
            except ValueError:
                values = {}
            values = values if isinstance(values, dict) else {}
            truth = documents[prompt].fields
            fields = [f for f in schema.fields if f.name in truth]
            return sum(same_value(f.kind, values.get(f.name), truth[f.name]) for f in fields) / len(fields)
        history = named_items(prompt, movies.catalogue)
        named = [item for item in named_items(text, movies.catalogue) if item not in history][:5]
        return next_item_hit(history, named, sequences)[0]

    decisions = {e.prompt: router.decide(e.prompt).route for e in examples}
    jobs = {(e.route, e.prompt) for e in examples} | {("general", e.prompt) for e in examples} | {
        (decisions[e.prompt], e.prompt) for e in examples}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the engine batches concurrent requests
        answers = dict(zip(jobs, pool.map(lambda job: answer(*job), jobs), strict=True))
    arms = {"perfect routing": lambda e: e.route, "routed (`slm router`)": lambda e: decisions[e.prompt],
            "always-general": lambda e: "general"}
    scores = {arm: {} for arm in arms}
    for e in examples:
        for arm, who in arms.items():
            scores[arm][e.prompt] = score(e.route, e.prompt, who(e), answers[(who(e), e.prompt)])
    if details:  # every prompt: who answered in each arm, what, and its score
        details.write_text("".join(json.dumps({
            "prompt": e.prompt, "route": e.route, "routed_to": decisions[e.prompt],
            "answers": {who: answers[(who, e.prompt)] for who in dict.fromkeys((e.route, "general", decisions[e.prompt]))},
            "scores": {arm: scores[arm][e.prompt] for arm in arms}}) + "\n" for e in examples), encoding="utf-8")
    routes = list(dict.fromkeys(e.route for e in examples))
    metric = {"general": "answered by the general model", "kb:pydoc": "answer has the reference key terms",
              "docs:invoice": "field accuracy", "recommend:movies": "next-item hit@5 (MovieLens users)"}
    print(f"\n### Routed quality: {len(examples)} held-out prompts, each scored by its route's metric, "
          "SmolLM2-135M-Instruct\n")
    print("| route | metric | prompts scored | perfect routing | routed | always-general | routed x perfect "
          "| always-general x perfect |\n|---|---|---|---|---|---|---|---|")
    for route in [*routes, "overall (mean over prompts)"]:
        chosen = [e for e in examples if route in (e.route, "overall (mean over prompts)")]
        means = {arm: statistics.mean(v for e in chosen if not math.isnan(v := scores[arm][e.prompt]))
                 for arm in arms}
        counted = sum(not math.isnan(scores["perfect routing"][e.prompt]) for e in chosen)
        perfect = means["perfect routing"]
        print(f"| {route} | {metric.get(route, 'each route its own')} | {counted}/{len(chosen)} | {perfect:.3f} | "
              f"{means['routed (`slm router`)']:.3f} | {means['always-general']:.3f} | "
              f"{means['routed (`slm router`)'] / perfect:.2f} | {means['always-general'] / perfect:.2f} |")
    wrong = [(e.route, decisions[e.prompt]) for e in examples if decisions[e.prompt] != e.route]
    users = [next_item_hit(named_items(e.prompt, movies.catalogue), [], sequences)[1] for e in examples
             if e.route == "recommend:movies"]
    print(f"\nrouter decisions different from the label: {len(wrong)} {wrong[:5]}; MovieLens users behind each "
          f"recommendation prompt: median {statistics.median(users) if users else 0}, min {min(users, default=0)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="routing,lora,quality", help="comma-separated sections: routing, lora, quality")
    parser.add_argument("--limit", type=int, default=0, help="quality: score only the first N prompts of each route (0 = all 25)")
    parser.add_argument("--details", type=Path, help="quality: write every prompt's answers and scores to this JSONL")
    parser.add_argument("--movielens", type=Path, default=DATA, help="quality: the MovieLens 100K folder (ml-100k.inter)")
    parser.add_argument("--lora-rank", type=int, default=16, help="lora: rank of the 4 adapters (slm finetune's default)")
    parser.add_argument("--repeats", type=int, default=5, help="lora: timed runs of each batch (the median is shown)")
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
    for name in ("smollm2-135m", "smollm2-135m-f16", "movies"):  # the models (and recommender), read in place
        if (store / "models" / name).is_dir():
            os.symlink(store / "models" / name, Path(home) / "models" / name)
    if "quality" in args.only:
        missing = [what for what, there in (("the recommender movies (slm recommend train ... --name movies)",
                                            (store / "models" / "movies").is_dir()),
                                           ("the knowledge base pydoc (make example-kb)",
                                            (store / "kb" / "pydoc.sqlite").is_file()),
                                           (f"MovieLens 100K in {args.movielens} (pass --movielens DIR)",
                                            (args.movielens / "ml-100k.inter").is_file())) if not there]
        if missing:
            sys.exit(f"--only quality needs, in {store}: " + "; ".join(missing) + ". See docs/router.md.")
        (Path(home) / "kb").mkdir()
        shutil.copy(store / "kb" / "pydoc.sqlite", Path(home) / "kb" / "pydoc.sqlite")  # a copy: SQLite writes beside it
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)", file=sys.stderr)
    sections = {"routing": routing,
                "lora": lambda: lora(repeats=args.repeats, rank=args.lora_rank, memory_only=args.memory_only),
                "quality": lambda: quality(args.limit, args.movielens, args.details)}
    for name in args.only.split(","):
        sections[name.strip()]()
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (1-minute, 2 cores)")


if __name__ == "__main__":
    main()
