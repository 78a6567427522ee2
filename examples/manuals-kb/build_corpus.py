"""Copy three real software manuals that Debian installs under ``/usr/share/doc`` into one folder,
the corpus of the support bot's **held-out** QA set (``examples/manuals-kb/qa.jsonl``).

The manuals: bzip2's (one long HTML page, packages ``bzip2``/``bzip2-doc``), libffi's (19 HTML
pages, package ``libffi8``; its term index page is left out) and GNU bc's (one HTML page,
package ``bc``). They are prose with reference material, about other programs than the tuning
corpus (the Python language reference, ``examples/pydoc-kb``). Valgrind's manual is deliberately
not used: it is kept for an independent check. No prompt, threshold or hyperparameter of the
support bot may be chosen by looking at results on this corpus.

Usage: ``python examples/manuals-kb/build_corpus.py build/manuals-kb/docs``
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOC = Path("/usr/share/doc")
SOURCES = {  # name in the knowledge base -> file installed by Debian
    "bzip2-manual.html": DOC / "bzip2" / "manual.html",
    "bc.html": DOC / "bc" / "bc.html",
}
LIBFFI = DOC / "libffi8" / "html"
LEFT_OUT = {"Index.html"}  # an index of terms, not prose


def main(destination: Path) -> None:
    files = dict(SOURCES)
    if LIBFFI.is_dir():
        files |= {f"libffi-{p.name}": p for p in sorted(LIBFFI.glob("*.html")) if p.name not in LEFT_OUT}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing or not LIBFFI.is_dir():
        sys.exit(f"Missing manuals: {', '.join(missing) or LIBFFI}. Install them with "
                 "`apt-get install bzip2 bc libffi8` (Debian keeps their documentation in /usr/share/doc).")
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        temporary = destination / f".{name}.tmp"
        shutil.copyfile(source, temporary)
        temporary.replace(destination / name)
    print(f"Wrote {len(files)} documents to {destination}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/manuals-kb/docs"))
