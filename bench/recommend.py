"""MovieLens 100k recommendations: slmkit's sequential recommender against MostPop, ItemKNN and
Markov-1, leave-one-out with full ranking (last item per user = test, the one before =
validation, every item ranked, seen items masked), all computed in the same run.

1. Tuning (``--tune FILE --settings JSON``), on validation items only: each setting (overrides
   of RecommendConfig's defaults) trained for ``--tune-cpu-seconds`` CPU-seconds; its best
   validation HR@10/NDCG@10 is appended to FILE. Test items are never scored. The chosen
   setting became RecommendConfig's defaults (docs/recommend-tuning.md lists every run).
2. Headline: the defaults trained for ``--minutes`` of wall-clock training time (validation
   excluded), keeping the weights with the best validation NDCG@10; test HR@10/NDCG@10 of
   that model and of the baselines (ItemKNN's neighbour count also chosen on validation).
3. Latency: top-10 for one user through ``recommend()``, median and p95 over 200 users,
   against ItemKNN's top-10 for one user (the peer).
4. Memory: one forward+backward of the full-catalogue loss for 64 sequences x 50 positions over
   100,000 items, logits in chunks vs all at once, peak RSS of a fresh process each.
5. Plot: validation HR@10 against training time, ``docs/img/recommend-validation.png``.

Usage: python bench/recommend.py [--minutes 20] [--json out.json]
       python bench/recommend.py --tune tuning.jsonl --settings '[{}, {"dropout": 0.5}]'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads burn the
# CPU that the other thread is waiting for (measured under load: 2.5 -> 0.32 s per step).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ../shared/data/ml-100k from the repository (searched upwards, so a git worktree finds it too)
DATA = next((p / "shared" / "data" / "ml-100k" for p in Path(__file__).resolve().parents
             if (p / "shared" / "data" / "ml-100k").is_dir()), Path("../shared/data/ml-100k"))
PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "recommend-validation.png"


def train_one(name: str, minutes: float, log: Path, items: Path):
    """RecommendConfig's defaults (the setting chosen on validation) for ``minutes`` of training."""
    from slmkit.recommend.train import RecommendConfig, train_recommender

    config = RecommendConfig(epochs=10_000, validate_every=100, checkpoint_every=0, time_budget_s=60 * minutes)
    started = time.perf_counter()

    def show(event):
        if "validation_hr" in event:
            print(f"  {name} step {event['step']}: loss {event['loss']:.3f}, validation HR@10 "
                  f"{event['validation_hr']:.4f}, NDCG@10 {event['validation_ndcg']:.4f} "
                  f"({time.perf_counter() - started:.0f} s wall, load {os.getloadavg()[0]:.1f})", flush=True)

    return train_recommender([log], name, config, items_file=items, progress=show), config


def tune(settings: list[dict], cpu_seconds: float, results: Path, log: Path, items: Path) -> list[dict]:
    """Train each setting (overrides of RecommendConfig's defaults) for ``cpu_seconds`` CPU-seconds
    of training and record its best **validation** HR@10/NDCG@10 in ``results`` (JSON lines; a
    setting already there is skipped, so an interrupted tuning resumes). Test items are never
    scored here. A CPU-second budget keeps the comparison fair on a shared machine, where the
    wall-clock share of the CPUs changes from run to run."""
    from slmkit.recommend.train import RecommendConfig, train_recommender

    done = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    for overrides in settings:
        key = json.dumps(overrides, sort_keys=True)
        if any(json.dumps(row["settings"], sort_keys=True) == key for row in done):
            continue
        fields = {"epochs": 10_000, "validate_every": 100, "checkpoint_every": 0, "cpu_budget_s": cpu_seconds,
                  **overrides}
        if "dropout" in overrides and "attention_dropout" not in overrides:
            fields["attention_dropout"] = overrides["dropout"]
        if "hidden_size" in overrides and "intermediate_size" not in overrides:
            fields["intermediate_size"] = 4 * overrides["hidden_size"]
        if "batch_size" in overrides:
            fields["micro_batch_size"] = overrides["batch_size"]
        name = f"tune-{len(done)}"
        started, load = time.perf_counter(), os.getloadavg()[0]
        result = train_recommender([log], name, RecommendConfig(**fields), items_file=items)
        row = {"settings": overrides, "best": result.best, "curve": result.curve, "steps": result.training.steps,
               "wall_s": round(time.perf_counter() - started, 1), "load_start": load, "load_end": os.getloadavg()[0]}
        done.append(row)
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{key}: best validation HR@10 {row['best']['hr@10']:.4f} NDCG@10 {row['best']['ndcg@10']:.4f} "
              f"at step {row['best']['step']} of {row['steps']} ({row['wall_s']:.0f} s wall, load "
              f"{load:.1f}->{row['load_end']:.1f})", flush=True)
    print("\n| setting (changes from the defaults) | steps | wall s | load | best at step | validation HR@10 | "
          "validation NDCG@10 |\n|---|---:|---:|---:|---:|---:|---:|")
    for row in done:
        print(f"| `{json.dumps(row['settings'], sort_keys=True)}` | {row['steps']} | {row['wall_s']:.0f} | "
              f"{row['load_start']:.1f}-{row['load_end']:.1f} | {row['best']['step']} | {row['best']['hr@10']:.4f} | "
              f"{row['best']['ndcg@10']:.4f} |")
    return done


def latency(name: str, split, items: int, users: int = 200) -> dict:
    import torch

    from slmkit.recommend.evaluate import item_knn
    from slmkit.recommend.predict import load_recommender, recommend

    # One user's request is ~1 MFLOP: splitting it across threads only adds synchronisation
    # (on a busy machine, a lot), so requests are scored on one thread, as `slm recommend for` does.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    recommender = load_recommender(name)
    chosen = list(recommender.histories)[:users]
    knn = item_knn(split.test_train(), items, 0)

    def timed(fn):
        times = []
        for user in chosen:
            started = time.perf_counter()
            fn(user)
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times), sorted(times)[int(0.95 * len(times)) - 1]

    for user in chosen[:10]:  # warm-up
        recommend(recommender, user=user)
    ours = timed(lambda user: recommend(recommender, user=user, k=10))
    index = recommender.catalogue.index

    def knn_top10(user):
        history = [index[i] for i in recommender.histories[user]]
        scores = knn([history])[0]
        scores[history] = -float("inf")
        return scores.topk(10)

    peer = timed(knn_top10)
    torch.set_num_threads(threads)
    return {"slmkit_median_ms": ours[0], "slmkit_p95_ms": ours[1], "itemknn_median_ms": peer[0],
            "itemknn_p95_ms": peer[1], "users": len(chosen)}


MEMORY_PROBE = """
import sys, threading, time, torch
torch.set_num_threads(2)
from slmkit.recommend.model import catalogue_cross_entropy, chunk_rows
items, rows, chunked = 100_000, 64 * 50, sys.argv[1] == "chunked"
hidden = torch.randn(rows, 64, requires_grad=True)
weight = torch.randn(items, 64, requires_grad=True)
targets = torch.randint(0, items, (rows,))
def resident():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096
peak, running = [0], [True]
def watch():  # resident memory sampled every 0.2 ms while the step runs
    while running[0]:
        peak[0] = max(peak[0], resident())
        time.sleep(0.0002)
before = resident()
watcher = threading.Thread(target=watch)
watcher.start()
started = time.perf_counter()
loss = catalogue_cross_entropy(hidden, weight, targets, chunk_rows(items) if chunked else rows)
loss.backward()
seconds = time.perf_counter() - started
running[0] = False
watcher.join()
print((max(peak[0], resident()) - before) // 1024, seconds, chunk_rows(items) if chunked else rows)
"""


STEP_PROBE = """
import random, sys, time, torch
torch.set_num_threads(2)
torch.set_flush_denormal(sys.argv[1] == "flush")
from slmkit.data import collate
from slmkit.recommend.data import read_logs, user_sequences
from slmkit.recommend.evaluate import leave_one_out
from slmkit.recommend.model import Catalogue, build_model, chunk_rows, make_loss, natural_key
from slmkit.recommend.train import RecommendConfig, training_examples
sequences = list(user_sequences(read_logs([sys.argv[2]])).values())
catalogue = Catalogue(sorted({i for s in sequences for i in s}, key=natural_key))
config = RecommendConfig()
examples = training_examples(leave_one_out([[catalogue.index[i] for i in s] for s in sequences]).train,
                             config.max_length, config.window_stride)
model = build_model(len(catalogue), config.shape(), config.max_length, 0).train()
loss_fn = make_loss(config.dropout, chunk_rows(len(catalogue)))
optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
rng, steps = random.Random(0), int(sys.argv[3])
for step in range(steps + 5):  # 5 warm-up steps
    if step == 5:
        wall, cpu = time.perf_counter(), time.process_time()
    batch = rng.sample(examples, config.batch_size)
    tensors = {**collate(batch, 0), "normalizer": float(sum(e.target_count for e in batch))}
    loss_fn(model, tensors).backward()
    optimizer.step()
    optimizer.zero_grad()
print((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)
"""


def step_speed(log: Path, steps: int = 40) -> list[dict]:
    """Seconds per training step (defaults: 64 sequences x 50 items, 2 threads) with and without
    flushed denormals and sleeping OpenMP threads, each in a fresh process (OpenMP reads its
    settings when torch loads)."""
    rows = []
    for denormals, wait in (("keep", "ACTIVE"), ("flush", "ACTIVE"), ("flush", "PASSIVE")):
        done = subprocess.run([sys.executable, "-c", STEP_PROBE, denormals, str(log), str(steps)], capture_output=True,
                              text=True, check=True, env={**os.environ, "OMP_WAIT_POLICY": wait})
        wall, cpu = map(float, done.stdout.split())
        rows.append({"denormals": denormals, "omp_wait_policy": wait, "wall_s": wall, "cpu_s": cpu})
    return rows


def memory() -> list[dict]:
    rows = []
    for mode in ("chunked", "full"):
        # Blocks over 64 KB are mmapped and returned on free, so peak RSS follows live memory
        # instead of what glibc's heap kept after freeing earlier chunks.
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode], capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "2", "MALLOC_MMAP_THRESHOLD_": "65536"})
        grown_kb, seconds, per_chunk = done.stdout.split()
        rows.append({"logits": mode, "rows_per_chunk": int(per_chunk), "peak_growth_mb": int(grown_kb) / 1024,
                     "seconds": float(seconds)})
    return rows


def plot(curves: dict, baselines: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, curve in curves.items():
        axis.plot([p["train_seconds"] / 60 for p in curve], [p["hr@10"] for p in curve], marker=".", label=label)
    for (name, report), style in zip(baselines.items(), (":", "--", "-."), strict=False):
        axis.axhline(report["validation"]["hr@10"], linestyle=style, color="grey", linewidth=1, label=name)
    axis.set_xlabel("training time, minutes (wall clock, shared 2-core machine; validation excluded)")
    axis.set_ylabel("validation HR@10 (full ranking)")
    axis.set_title("MovieLens 100k: validation HR@10 while training")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-only", action="store_true", help="Only the chunked vs full logits memory table.")
    parser.add_argument("--step-speed", action="store_true", help="Only the seconds-per-training-step table.")
    parser.add_argument("--tune", type=Path, help="Tuning on validation only: results (JSON lines) go to this file.")
    parser.add_argument("--settings", help="With --tune: a JSON list of RecommendConfig overrides to try.")
    parser.add_argument("--tune-cpu-seconds", type=float, default=300.0, help="With --tune: training CPU-seconds each.")
    args = parser.parse_args()
    if args.tune:
        import torch

        torch.set_num_threads(2)
        os.environ["SLM_HOME"] = tempfile.mkdtemp(prefix="slm-tune-recommend-")
        tune(json.loads(args.settings), args.tune_cpu_seconds, args.tune, args.data / "ml-100k.inter",
             args.data / "ml-100k.item")
        return
    if args.step_speed:
        load = os.getloadavg()[0]
        rows = step_speed(args.data / "ml-100k.inter")
        print("| denormals | OMP_WAIT_POLICY | wall s per step | CPU-s per step |\n|---|---|---:|---:|")
        for row in rows:
            print(f"| {row['denormals']} | {row['omp_wait_policy']} | {row['wall_s']:.3f} | {row['cpu_s']:.3f} |")
        print(f"\nfirst / last wall: {rows[0]['wall_s'] / rows[-1]['wall_s']:.1f}x; load average {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return
    if args.memory_only:
        for row in memory():
            print(f"| {row['logits']} | {row['rows_per_chunk']} | {row['peak_growth_mb']:.0f} | {row['seconds']:.2f} |")
        return
    import torch

    torch.set_num_threads(2)
    os.environ["SLM_HOME"] = tempfile.mkdtemp(prefix="slm-bench-recommend-")
    from slmkit.recommend.evaluate import baseline_report, evaluate_recommender, leave_one_out
    from slmkit.recommend.predict import load_recommender

    log, items = args.data / "ml-100k.inter", args.data / "ml-100k.item"
    loads = [os.getloadavg()]
    print(f"load average at start (1/5/15 min): {'/'.join(f'{x:.1f}' for x in loads[0])} on {os.cpu_count()} cores",
          flush=True)
    final, config = train_one("ml100k", args.minutes, log, items)
    loads.append(os.getloadavg())
    report = evaluate_recommender("ml100k")  # the model and the baselines, same split, same run
    recommender = load_recommender("ml100k")
    catalogue = recommender.catalogue
    split = leave_one_out([[catalogue.index[i] for i in s] for s in recommender.histories.values()])
    assert report["baselines"].keys() == baseline_report(split, len(catalogue)).keys()
    speed = latency("ml100k", split, len(catalogue))
    memory_rows = memory()
    plot({f"slmkit recommender, {args.minutes:g}-minute run": final.curve}, report["baselines"], PLOT)
    loads.append(os.getloadavg())

    print(f"\n### Quality (ML-100k, {report['users']} users, {report['items']} items; leave-one-out, full ranking)\n")
    print("| model | validation HR@10 | validation NDCG@10 | test HR@10 | test NDCG@10 |")
    print("|---|---:|---:|---:|---:|")
    rows = {"slmkit recommender": report["model"], **report["baselines"]}
    for name, scores in rows.items():
        print(f"| {name} | {scores['validation']['hr@10']:.4f} | {scores['validation']['ndcg@10']:.4f} | "
              f"{scores['test']['hr@10']:.4f} | {scores['test']['ndcg@10']:.4f} |")
    best_baseline = max(report["baselines"].values(), key=lambda b: b["test"]["ndcg@10"])
    print(f"\nTest NDCG@10 vs the best baseline: {report['model']['test']['ndcg@10'] / best_baseline['test']['ndcg@10']:.2f}x")
    metrics = final.card.metrics
    print(f"Training: {final.training.steps} steps, {metrics['train_seconds']:.0f} s wall "
          f"({metrics['train_cpu_seconds']:.0f} CPU-s), best validation at step {final.best['step']} "
          f"({final.best['train_seconds']:.0f} s). Setting: max_length {config.max_length}, window_stride "
          f"{config.window_stride or config.max_length}, {config.num_hidden_layers} layers x {config.hidden_size} wide, "
          f"{config.num_attention_heads} heads, dropout {config.dropout}, lr {config.learning_rate:g}, "
          f"batch {config.batch_size}. Load average (1/5/15 min) at start / after training / at end: "
          + " / ".join("/".join(f"{x:.1f}" for x in load) for load in loads))
    print("\n### Top-10 for one user\n")
    print("| | median ms | p95 ms |\n|---|---:|---:|")
    print(f"| slmkit `recommend()` | {speed['slmkit_median_ms']:.2f} | {speed['slmkit_p95_ms']:.2f} |")
    print(f"| ItemKNN (peer) | {speed['itemknn_median_ms']:.2f} | {speed['itemknn_p95_ms']:.2f} |")
    print(f"\nslmkit / ItemKNN median: {speed['slmkit_median_ms'] / speed['itemknn_median_ms']:.2f}x")
    print("\n### Full-catalogue loss at 100,000 items (64 x 50 positions, forward + backward)\n")
    print("| logits | positions per chunk | peak memory growth MB | seconds |\n|---|---:|---:|---:|")
    for row in memory_rows:
        print(f"| {row['logits']} | {row['rows_per_chunk']} | {row['peak_growth_mb']:.0f} | {row['seconds']:.2f} |")
    print(f"\nchunked / full memory: {memory_rows[0]['peak_growth_mb'] / memory_rows[1]['peak_growth_mb']:.2f}x; "
          f"plot: {PLOT}")
    if args.json:
        args.json.write_text(json.dumps({"report": report, "loads": loads, "final_curve": final.curve,
                                         "best": final.best, "latency": speed, "memory": memory_rows,
                                         "train": {"steps": final.training.steps, **{k: metrics[k] for k in (
                                             "train_seconds", "train_cpu_seconds")}}}, indent=1))


if __name__ == "__main__":
    main()
