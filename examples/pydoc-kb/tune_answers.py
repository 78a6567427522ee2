"""Choose how the support bot picks its answer sentences, on the TUNING set (pydoc) only.

``collect`` runs every question of the QA file once and stores, per question, what each
answer-selection rule needs (resumable: questions already in OUT are skipped): the candidate
sentences of the top retrieved chunks (closest to the question first), each with its cosine
similarity, the bundled model's question likelihood (``select``'s score) and the specialist's
log-probability of copying it (prompted with the first ``specialist.CANDIDATES`` of them), the
specialist's log-probability of the abstention message, and the retrieval abstention score.
``report`` then scores every combination of rules from that file without running a model:
which candidates, how their scores are mixed, how many sentences answer, and which abstention
score decides (each threshold picked on the same file by the documented rule,
``kb.calibrate.choose_threshold``). Nothing here reads the held-out set.

Usage:
  python examples/pydoc-kb/tune_answers.py collect pydoc examples/pydoc-kb/qa.jsonl build/kb-eval/pydoc-features.jsonl
  python examples/pydoc-kb/tune_answers.py report build/kb-eval/pydoc-features.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

POOL = 6  # candidate sentences recorded per question
# Abstention scores tried: the retrieval key-term score, the specialist's margin (nats), and the
# key-term score plus a small multiple of the margin (the two on one scale without a fit).
ABSTENTION_SCORES = [("keyterm", 0.0), ("margin", 1.0), ("keyterm+0.01*margin", 0.01),
                     ("keyterm+0.02*margin", 0.02), ("keyterm+0.05*margin", 0.05)]


def collect(kb: str, qa: Path, out: Path, base: str, specialist_model: str) -> None:
    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.engine import load_engine
    from slmkit.kb import select, specialist
    from slmkit.kb.answer import CONTEXT_CHUNKS, IDK_MESSAGE, abstention_score, term_coverage
    from slmkit.kb.evaluate import read_qa
    from slmkit.kb.retrieve import default_embedder, search

    done = set()
    if out.exists():
        done = {json.loads(line)["question"] for line in out.read_text().splitlines() if line.strip()}
    embedder = default_embedder()
    base_engine, specialist_engine = load_engine(base, backend="torch"), load_engine(specialist_model, backend="torch")
    out.parent.mkdir(parents=True, exist_ok=True)
    for item in read_qa(qa):
        if item.question in done:
            continue
        hits = search(kb, item.question, k=5, embedder=embedder)[:CONTEXT_CHUNKS]
        similarity = max((h.similarity for h in hits), default=0.0)
        coverage = term_coverage(item.question, [f"{h.section} {h.text}" for h in hits])
        pool = specialist.candidate_sentences(kb, item.question, embedder, count=POOL, hits=hits)
        likelihoods = select.question_likelihoods(base_engine, item.question, [c.text for c in pool])
        shown = pool[: specialist.CANDIDATES]
        messages = specialist.specialist_messages(item.question, shown)
        *copies, idk = specialist.completion_logprobs(
            specialist_engine, messages, [f"{c.text} [{c.source + 1}]" for c in shown] + [IDK_MESSAGE])
        row = {"question": item.question, "answerable": item.answerable, "keywords": item.answer_keywords,
               "similarity": similarity, "coverage": coverage,
               "keyterm_score": abstention_score("select", similarity, coverage), "idk": idk,
               "candidates": [{"source": c.source, "text": c.text, "similarity": c.similarity, "likelihood": lik,
                               "copy": copies[n] if n < len(copies) else None}
                              for n, (c, lik) in enumerate(zip(pool, likelihoods, strict=True))]}
        with out.open("a", encoding="utf-8") as handle:  # one line per question: a killed run resumes
            handle.write(json.dumps(row) + "\n")
        print(f"{len(done) + 1}: {item.question}", flush=True)
        done.add(item.question)


def add_specialist_likelihood(features: Path, out: Path, specialist_model: str) -> None:
    """Copy ``features`` to ``out`` with each candidate's question likelihood under the specialist
    itself (``likelihood_kb``), so a rule needing one model only can be scored (resumable)."""
    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.engine import load_engine
    from slmkit.kb import select

    done = set()
    if out.exists():
        done = {json.loads(line)["question"] for line in out.read_text().splitlines() if line.strip()}
    engine = load_engine(specialist_model, backend="torch")
    for line in features.read_text().splitlines():
        row = json.loads(line)
        if row["question"] in done:
            continue
        texts = [c["text"] for c in row["candidates"]]
        for c, value in zip(row["candidates"], select.question_likelihoods(engine, row["question"], texts), strict=True):
            c["likelihood_kb"] = value
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(row["question"], flush=True)


def z(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return (array - array.mean()) / array.std() if array.std() > 1e-9 else np.zeros_like(array)


def answer(row: dict, candidates: int, weights: tuple[float, float, float], sentences: int,
           per_token: bool = False, likelihood: str = "likelihood") -> tuple[str, float]:
    """The answer text a rule gives, and the specialist margin of its best sentence (nan if not scored).
    ``per_token``: the specialist's copy log-probabilities (and the margin) divided by the answer's
    token count; ``likelihood``: whose question likelihood (``likelihood``: the bundled model's,
    ``likelihood_kb``: the specialist's)."""
    from slmkit.kb.select import Candidate, format_answer

    pool = row["candidates"][:candidates]
    if not pool:
        return "", float("nan")
    copy = [c["copy"] if c["copy"] is not None else -1e9 for c in pool]
    if per_token:
        copy = [value / c["tokens"] if c["copy"] is not None else -1e9 for value, c in zip(copy, pool, strict=True)]
    score = (weights[0] * z([c["similarity"] for c in pool]) + weights[1] * z([c[likelihood] for c in pool])
             + weights[2] * z(copy))
    order = sorted(range(len(pool)), key=lambda i: -score[i])[:sentences]
    best = [Candidate(pool[i]["source"], pool[i]["text"], pool[i]["similarity"]) for i in order]
    margin = max(copy) - (row["idk"] / row["idk_tokens"] if per_token else row["idk"])
    return format_answer(best), margin


def report(features: Path) -> None:
    from transformers import AutoTokenizer

    from slmkit.kb.answer import IDK_MESSAGE
    from slmkit.kb.calibrate import choose_threshold, rates
    from slmkit.kb.evaluate import QAResult, apply_threshold, keywords_present
    from slmkit.models import store_path

    rows = [json.loads(line) for line in features.read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(str(store_path("smollm2-135m-kb")))
    for row in rows:
        for c in row["candidates"]:
            c["tokens"] = len(tokenizer(f"{c['text']} [{c['source'] + 1}]", add_special_tokens=False)["input_ids"]) + 1
        row["idk_tokens"] = len(tokenizer(IDK_MESSAGE, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
    sources = ["likelihood", "likelihood_kb"] if all("likelihood_kb" in c for r in rows for c in r["candidates"]) \
        else ["likelihood"]
    answerable = sum(r["answerable"] for r in rows)
    print(f"{features} ({len(rows)} questions, {answerable} answerable)\n")
    for candidates in (3, 4, 6):  # the most any ranking of these candidates can get right
        ceiling = sum(r["answerable"] and any(keywords_present(c["text"], r["keywords"]) for c in r["candidates"][:candidates])
                      for r in rows)
        print(f"- {candidates} candidates: {ceiling} of {answerable} answerable questions have one candidate "
              "holding every keyword (the ceiling of any ranking)")
    print()
    print("| candidates | weights (cosine, likelihood, specialist copy) | likelihood of | copy per token | sentences "
          f"| correct if answered (of {answerable}) | abstention score | threshold (rule) | accuracy | abstention "
          "| false abstention |")
    print("|---:|---|---|---|---:|---:|---|---:|---:|---:|---:|")
    weight_options = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1), (1, 0.5, 1),
                      (1, 1, 2), (0.5, 1, 1)]
    for candidates, weights, source, per_token, sentences in itertools.product(
            (3, 4, 6), weight_options, sources, (False, True), (1, 2)):
        if (weights[2] and candidates > 4) or (source != "likelihood" and not weights[1]):
            continue  # the specialist scored only the first 4; the likelihood's model matters only when weighted
        answers = [answer(r, candidates, weights, sentences, per_token, source) for r in rows]
        correct = sum(r["answerable"] and keywords_present(text, r["keywords"])
                      for r, (text, _) in zip(rows, answers, strict=True))
        for name, margin_weight in ABSTENTION_SCORES:
            results = []
            for r, (text, margin) in zip(rows, answers, strict=True):
                confidence = margin if name == "margin" else r["keyterm_score"] + margin_weight * margin
                ok = r["answerable"] and keywords_present(text, r["keywords"])
                results.append(QAResult(r["question"], r["answerable"], [], text, False, None, 0.0,
                                        confidence=confidence, generated=text,
                                        generated_correct=ok if r["answerable"] else None))
            threshold = choose_threshold(results)
            accuracy, abstention, false_abstention = rates(apply_threshold(results, threshold))
            print(f"| {candidates} | {weights} | {source} | {'yes' if per_token else 'no'} | {sentences} | {correct} | "
                  f"{name} | "
                  f"{threshold:.3f} | {accuracy:.3f} | "
                  f"{abstention:.3f} | {false_abstention:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("collect")
    run.add_argument("kb")
    run.add_argument("qa", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--base", default="smollm2-135m")
    run.add_argument("--specialist", default="smollm2-135m-kb")
    extra = commands.add_parser("add-kb-likelihood")
    extra.add_argument("features", type=Path)
    extra.add_argument("out", type=Path)
    extra.add_argument("--specialist", default="smollm2-135m-kb")
    show = commands.add_parser("report")
    show.add_argument("features", type=Path)
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.kb, args.qa, args.out, args.base, args.specialist)
    elif args.command == "add-kb-likelihood":
        add_specialist_likelihood(args.features, args.out, args.specialist)
    else:
        report(args.features)


if __name__ == "__main__":
    main()
