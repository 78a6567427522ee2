"""Choose how ``select`` ranks its candidate sentences, on the two TUNING sets only.

The tuning sets are pydoc (``examples/pydoc-kb``) and the tuning manuals (zlib's usage example,
fontconfig, Debian's users and groups: ``examples/tuning-manuals-kb``). The held-out manuals
(``examples/manuals-kb``) are never read here.

``collect KB QA OUT`` runs every question once (resumable: questions already in OUT are skipped)
and stores, per question, the retrieval abstention score and the ``POOL`` distinct candidate
sentences of the top chunks (closest to the question first), each with what a ranker may use:
cosine similarity, the bundled model's question likelihood (``select``'s score: mean log p of the
question after ``Text: SENTENCE``), and the answer's pointwise mutual information with the question
(``select.answer_pmis``). The model is loaded as
``slm kb eval`` loads it (``backend="auto"``).

``report NAME=OUT ...`` scores rules from those files without running a model: the current rule,
fixed mixes, and a logistic regression over per-candidate features trained on one tuning set and
scored on the other (leave-one-set-out: what a learned ranker gets on documents it was not fitted
to), then fitted on both for the constants ``kb/select.py`` ships. The abstention threshold of
the key-term score is picked on both sets together by the documented rule.

Usage:
  python examples/pydoc-kb/tune_ranker.py collect pydoc examples/pydoc-kb/qa.jsonl build/kb-tune/pydoc.jsonl
  python examples/pydoc-kb/tune_ranker.py collect tuning-manuals examples/tuning-manuals-kb/qa.jsonl \\
      build/kb-tune/tuning-manuals.jsonl
  python examples/pydoc-kb/tune_ranker.py report pydoc=build/kb-tune/pydoc.jsonl \\
      tuning-manuals=build/kb-tune/tuning-manuals.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

POOL = 6  # candidate sentences recorded per question


def collect(kb: str, qa: Path, out: Path, model: str, pmi: bool, threads: int) -> None:
    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.engine import load_engine
    from slmkit.kb import select, specialist
    from slmkit.kb.answer import CONTEXT_CHUNKS, abstention_score, term_coverage
    from slmkit.kb.evaluate import read_qa
    from slmkit.kb.retrieve import default_embedder, search

    done = set()
    if out.exists():
        done = {json.loads(line)["question"] for line in out.read_text().splitlines() if line.strip()}
    embedder = default_embedder()
    engine = load_engine(model, threads=threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    for item in read_qa(qa):
        if item.question in done:
            continue
        hits = search(kb, item.question, k=5, embedder=embedder)[:CONTEXT_CHUNKS]
        similarity = max((h.similarity for h in hits), default=0.0)
        coverage = term_coverage(item.question, [f"{h.section} {h.text}" for h in hits])
        pool = specialist.candidate_sentences(kb, item.question, embedder, count=POOL, hits=hits)
        texts = [c.text for c in pool]
        likelihoods = select.question_likelihoods(engine, item.question, texts)
        pmis = select.answer_pmis(engine, item.question, texts) if pmi else [None] * len(texts)
        row = {"question": item.question, "answerable": item.answerable, "keywords": item.answer_keywords,
               "similarity": similarity, "coverage": coverage,
               "keyterm_score": abstention_score("select", similarity, coverage),
               "candidates": [{"source": c.source, "text": c.text, "similarity": c.similarity, "likelihood": lik,
                               "pmi": pmi}
                              for c, lik, pmi in zip(pool, likelihoods, pmis, strict=True)]}
        with out.open("a", encoding="utf-8") as handle:  # one line per question: a killed run resumes
            handle.write(json.dumps(row) + "\n")
        done.add(item.question)
        print(f"{len(done)}: {item.question}", flush=True)


def z(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return (array - array.mean()) / array.std() if array.std() > 1e-9 else np.zeros_like(array)


def features(row: dict, candidates: int) -> np.ndarray:
    """Per-candidate features (rows) of one question, as ``kb.select.candidate_features`` computes them."""
    from slmkit.kb.select import FEATURES, candidate_features

    pool = row["candidates"][:candidates]
    matrix = candidate_features(row["question"], [c["text"] for c in pool], [c["source"] for c in pool],
                                [c["similarity"] for c in pool], [c["likelihood"] for c in pool],
                                [c["pmi"] if c["pmi"] is not None else math.nan for c in pool])
    assert matrix.shape == (len(pool), len(FEATURES))
    return matrix


def correct(row: dict, order: list[int], sentences: int = 2) -> bool:
    """Whether the answer made of the candidates ``order[:sentences]`` holds every keyword."""
    from slmkit.kb.evaluate import keywords_present
    from slmkit.kb.select import Candidate, format_answer

    pool = row["candidates"]
    best = [Candidate(pool[i]["source"], pool[i]["text"], pool[i]["similarity"]) for i in order[:sentences]]
    return keywords_present(format_answer(best), row["keywords"])


def labels(row: dict, candidates: int) -> np.ndarray:
    from slmkit.kb.evaluate import keywords_present

    return np.array([keywords_present(c["text"], row["keywords"]) for c in row["candidates"][:candidates]], dtype=int)


def count_correct(rows: list[dict], candidates: int, score) -> int:
    """Answerable questions whose two best candidates under ``score(row, matrix)`` hold every keyword."""
    total = 0
    for row in rows:
        if not row["answerable"] or not row["candidates"]:
            continue
        values = score(row, features(row, candidates))
        total += correct(row, sorted(range(len(values)), key=lambda i: -values[i]))
    return total


def fit(rows: list[dict], candidates: int, columns: list[int], regularization: float):
    """A logistic regression (``sklearn``) over the chosen feature columns, trained on the answerable
    questions' candidates: does this candidate hold every keyword?"""
    from sklearn.linear_model import LogisticRegression

    answerable = [r for r in rows if r["answerable"] and r["candidates"]]
    x = np.vstack([features(r, candidates)[:, columns] for r in answerable])
    y = np.concatenate([labels(r, candidates) for r in answerable])
    return LogisticRegression(C=regularization, max_iter=5000).fit(x, y)


def report(sets: dict[str, Path]) -> None:
    from slmkit.kb.calibrate import choose_threshold, rates
    from slmkit.kb.evaluate import QAResult, apply_threshold
    from slmkit.kb.select import FEATURES

    data = {name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for name, path in sets.items()}
    names = list(data)
    answerable = {n: sum(r["answerable"] for r in rows) for n, rows in data.items()}
    print(f"sets: {', '.join(f'{n} ({len(r)} questions, {answerable[n]} answerable)' for n, r in data.items())}\n")
    for candidates in (3, 4, 6):
        ceiling = {n: sum(r["answerable"] and bool(labels(r, candidates).any()) for r in rows) for n, rows in data.items()}
        print(f"- {candidates} candidates: ceiling (a candidate holds every keyword) "
              + ", ".join(f"{n} {ceiling[n]}/{answerable[n]}" for n in names))
    print("\nFixed mixes (z-scores within the question), two answer sentences:\n")
    print("| candidates | score | " + " | ".join(names) + " | total |")
    print("|---:|---|" + "---:|" * (len(names) + 1))
    column = {name: i for i, name in enumerate(FEATURES)}
    mixes = {"cosine": {"similarity": 1}, "likelihood": {"likelihood": 1},
             "cosine + likelihood (current rule)": {"similarity": 1, "likelihood": 1},
             "pmi": {"pmi": 1}, "cosine + pmi": {"similarity": 1, "pmi": 1},
             "cosine + likelihood + pmi": {"similarity": 1, "likelihood": 1, "pmi": 1},
             "cosine + likelihood + overlap": {"similarity": 1, "likelihood": 1, "overlap": 1},
             "cosine + overlap (no model)": {"similarity": 1, "overlap": 1}}
    has_pmi = all(c["pmi"] is not None for rows in data.values() for r in rows for c in r["candidates"])
    if not has_pmi:  # collected with --no-pmi
        mixes = {label: w for label, w in mixes.items() if "pmi" not in w}
    for candidates in (3, 4, 6):
        for label, weights in mixes.items():
            counts = [count_correct(data[n], candidates, lambda row, m, w=weights: sum(
                v * m[:, column[f]] for f, v in w.items())) for n in names]
            print(f"| {candidates} | {label} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    print("\nLogistic regression, leave-one-set-out (fitted on the other set, scored on this one), two sentences:\n")
    print("| candidates | features | C | " + " | ".join(names) + " | total |")
    print("|---:|---|---:|" + "---:|" * (len(names) + 1))
    feature_sets = {"cosine, likelihood": ["similarity", "likelihood"],
                    "cosine, likelihood, pmi": ["similarity", "likelihood", "pmi"],
                    "cosine, likelihood, overlap": ["similarity", "likelihood", "overlap"],
                    "no model: cosine, overlap, rank, chunk, length": ["similarity", "overlap", "rank", "chunk", "length"],
                    "all": [f for f in FEATURES if has_pmi or f != "pmi"]}
    feature_sets = {label: f for label, f in feature_sets.items() if has_pmi or "pmi" not in f}
    for candidates in (4, 6):
        for label, chosen in feature_sets.items():
            columns = [column[f] for f in chosen]
            for regularization in (0.1, 1.0):
                counts = []
                for n in names:
                    others = [r for m in names if m != n for r in data[m]]
                    model = fit(others, candidates, columns, regularization)
                    counts.append(count_correct(data[n], candidates,
                                                lambda row, m, c=columns, f=model: f.decision_function(m[:, c])))
                print(f"| {candidates} | {label} | {regularization} | " + " | ".join(str(c) for c in counts)
                      + f" | {sum(counts)} |")
    every = [r for n in names for r in data[n]]
    print("\nFitted on both sets (the constants a chosen rule ships):\n")
    for candidates in (4, 6):
        for label, chosen in feature_sets.items():
            model = fit(every, candidates, [column[f] for f in chosen], 1.0)
            print(f"- {candidates} candidates, {label}: "
                  + ", ".join(f"{f} {w:+.3f}" for f, w in zip(chosen, model.coef_[0], strict=True)))
    print("\nAbstention: similarity x (1 - w + w x key-term coverage), threshold by the rule (Youden's J, middle "
          "of ties) on each set and on both together:\n")
    print("| w | set(s) | threshold | abstention | false abstention | J |")
    print("|---:|---|---:|---:|---:|---:|")
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        for label, rows in [*((n, data[n]) for n in names), (" + ".join(names), every)]:
            results = [QAResult(r["question"], r["answerable"], [], "x", False, None, 0.0,
                                confidence=r["similarity"] * (1 - weight + weight * r["coverage"]), generated="x",
                                generated_correct=True if r["answerable"] else None) for r in rows]
            threshold = choose_threshold(results)
            _, abstention, false_abstention = rates(apply_threshold(results, threshold))
            print(f"| {weight} | {label} | {threshold:.3f} | {abstention:.3f} | {false_abstention:.3f} "
                  f"| {abstention - false_abstention:.3f} |")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("collect")
    run.add_argument("kb")
    run.add_argument("qa", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--model", default="smollm2-135m")
    run.add_argument("--threads", type=int, default=1, help="model threads (1: no spinning on a busy machine)")
    run.add_argument("--no-pmi", action="store_true", help="skip the PMI feature (two thirds of the model's work)")
    show = commands.add_parser("report")
    show.add_argument("sets", nargs="+", help="NAME=FEATURES.jsonl for each tuning set")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.kb, args.qa, args.out, args.model, not args.no_pmi, args.threads)
    else:
        report({s.split("=", 1)[0]: Path(s.split("=", 1)[1]) for s in args.sets})


if __name__ == "__main__":
    main()
