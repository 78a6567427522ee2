"""Helpers shared by the training tests (data files, running the real `slm` command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat_records(count: int = 48):
    return [{"messages": [{"role": "system", "content": "Answer with a number."},
                          {"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{2 * i}"}]} for i in range(count)]


def run_slm(args: list[str], home: Path, launcher: list[str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `slm` command in a subprocess with its own store."""
    env = {**os.environ, "SLM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    command = (launcher or []) + [str(VENV_BIN / "slm"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, **kwargs)


def json_output(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])
