"""Atomic training checkpoints: write to a temp dir, mark complete, rename into place.

A checkpoint ``step-00000040/`` holds

- ``trainable.safetensors`` — the trainable parameters (all weights for full training, only
  the adapter for LoRA);
- ``state.pt`` — optimizer, scheduler, RNG states, step, history and the run fingerprint,
  all plain tensors and Python values so it loads with ``torch.load(weights_only=True)``;
- ``COMPLETE`` — written last, before the rename.

Resume takes the newest directory with ``COMPLETE``; temp dirs left by a killed save are
ignored and removed by the next save.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from slmkit.errors import InvalidRequestError

WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"
MARKER = "COMPLETE"
PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_dir() and p.name.startswith(PREFIX) and (p / MARKER).is_file())


def latest_checkpoint(directory: Path) -> Path | None:
    found = complete_checkpoints(directory)
    return found[-1] if found else None


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(directory: Path, step: int, trainable: dict[str, torch.Tensor], state: dict,
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep`` complete ones."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / checkpoint_name(step)
    temp = directory / f".tmp-{final.name}-{os.getpid()}"
    temp.mkdir()
    try:
        save_file({k: v.detach().contiguous() for k, v in trainable.items()}, str(temp / WEIGHTS_FILE))
        torch.save(state, temp / STATE_FILE)
        (temp / MARKER).write_text(f"{step}\n")
        for path in temp.iterdir():
            _fsync(path)
        if final.exists():  # a rerun of the same step after a crash: replace the old copy
            shutil.rmtree(final)
        os.rename(temp, final)
        _fsync(directory)
    except (OSError, SafetensorError) as exc:  # a full disk or a read-only directory: say so, keep the older checkpoints
        shutil.rmtree(temp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidRequestError(
            f"Cannot write the checkpoint of step {step} to {directory}: {reason}. The previous "
            "checkpoints are intact; free some space or pass --checkpoint-dir elsewhere, then --resume."
        ) from exc
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for old in complete_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Trainable weights and training state of the checkpoint at ``path`` (no pickle)."""
    from safetensors.torch import load_file

    if not (Path(path) / MARKER).is_file():
        raise InvalidRequestError(f"{path} is not a complete checkpoint (no {MARKER} marker).")
    weights = load_file(str(Path(path) / WEIGHTS_FILE))
    state = torch.load(Path(path) / STATE_FILE, weights_only=True)
    return weights, state
