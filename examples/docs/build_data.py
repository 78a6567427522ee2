"""The data of docs/documents.md's worked example: synthetic invoices, contracts and tickets as
PDFs with gold answers, and chat training examples for the extractor.

Splits (each a folder of PDFs plus gold.jsonl, one {"file", "kind", "fields"} per PDF):
- train: tune layouts; its train.jsonl (the extraction prompt and the printed answer as chat
  messages, read back from the PDFs the same way `slm docs extract` reads them) trains the model
  (`--classify-every N`: every Nth document also the classification prompt and its kind, for the
  model's own classifier, which the built-in kinds no longer use: they are classified by
  embedding centroids);
- dev: tune layouts, other documents: what settings were tuned on;
- heldout: layouts never used in training or tuning: what the headline numbers are measured on.

Usage: python examples/docs/build_data.py OUT [--train 336 --dev 36 --heldout 24] [--classify-every 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmkit.docs import classify
from slmkit.docs.extract import answer_json, build_messages, document_candidates
from slmkit.docs.pdf import read_pages
from slmkit.docs.schemas import load_schema
from slmkit.docs.synthetic import HELDOUT_LAYOUTS, TUNE_LAYOUTS, make_documents, write_pdf

SEEDS = {"train": 1, "dev": 2, "heldout": 3}
def on_page(value: str | None, spans: list[str] | None) -> str | None:
    """``value`` as the page prints it: the candidate span it matches case aside (a printout's
    names are in capitals), which is what the copy constraint lets the model write."""
    if value is None or not spans:
        return value
    return next((span for span in spans if span.casefold() == value.casefold()), value)


def write_split(out: Path, split: str, count: int, chat: bool, classify_every: int = 0) -> None:
    layouts = HELDOUT_LAYOUTS if split == "heldout" else TUNE_LAYOUTS
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    gold, examples = [], []
    for index, document in enumerate(make_documents(count, layouts, SEEDS[split])):
        name = f"{split}-{index:04d}-{document.kind}-{document.layout}.pdf"
        write_pdf(document, folder / name)
        gold.append({"file": name, "kind": document.kind, "layout": document.layout, "fields": document.fields,
                     "parties": document.parties, "subject": document.subject})
        if chat:
            schema = load_schema(document.kind)
            pages = read_pages(folder / name, isolated=False)  # our own PDFs: no need for the isolated reader
            spans = document_candidates(pages, schema)
            answer = answer_json({f.name: on_page(document.printed[f.name], spans.get(f.name)) for f in schema.fields})
            examples.append({"messages": [*build_messages(pages, schema), {"role": "assistant", "content": answer}]})
            if classify_every and index % classify_every == 0:  # some documents also teach the kind
                examples.append({"messages": [*classify.build_messages(pages), {"role": "assistant",
                                                                                "content": classify.answer_json(document.kind)}]})
    (folder / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    if chat:
        (out / "train.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples),
                                         encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=336)
    parser.add_argument("--dev", type=int, default=36)
    parser.add_argument("--heldout", type=int, default=24)
    parser.add_argument("--classify-every", type=int, default=0, help="also a classification example every N "
                                                                      "training documents (0: none)")
    args = parser.parse_args()
    for split, count in (("train", args.train), ("dev", args.dev), ("heldout", args.heldout)):
        write_split(args.out, split, count, chat=split == "train", classify_every=args.classify_every)
        print(f"{split}: {count} documents in {args.out / split}")


if __name__ == "__main__":
    main()
