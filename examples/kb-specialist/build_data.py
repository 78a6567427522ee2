"""Training data of the grounded-QA specialist (docs/support-bot.md#the-grounded-qa-specialist).

Questions are generated from documents by **templates over sentences**: a sentence of the form
"SUBJECT is/are …", "SUBJECT returns …", "SUBJECT can/must/should VERB …", "If CONDITION, …",
"To DO X, …" or "SUBJECT uses/takes/… …" becomes the question "What is SUBJECT?", "What does
SUBJECT return?", "What can SUBJECT VERB?", "What happens if CONDITION?", "How do you DO X?" or
"What does SUBJECT use?", and that sentence is its answer. Each question is then asked of the
knowledge base the way the support bot asks it (hybrid retrieval, the sentences of the top
chunks closest to the question), and the example shows the model those candidate sentences:

- **answerable** (about 60 %): the source sentence is among the candidates (put there if
  retrieval missed it); the target is that sentence copied, with its citation ``[n]``;
- **near-topic unanswerable** (about 30 %): the source sentence and any candidate containing
  it are removed, so the model sees related text that does not answer; the target is the
  abstention answer;
- **off-topic unanswerable** (about 10 %): the candidates retrieved for another question.

The documents are Debian manuals that are in neither QA set: ninja's manual, GNU time's, the
expat reference and the shared-mime-info specification. Not the Python reference (the tuning
set's corpus, so the tuning set stays fair for the abstention threshold), not the bzip2, libffi
and bc manuals (the held-out set) and not Valgrind's (kept for an independent check).

Usage: ``python examples/kb-specialist/build_data.py build/kb-specialist`` (writes
``docs/``, a knowledge base in ``home/``, and ``train.jsonl``; an existing ``train.jsonl`` is kept).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

DOC = Path("/usr/share/doc")
MANUALS = {  # name in the training knowledge base -> file installed by Debian
    "ninja-manual.html": DOC / "ninja-build" / "manual.html",
    "time.html": DOC / "time" / "time.html",
    "expat-reference.html": DOC / "libexpat1-dev" / "expat.html" / "reference.html",
    "shared-mime-info-spec.html": DOC / "shared-mime-info" / "shared-mime-info-spec.html" / "x34.html",
}
KB_NAME = "specialist-train"
QUESTIONS = 360  # examples written (sized so one epoch trains in well under an hour on 2 cores)
SEED = 0
SUBJECT = r"((?:[Tt]he |[Aa]n? |[Ee]ach |[Ee]very )?[\w`'\"./()\-]+(?: [\w`'\"./()\-]+){0,5})"
TEMPLATES = [  # (sentence pattern, question format); the sentence must start with the pattern
    (re.compile(SUBJECT + r" (is|are) (?!not\b)(.{12,})"), "What {1} {0}?"),
    (re.compile(SUBJECT + r" returns (.{8,})"), "What does {0} return?"),
    (re.compile(SUBJECT + r" (can|must|should|may|will) (?!not\b|be\b)(\w+) (.{8,})"), "What {1} {0} {2}?"),
    (re.compile(r"If (.{8,80}?), (.{12,})"), "What happens if {0}?"),
    (re.compile(r"To (.{8,60}?), (.{12,})"), "How do you {0}?"),
    (re.compile(SUBJECT + r" (uses|takes|contains|requires|supports|provides|defines|specifies|accepts) (.{8,})"),
     "What does {0} {1}?"),
]
VAGUE = {"you", "it", "this", "that", "these", "those", "they", "we", "there", "only", "also", "such", "some", "most",
         "all", "other", "here", "one", "so", "then", "thus", "in", "for", "and", "but", "or", "i"}
BASE_FORMS = {"uses": "use", "takes": "take", "contains": "contain", "requires": "require", "supports": "support",
              "provides": "provide", "defines": "define", "specifies": "specify", "accepts": "accept"}


def template_question(sentence: str) -> str | None:
    """A question the sentence answers, by the first template that fits it; None when none does."""
    flat = " ".join(sentence.split())
    if not 40 <= len(flat) <= 300 or not flat.endswith("."):
        return None
    for pattern, form in TEMPLATES:
        match = pattern.match(flat)
        if not match:
            continue
        groups = [g.strip() for g in match.groups()]
        if groups[0].split()[0].lower() in VAGUE or re.search(r"[:;]", groups[0]):
            return None  # "What may you also?", "How do you state the obvious: …?" ask nothing
        groups = [BASE_FORMS.get(g, g) for g in groups]
        if groups[0][:1].isupper() and groups[0].split()[0] in ("The", "A", "An", "Each", "Every"):
            groups[0] = groups[0][0].lower() + groups[0][1:]
        question = form.format(*groups)
        return question[0].upper() + question[1:]
    return None


def copy_manuals(destination: Path) -> None:
    missing = [str(p) for p in MANUALS.values() if not p.is_file()]
    if missing:
        sys.exit(f"Missing manuals: {', '.join(missing)}. Install them with "
                 "`apt-get install ninja-build time libexpat1-dev shared-mime-info`.")
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in MANUALS.items():
        temporary = destination / f".{name}.tmp"
        shutil.copyfile(source, temporary)
        temporary.replace(destination / name)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "train.jsonl"
    if target.exists():
        print(f"{target} exists; delete it to rebuild")
        return
    os.environ["SLM_HOME"] = str((out / "home").resolve())  # the training knowledge base stays in the build folder
    copy_manuals(out / "docs")

    from slmkit.cli.common import quiet_libraries

    quiet_libraries()
    from slmkit.kb.answer import IDK_MESSAGE, split_sentences
    from slmkit.kb.index import connect, existing_kb_path, ingest
    from slmkit.kb.retrieve import default_embedder
    from slmkit.kb.specialist import candidate_sentences, specialist_messages

    ingest(KB_NAME, [out / "docs"])
    connection = connect(existing_kb_path(KB_NAME))
    chunks = [row[0] for row in connection.execute("SELECT text FROM chunks ORDER BY id")]
    connection.close()
    pairs = {}
    for text in chunks:
        for sentence in split_sentences(text):
            question = template_question(sentence)
            if question and question not in pairs:
                pairs[question] = " ".join(sentence.split())
    rng = random.Random(SEED)
    questions = sorted(pairs)
    rng.shuffle(questions)
    questions = questions[:QUESTIONS]
    embedder = default_embedder()
    rows, counts = [], {"answerable": 0, "near-topic unanswerable": 0, "off-topic unanswerable": 0}
    for number, question in enumerate(questions):
        source = pairs[question]
        draw = rng.random()
        asked_for = questions[(number + 1) % len(questions)] if draw >= 0.9 else question
        candidates = candidate_sentences(KB_NAME, asked_for, embedder, extra=2)
        key = " ".join(source.split())[:60]
        containing = [c for c in candidates if key in " ".join(c.text.split()) or " ".join(c.text.split())[:60] in source]
        if draw < 0.6:
            kind = "answerable"
            options = [c for c in candidates if c not in containing][:3]
            from slmkit.kb.select import Candidate, shorten

            chosen = containing[0] if containing else Candidate(options[-1].source if options else 0, shorten(source), 1.0)
            options = options[:3] + [chosen]
            rng.shuffle(options)
            answer = f"{chosen.text} [{chosen.source + 1}]"
        else:
            kind = "near-topic unanswerable" if draw < 0.9 else "off-topic unanswerable"
            options = [c for c in candidates if c not in containing][:4]
            rng.shuffle(options)
            answer = IDK_MESSAGE
        if not options:
            continue
        counts[kind] += 1
        rows.append(json.dumps({"messages": [*specialist_messages(question, options),
                                             {"role": "assistant", "content": answer}], "kind": kind}) + "\n")
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text("".join(rows), encoding="utf-8")
    temporary.replace(target)
    print(f"{len(pairs)} template questions from {len(chunks)} chunks; wrote {len(rows)} examples to {target}: {counts}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/kb-specialist"))
