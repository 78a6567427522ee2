"""The local model store (`slm models ...`): ``$SLM_HOME/models/NAME/``, one artifact per directory.

Backs ``slm models list|show|import|rm``. Names are plain words so that a name can never
point outside the store.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from slmkit.artifact import Card, directory_size, read_card
from slmkit.errors import InvalidRequestError, ModelNotFoundError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def slm_home() -> Path:
    return Path(os.environ.get("SLM_HOME") or Path.home() / ".slm")


def models_dir() -> Path:
    return slm_home() / "models"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid store name, else raise with the rule."""
    if not NAME_PATTERN.match(name) or ".." in name:
        raise InvalidRequestError(
            f"Invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no slashes, no '..', at most 128 characters)."
        )
    return name


def store_path(name: str) -> Path:
    return models_dir() / check_name(name)


def stored_names() -> list[str]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclasses.dataclass
class StoredModel:
    name: str
    path: Path
    card: Card | None
    size_bytes: int


def list_models() -> list[StoredModel]:
    """Every artifact in the store, with its card (None for a directory without one)."""
    out = []
    for name in stored_names():
        path = models_dir() / name
        out.append(StoredModel(name, path, read_card(path), directory_size(path)))
    return out


def get_model(name: str) -> StoredModel:
    path = store_path(name)
    if not path.is_dir():
        known = ", ".join(stored_names()) or "none yet"
        raise ModelNotFoundError(f"No model named {name!r} in the store ({models_dir()}). Stored: {known}.")
    return StoredModel(name, path, read_card(path), directory_size(path))


def lineage(name: str) -> list[Card]:
    """The card of ``name`` followed by its first parent's card, and so on back to the root.

    Parents that are not (or no longer) in the store end the chain.
    """
    chain: list[Card] = []
    seen: set[str] = set()
    current: str | None = name
    while current and current not in seen:
        seen.add(current)
        try:
            card = read_card(store_path(current))
        except InvalidRequestError:
            break
        if card is None:
            break
        chain.append(card)
        current = card.parents[0].name if card.parents else None
    return chain


def remove_model(name: str) -> Path:
    """Delete the stored artifact ``name``; returns the path that was removed."""
    model = get_model(name)
    # Rename first so a crash mid-delete never leaves a half-deleted model under its name.
    doomed = model.path.with_name(f".{name}.deleting")
    os.rename(model.path, doomed)
    shutil.rmtree(doomed)
    return model.path


# File names an imported Hugging Face directory may bring along; weights only as safetensors.
_HF_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "README.md", "LICENSE",
)


def import_model(source: Path, name: str | None = None, progress=None, exist_ok: bool = False) -> StoredModel:
    """Copy or convert ``source`` (a .gguf file or an HF directory) into the store as ``name``.

    With ``exist_ok``, an artifact already stored under ``name`` is returned as it is, which
    is how built-in models are imported once and reused.
    """
    from slmkit.artifact import ArtifactExistsError, content_hash, finalize_card, staged_directory
    from slmkit.references import PICKLE_SUFFIXES, resolve_path

    resolved = resolve_path(Path(source))
    name = check_name(name or resolved.name)
    destination = store_path(name)
    if destination.is_dir():
        if exist_ok:
            return get_model(name)
        raise ArtifactExistsError(f"A model named {name!r} is already stored. Remove it (slm models rm {name}) or pick --name.")
    try:
        with staged_directory(destination) as staging:
            if resolved.format == "gguf":
                from slmkit.formats.gguf_import import convert_gguf_to_hf

                card = convert_gguf_to_hf(resolved.path, staging, progress=progress or (lambda *a: None))
            else:
                card = _copy_hf_directory(resolved.path, staging, PICKLE_SUFFIXES)
                card.parents = []
                card.source = {"path": str(resolved.path), "format": "hf", "sha256": content_hash(resolved.path)}
            card.name = name
            finalize_card(staging, card)
    except ArtifactExistsError:
        if exist_ok and destination.is_dir():  # another process imported it meanwhile
            return get_model(name)
        raise
    return get_model(name)


def _copy_hf_directory(source: Path, staging: Path, pickle_suffixes) -> Card:
    import json

    from slmkit.artifact import read_card
    from slmkit.errors import UnsafeModelFileError

    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in source.iterdir() if p.suffix in pickle_suffixes]
        hint = f" It has {', '.join(pickled)}: pickle weights are refused because loading them can run code." if pickled else ""
        raise UnsafeModelFileError(f"{source} has no .safetensors weights.{hint}")
    for path in [*weights, *sorted(source.glob("*.safetensors.index.json"))]:
        shutil.copy2(path, staging / path.name)
    for file_name in _HF_FILES:
        if (source / file_name).exists():
            shutil.copy2(source / file_name, staging / file_name)
    config = json.loads((source / "config.json").read_text())
    existing = read_card(source)
    from safetensors import safe_open

    parameters = 0
    for path in weights:
        with safe_open(str(path), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameters += count
    return Card(
        name=source.name,
        stage="import",
        architecture=(config.get("architectures") or [config.get("model_type")])[0],
        parameters=parameters,
        dtype=config.get("torch_dtype") or config.get("dtype"),
        metrics=existing.metrics if existing else {},
        args=existing.args if existing else {},
    )
