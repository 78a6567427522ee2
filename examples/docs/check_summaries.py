"""How often `slm docs summarize` names someone as the subject or one name as both parties, on
the documents of a split, from the extractions a `bench/docs.py` run kept (its details file), so
no model runs again: the check behind docs/documents.md's summary numbers on `dev`.

Usage: python examples/docs/check_summaries.py GOLD.jsonl DETAILS.jsonl
(e.g. build/example-docs/data/dev/gold.jsonl build/example-docs/data/details-dev-all-tuned.jsonl)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slmkit.docs.evaluate import read_gold
from slmkit.docs.pdf import read_pages
from slmkit.docs.schemas import load_schema
from slmkit.docs.summarize import combine, coverage, distinct_parties, gists, split_sections, stated_subject
from slmkit.docs.synthetic import FIRST, LAST
from slmkit.embeddings import load_embedding_model


def main() -> None:
    gold, details = Path(sys.argv[1]), Path(sys.argv[2])
    extracted = {r["file"]: r for r in map(json.loads, details.read_text().splitlines())}
    embedder = load_embedding_model("minilm-l6")
    people = [f"{first} {last}" for first in FIRST for last in LAST]
    same = who = 0
    subject_words = []
    items = read_gold(gold)
    for item in items:
        record, pages = extracted[item["file"]], read_pages(item["path"])
        schema = load_schema(record["kind"])
        names = [record["values"][f.name] for f in schema.fields if f.kind == "name" and record["values"][f.name]]
        same += len(names) != len({" ".join(n.split()).casefold() for n in names})
        values = distinct_parties(schema, record["values"])
        parties = [values[f.name] for f in schema.fields if f.kind == "name" and values[f.name]]
        subject = stated_subject(pages, parties) or combine(gists(split_sections(pages), embedder, parties=parties))[0]
        who += "@" in subject or any(x.casefold() in subject.casefold() for x in people + item["parties"])
        subject_words.append(coverage(subject, [], item["subject"])["subject"])
        print(f"{item['file']}: {subject}")
    print(f"{len(items)} documents: one name as both parties in {same} extractions; the subject names a party, "
          f"a person or an e-mail address in {who}; subject words in the subject {sum(subject_words) / len(items):.3f}")


if __name__ == "__main__":
    main()
