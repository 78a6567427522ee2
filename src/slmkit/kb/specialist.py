"""The grounded-QA specialist: a model fine-tuned to copy the retrieved sentence that answers, or abstain.

The specialist (``make example-kb-specialist``: SmolLM2-135M-Instruct + LoRA, merged, stored as
``SPECIALIST_NAME``) is shown the candidate sentences of the retrieved chunks, each with its
source number, and the question; it was trained to answer with one of them copied verbatim and
cited, or with the abstention message (``examples/kb-specialist/build_data.py``).

Answering is **copy-constrained**: the answer can only be one of the candidates or the
abstention message. Instead of decoding token by token under a grammar, every allowed answer is
scored by the model's log-probability of producing it whole (teacher-forced after the prompt,
which is computed once for all of them: ``Engine.continuation_logprobs``): the exact best answer
of that constrained set rather than a greedy approximation of it. The abstention score is the margin between the best sentence and
the abstention message (log-probability, nats): the model's own evidence that the text answers.
The same procedure runs with any chat model, so the bundled model without fine-tuning is the
comparison row in ``slm kb eval``.
"""

from __future__ import annotations

import dataclasses

from slmkit.engine.scoring import score_continuations
from slmkit.errors import InvalidRequestError
from slmkit.kb import select
from slmkit.kb.retrieve import search

SPECIALIST_NAME = "smollm2-135m-kb"  # the store name `make example-kb-specialist` writes
CANDIDATES = 4  # sentences shown to the specialist (the closest to the question by embedding similarity)
SYSTEM_PROMPT = ("Answer the question by copying the one sentence of the text that answers it, followed by its "
                 "source number. If no sentence answers it, say that you don't know.")


def specialist_available() -> bool:
    """Whether the specialist is in the model store."""
    from slmkit.models import store_path

    return store_path(SPECIALIST_NAME).exists()


def default_model() -> str:
    """The model the support bot answers with by default: the bundled model in ``select`` mode.

    Not the specialist, even when it is in the store: evaluated, it answered worse than
    ``select`` with the bundled model on both QA sets (held-out manuals 0.234 vs 0.660,
    docs/support-bot.md), so it is used only when asked for (``--model smollm2-135m-kb``, or a
    server that serves it)."""
    return "smollm2-135m"


def default_mode(model: str) -> str:
    """The answer mode for ``model``: ``specialist`` for the specialist, ``select`` for any other model."""
    return "specialist" if model == SPECIALIST_NAME else "select"


def candidate_sentences(kb_name: str, question: str, embedder, count: int = CANDIDATES, extra: int = 0,
                        hits=None) -> list[select.Candidate]:
    """The ``count + extra`` sentences of the top retrieved chunks closest to ``question``, best first."""
    from slmkit.kb.answer import CONTEXT_CHUNKS, sanitize, scored_sentences

    if hits is None:
        hits = search(kb_name, question, k=5, embedder=embedder)[:CONTEXT_CHUNKS]
    sentences, similarities = scored_sentences(question, hits, embedder)
    order = sorted(range(len(sentences)), key=lambda i: -similarities[i])
    chosen, seen = [], set()
    for i in order:
        text = sanitize(select.shorten(sentences[i][1]))
        if text in seen:
            continue
        seen.add(text)
        chosen.append(select.Candidate(sentences[i][0], text, float(similarities[i])))
        if len(chosen) == count + extra:
            break
    return chosen


def specialist_messages(question: str, candidates: list[select.Candidate]) -> list[dict]:
    """The chat the specialist reads: the rules, then the numbered sentences and the question."""
    text = "\n".join(f"[{c.source + 1}] {c.text}" for c in candidates)
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Text:\n{text}\n\nQuestion: {question.strip()}"}]


def completion_logprobs(engine, messages: list[dict], completions: list[str]) -> list[float]:
    """Log-probability (nats) that the model answers ``messages`` with exactly each of ``completions``
    and ends its turn. The chat prompt is computed once and every completion scored after it
    (:func:`slmkit.engine.scoring.score_continuations`)."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError("The specialist mode scores answers through the model's chat template; use a chat "
                                  "model on the torch engine, or --mode select.", param="mode")
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = engine.tokenize(prompt)
    shared, alone = {}, {}  # completion index -> its tokens after the prompt / its whole token ids
    for index, completion in enumerate(completions):
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": completion}], tokenize=False)
        if not full.startswith(prompt):
            raise InvalidRequestError("This model's chat template does not render an answer after its prompt.")
        full_ids = engine.tokenize(full.rstrip("\n"))
        if full_ids[: len(prompt_ids)] == prompt_ids:
            shared[index] = full_ids[len(prompt_ids):]
        else:  # the tokenizer merged the answer's first characters into the prompt's last token
            alone[index] = full_ids
    scores = dict(zip(shared, score_continuations(engine, prompt_ids, list(shared.values())), strict=True))
    scores.update({index: engine.token_logprobs(ids)[len(prompt_ids) - 1:] for index, ids in alone.items()})
    return [float(sum(scores[index])) for index in range(len(completions))]


def completion_logprob(engine, messages: list[dict], completion: str) -> float:
    """Log-probability (nats) that the model answers ``messages`` with exactly ``completion`` and ends its turn."""
    return completion_logprobs(engine, messages, [completion])[0]


@dataclasses.dataclass
class Choice:
    """What the specialist chose: the best candidate (best first), and its margin over abstaining."""

    ranked: list[select.Candidate]  # candidates by log-probability of being copied as the answer, best first
    margin: float  # log p(best sentence) - log p(abstention message); below the threshold: abstain


def choose(engine, question: str, candidates: list[select.Candidate], idk_message: str) -> Choice:
    """Score every candidate (copied, with its citation) and the abstention message as the model's whole answer."""
    messages = specialist_messages(question, candidates)
    *scores, abstain = completion_logprobs(engine, messages, [f"{c.text} [{c.source + 1}]" for c in candidates]
                                           + [idk_message])
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.score = score
    ranked = sorted(candidates, key=lambda c: -c.score)
    margin = ranked[0].score - abstain if ranked else float("-inf")
    return Choice(ranked, float(margin))
