"""What every training verb does around the loop: pick the run directory, fingerprint the
run, and write the trained model as an artifact from the main process only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from slmkit.artifact import Card, finalize_card, staged_directory
from slmkit.errors import ArtifactExistsError, InvalidRequestError
from slmkit.training import checkpoint as ckpt


def process_state():
    """accelerate's process state, set up the way the training loop sets it up.

    ``cpu=True`` without a GPU matters when this is the first call in the process: it is what
    makes torchrun's CPU-only processes one gloo group instead of N independent runs.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def check_destination(destination: Path) -> None:
    if destination.exists():
        raise ArtifactExistsError(
            f"Cannot write to {destination}: it exists. Remove it (slm models rm {destination.name}) or pass --name NEW."
        )


def run_directory(name: str, checkpoint_dir: Path | None, resume: bool) -> Path:
    """Where the checkpoints of run ``name`` live: ``checkpoint_dir`` or ``$SLM_HOME/runs/NAME``.

    Refuses to start over a directory holding checkpoints unless resuming, so a finished
    part of a run is never overwritten by accident.
    """
    from slmkit.models import slm_home

    directory = Path(checkpoint_dir) if checkpoint_dir else slm_home() / "runs" / name
    if not resume and ckpt.latest_checkpoint(directory):
        raise InvalidRequestError(
            f"{directory} holds checkpoints of an earlier run. Pass --resume to continue it, "
            "or delete the directory to start over."
        )
    return directory


def fingerprint(config, **parts) -> str:
    """A hash of the settings and inputs that decide the run's results (checked on resume).

    Step-independent knobs (how often to checkpoint, how many to keep) are left out, so a
    resumed run may change them.
    """
    settings = dataclasses.asdict(config)
    for volatile in ("checkpoint_every", "keep_checkpoints", "keep_adapter", "keep_checkpoints_after"):
        settings.pop(volatile, None)
    blob = json.dumps({"config": settings, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def write_artifact(destination: Path, model, tokenizer, card: Card, extra=None) -> None:
    """Save ``model`` and ``tokenizer`` (safetensors) with ``card`` into ``destination``
    atomically; ``extra(staging)`` may add files. Only the main process writes."""
    if is_main_process():
        with staged_directory(destination) as staging:
            if extra:
                extra(staging)
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            finalize_card(staging, card)
    wait_for_everyone()


def remove_run_directory(directory: Path) -> None:
    if is_main_process():
        shutil.rmtree(directory, ignore_errors=True)
