"""``slm export``: take an artifact out of slmkit as GGUF (llama.cpp, Ollama), ONNX (ONNX Runtime)
or a container build context.

Each exporter writes a new artifact directory through :func:`slmkit.artifact.staged_directory`
(nothing is left behind when it fails), runs the parity checks of :mod:`slmkit.export.parity`
against the PyTorch model and records them, with the format, quant type, size and parent, in
the export's ``slm.json``. By default exports land in the store as ``NAME-QUANT`` so that
``slm chat NAME-QUANT`` finds them and picks the matching backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from slmkit.artifact import Card, ParentRef, content_hash, directory_size, read_card
from slmkit.references import ResolvedModel

ProgressCallback = Callable[[str, int, int], None]  # (step description, done, total)
TEXT_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")
# A recommender (``slm recommend train``) has no tokenizer: its vocabulary is its item catalogue,
# which travels with every export. Its users' histories (behaviour data) stay behind.
RECOMMENDER_SIDE_FILES = ("catalogue.json",)


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
    """Tokenizer, chat template and generation config (end-of-turn ids) beside the weights; a
    recommender's catalogue."""
    for name in TEXT_SIDE_FILES + RECOMMENDER_SIDE_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(destination) / name)


def is_item_model(source: Path) -> bool:
    """A recommender: a decoder over item ids with a catalogue instead of a tokenizer."""
    return all((Path(source) / name).is_file() for name in RECOMMENDER_SIDE_FILES)


def item_score_parity(source: Path, export_file: Path, quantized: bool, threads: int = 2, histories: int = 32,
                      seed: int = 0, tolerance: float = 1e-3) -> dict:
    """A recommender's parity check (it has no text to generate or measure perplexity on):
    next-item scores of the export (ONNX Runtime for ``.onnx``, llama.cpp for ``.gguf``)
    against PyTorch for ``histories`` random item histories of random lengths. Unquantized,
    every score must agree to ``tolerance`` and every top-10 list must be PyTorch's up to ties:
    rank by rank, the export's item must have PyTorch's score of PyTorch's item within
    ``tolerance`` (two items that close may swap through rounding). Quantized (ONNX int8, GGUF
    q8_0 and below), the top-10 lists must overlap by 80 % on average."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, use_safetensors=True).eval()
    config = model.config
    first = max(config.pad_token_id or 0, config.bos_token_id or 0) + 1  # item tokens follow the special ones
    if Path(export_file).suffix == ".gguf":
        from slmkit.export.gguf_items import llama_item_scores as export_scores
    else:
        export_scores = onnx_item_scores
    generator = torch.Generator().manual_seed(seed)
    longest = max(1, min(config.max_position_embeddings - 1, 50))
    worst, rank_gap, overlaps, identical = 0.0, 0.0, [], 0
    with export_scores(export_file, config, threads) as score:
        for _ in range(histories):
            length = int(torch.randint(1, longest + 1, (1,), generator=generator))
            ids = [config.bos_token_id,
                   *torch.randint(first, config.vocab_size, (length,), generator=generator).tolist()]
            with torch.no_grad():
                want = model(input_ids=torch.tensor([ids])).logits[0, -1, first:]
            got = torch.from_numpy(score(ids)[first:])
            worst = max(worst, float((got - want).abs().max()))
            top_want, top_got = want.topk(10).indices, got.topk(10).indices
            rank_gap = max(rank_gap, float((want[top_got] - want[top_want]).abs().max()))
            overlaps.append(len(set(top_want.tolist()) & set(top_got.tolist())) / 10)
            identical += top_want.tolist() == top_got.tolist()
    overlap = sum(overlaps) / len(overlaps)
    passed = overlap >= 0.8 if quantized else (worst <= tolerance and rank_gap <= tolerance)
    return {"kind": "item_scores", "histories": histories, "max_abs_difference": worst,
            "tolerance": None if quantized else tolerance, "top10_identical": identical,
            "top10_rank_score_gap": rank_gap, "top10_overlap": overlap, "passed": bool(passed)}


@contextlib.contextmanager
def onnx_item_scores(onnx_file: Path, config, threads: int):
    """Yields ``score(token_ids) -> (vocab,) logits`` of the last position, from ONNX Runtime."""
    import numpy as np
    import onnxruntime as ort

    from slmkit.formats.onnx_check import past_names

    head = config.hidden_size // config.num_attention_heads
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

    def score(ids: list[int]) -> np.ndarray:
        feeds = {"input_ids": np.array([ids], dtype=np.int64)}
        for name in past_names(config.num_hidden_layers):
            feeds[name] = np.zeros((1, config.num_key_value_heads, 0, head), dtype=np.float32)
        return session.run(["logits"], feeds)[0][0, -1]

    yield score


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
