"""Write the Python language reference topics that ship with every Python (``pydoc_data.topics``)
as a folder of documents, the corpus of the worked support-bot example.

Most topics become Markdown (reST-style underlined headings turned into ``#`` headings); the
built-in type topics stay plain text with underlined headings, so the example exercises both
readers. Usage: ``python examples/pydoc-kb/build_corpus.py build/pydoc-kb/docs``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LEVELS = {"*": "#", "=": "##", "-": "###", "~": "####", "^": "#####"}
UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}\s*$")


def to_markdown(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        match = UNDERLINE.match(following)
        if lines[index].strip() and match and not lines[index].startswith(" "):
            out.append(f"{LEVELS[match.group(1)]} {lines[index].strip()}")
            index += 2
        else:
            out.append(lines[index])
            index += 1
    return "\n".join(out) + "\n"


def main(destination: Path) -> None:
    from pydoc_data.topics import topics

    destination.mkdir(parents=True, exist_ok=True)
    for key, text in sorted(topics.items()):
        if key.startswith(("types", "bltin")):
            (destination / f"{key}.txt").write_text(text, encoding="utf-8")
        else:
            (destination / f"{key}.md").write_text(to_markdown(text), encoding="utf-8")
    print(f"Wrote {len(topics)} documents to {destination} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/pydoc-kb/docs"))
