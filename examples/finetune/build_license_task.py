"""Build the worked example's data: name a software license from the start of its text.

The texts and their labels come from Debian's machine-readable copyright files
(/usr/share/doc/*/copyright, DEP-5 format): every stanza with a ``License: NAME`` line and
the license text under it is one example, labelled with Debian's short name (GPL-2+,
BSD-3-clause, Apache-2.0, ...). Identical texts are kept once; the split is by text, per
license, so no held-out text was seen in training.

Writes OUT/train.jsonl (chat examples), OUT/test.jsonl (tasks for `slm eval`) and
OUT/stats.json. Usage: python build_license_task.py OUT [--doc-root /usr/share/doc]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
from pathlib import Path

SYSTEM = "You identify software licenses."
QUESTION = ('Which license is this? Answer with JSON {{"license": "<Debian short name>"}}.\n\n{text}')
PREFIX_CHARS = 200  # the opening of a license identifies it; longer inputs only slow training down
MIN_TEXTS = 6  # licenses with fewer distinct texts are left out
MAX_TRAIN_PER_LICENSE = 24
TEST_FRACTION = 0.3


def stanzas(path: Path):
    """(license name, license text) pairs of one DEP-5 copyright file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("Format:"):
        return
    for block in re.split(r"\n\s*\n", text):
        match = re.search(r"^License:[ \t]*(.+)\n((?:[ \t].*\n?)+)", block, flags=re.MULTILINE)
        if not match:
            continue
        lines = [line.strip() for line in match.group(2).splitlines()]
        body = " ".join("" if line == "." else line for line in lines)
        yield " ".join(match.group(1).split()), " ".join(body.split())


def collect(doc_root: Path) -> dict[str, str]:
    """Distinct license text opening -> license name (texts seen with two names are dropped)."""
    names_by_text: dict[str, set[str]] = collections.defaultdict(set)
    spelling: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted(doc_root.glob("*/copyright")):
        for name, body in stanzas(path):
            if re.search(r"\bor\b|\band\b|,|with", name, flags=re.IGNORECASE) or len(body) < 200:
                continue
            spelling[name.casefold()][name] += 1
            opening = body[:PREFIX_CHARS].rsplit(" ", 1)[0]
            names_by_text[opening].add(name.casefold())
    canonical = {key: counts.most_common(1)[0][0] for key, counts in spelling.items()}
    return {text: canonical[next(iter(names))] for text, names in names_by_text.items() if len(names) == 1}


def chat(text: str, name: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION.format(text=text)}]
    if name:
        messages.append({"role": "assistant", "content": json.dumps({"license": name})})
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--doc-root", type=Path, default=Path("/usr/share/doc"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_name: dict[str, list[str]] = collections.defaultdict(list)
    for text, name in sorted(collect(args.doc_root).items()):
        by_name[name].append(text)
    rng = random.Random(args.seed)
    train, test = [], []
    for name, texts in sorted(by_name.items()):
        if len(texts) < MIN_TEXTS:
            continue
        rng.shuffle(texts)
        cut = max(2, round(len(texts) * TEST_FRACTION))
        test += [{"messages": chat(t), "expected": {"license": name}} for t in texts[:cut]]
        train += [{"messages": chat(t, name)} for t in texts[cut:][:MAX_TRAIN_PER_LICENSE]]
    rng.shuffle(train)
    args.out.mkdir(parents=True, exist_ok=True)
    for file_name, records in (("train.jsonl", train), ("test.jsonl", test)):
        (args.out / file_name).write_text("".join(json.dumps(r) + "\n" for r in records))
    labels = collections.Counter(r["expected"]["license"] for r in test)
    stats = {"train": len(train), "test": len(test), "licenses": len(labels), "test_per_license": dict(labels)}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
