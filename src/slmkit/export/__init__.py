"""``slm export``: take an artifact out of slmkit as GGUF (llama.cpp, Ollama), ONNX (ONNX Runtime)
or a container build context.

Each exporter writes a new artifact directory through :func:`slmkit.artifact.staged_directory`
(nothing is left behind when it fails), runs the parity checks of :mod:`slmkit.export.parity`
against the PyTorch model and records them, with the format, quant type, size and parent, in
the export's ``slm.json``. By default exports land in the store as ``NAME-QUANT`` so that
``slm chat NAME-QUANT`` finds them and picks the matching backend.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from slmkit.artifact import Card, ParentRef, content_hash, directory_size, read_card
from slmkit.references import ResolvedModel

ProgressCallback = Callable[[str, int, int], None]  # (step description, done, total)
TEXT_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def no_progress(step: str, done: int, total: int) -> None:
    pass


def resolve_source(reference: str, progress: ProgressCallback | None = None) -> ResolvedModel:
    """The HF artifact to export (a GGUF reference is imported first, as everywhere else)."""
    from slmkit.references import resolve_hf

    return resolve_hf(reference, progress=progress)


def output_path(source: ResolvedModel, suffix: str, output: str | Path | None) -> Path:
    """``output`` when given, else ``$SLM_HOME/models/SOURCE-SUFFIX``."""
    if output is not None:
        return Path(output).expanduser()
    from slmkit.models import store_path

    return store_path(f"{source.name}-{suffix}")


def copy_text_side(source: Path, destination: Path) -> None:
    """Tokenizer, chat template and generation config (end-of-turn ids) beside the weights."""
    for name in TEXT_SIDE_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(destination) / name)


def export_card(source: ResolvedModel, destination_name: str, staging: Path, fmt: str, dtype: str,
                args: dict, metrics: dict) -> Card:
    """A card for the export: format, quant type, size on disk, and the parent it came from."""
    parent_card = read_card(source.path)
    parent_hash = parent_card.content_sha256 if parent_card and parent_card.content_sha256 else content_hash(
        source.path)
    return Card(
        name=destination_name,
        stage="export",
        architecture=parent_card.architecture if parent_card else None,
        parameters=parent_card.parameters if parent_card else None,
        dtype=dtype,
        format=fmt,
        parents=[ParentRef(source.name, parent_hash, str(source.path))],
        args=args,
        metrics={"size_bytes": directory_size(staging), **metrics},
    )


@dataclasses.dataclass
class ExportResult:
    """Where an export went and its card."""

    path: Path
    card: Card

    @property
    def passed(self) -> bool | None:
        parity = self.card.metrics.get("parity")
        return None if parity is None else bool(parity.get("passed"))
