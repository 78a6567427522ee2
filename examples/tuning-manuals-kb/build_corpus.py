"""Copy three real manuals that Debian installs under ``/usr/share/doc`` into one folder, the corpus
of the support bot's **second tuning** QA set (``examples/tuning-manuals-kb/qa.jsonl``).

The manuals: zlib's annotated usage example (``zlib_how.html``, package ``zlib1g-dev``), the
fontconfig user manual (``fontconfig-user.html``, package ``fontconfig``) and "Users and Groups in
the Debian System" (``users-and-groups.html``, package ``base-passwd``). They are prose about other
programs than the first tuning corpus (the Python language reference, ``examples/pydoc-kb``) and
than the held-out manuals (bzip2, libffi, bc: ``examples/manuals-kb``); the Valgrind manual is in
neither, kept for an independent check. This set exists because the pydoc set alone has only 48
answerable questions: choices tuned on it can differ by noise. Settings may be chosen on this set;
the held-out set only reports.

Usage: ``python examples/tuning-manuals-kb/build_corpus.py build/tuning-manuals-kb/docs``
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOC = Path("/usr/share/doc")
SOURCES = {  # name in the knowledge base -> file installed by Debian
    "zlib-usage-example.html": DOC / "zlib1g-dev" / "examples" / "zlib_how.html",
    "fontconfig-user.html": DOC / "fontconfig" / "fontconfig-user.html",
    "debian-users-and-groups.html": DOC / "base-passwd" / "users-and-groups.html",
}


def main(destination: Path) -> None:
    missing = [str(p) for p in SOURCES.values() if not p.is_file()]
    if missing:
        sys.exit(f"Missing manuals: {', '.join(missing)}. Install them with "
                 "`apt-get install zlib1g-dev fontconfig base-passwd` (Debian keeps their documentation in "
                 "/usr/share/doc).")
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in SOURCES.items():
        temporary = destination / f".{name}.tmp"
        shutil.copyfile(source, temporary)
        temporary.replace(destination / name)
    print(f"Wrote {len(SOURCES)} documents to {destination}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/tuning-manuals-kb/docs"))
