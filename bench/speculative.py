"""Assisted decoding of SmolLM2-135M-Instruct with a distilled ~20M-parameter draft model
(run by `make bench`).

The first run builds the draft (examples/distill/build_draft.py: prune the teacher, distill it
on Python's documentation and on the teacher's own answers; about 35 minutes on 2 CPU cores,
reusing anything `make example-distill` already built). Every run then answers ten held-out
questions greedily with and without the draft, alternating the two so both see the same
machine load, and prints the acceptance rate, the speed-up against plain decoding measured in
the same run, and whether every output is identical.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parents[1] / "examples" / "distill" / "build_draft.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
