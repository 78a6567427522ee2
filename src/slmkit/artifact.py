"""The model artifact: a Hugging Face directory plus ``slm.json``, its card.

A stage (import, pretrain, finetune, distill, prune, quantize, export) reads one artifact and
writes a new one through :func:`staged_directory`, so a crash never leaves a half-written
model where a complete one is expected, and an input is never modified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slmkit.errors import ArtifactExistsError, CorruptModelError

CARD_FILE = "slm.json"
STAGES = ("import", "pretrain", "finetune", "distill", "prune", "quantize", "export")


@dataclasses.dataclass
class ParentRef:
    name: str
    content_sha256: str
    path: str | None = None


@dataclasses.dataclass
class Card:
    """What an artifact is, where it came from and how it measured."""

    name: str
    stage: str
    architecture: str | None = None
    parameters: int | None = None
    dtype: str | None = None
    format: str = "hf"  # "hf", "gguf" or "onnx"
    parents: list[ParentRef] = dataclasses.field(default_factory=list)
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    content_sha256: str | None = None
    # Which backend and file serve this model by default when the store keeps a separate
    # inference file for it (the built-in's f16 GGUF); empty: the plan follows the format.
    inference: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: str = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    slmkit_version: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Card:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["parents"] = [ParentRef(**p) for p in data.get("parents", [])]
        return cls(**data)


def read_card(directory: Path) -> Card | None:
    """The card of ``directory``, or None when it has none (a plain HF directory)."""
    path = Path(directory) / CARD_FILE
    if not path.exists():
        return None
    try:
        return Card.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise CorruptModelError(f"{path} is not a valid slm.json card ({exc}). Delete it or restore it.") from exc


def write_card(directory: Path, card: Card) -> None:
    """Write ``card`` into ``directory`` atomically (temp file, then rename)."""
    from slmkit import __version__

    card.slmkit_version = card.slmkit_version or __version__
    write_text_atomic(Path(directory) / CARD_FILE, card.to_json())


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def content_hash(directory: Path) -> str:
    """sha256 over every file of the artifact except its card, in name order."""
    digest = hashlib.sha256()
    directory = Path(directory)
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CARD_FILE):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


@contextlib.contextmanager
def staged_directory(destination: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``destination``; rename it there on success.

    On any exception the temporary directory is removed and ``destination`` is untouched.
    """
    destination = Path(destination)
    if destination.exists():
        raise ArtifactExistsError(
            f"Cannot write to {destination}: it exists. Delete it or choose another output name."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"))
    try:
        yield staging
        try:
            os.rename(staging, destination)
        except OSError as exc:
            if not destination.exists():
                raise
            # Another process finished the same artifact first; theirs stands.
            raise ArtifactExistsError(
                f"Cannot write to {destination}: it appeared while this was being written. "
                "Delete it or choose another output name."
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finalize_card(directory: Path, card: Card) -> Card:
    """Fill the card's content hash for ``directory`` and write it there."""
    card.content_sha256 = content_hash(directory)
    write_card(directory, card)
    return card
