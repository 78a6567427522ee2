"""GGUF export of a recommender (``slm recommend train``): its item catalogue as the file's
vocabulary, and its parity check through llama.cpp on next-item scores.

A recommender has no tokenizer: token 0 pads, token 1 starts a history and item ``i`` of
``catalogue.json`` is token ``i + 2``. :func:`slmkit.export.gguf.export_gguf` writes the
weights and hyper-parameters as for any Llama model and takes the vocabulary from here.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from slmkit.errors import CorruptModelError, InvalidRequestError


def item_vocabulary(source: Path, config) -> tuple[list[str], list[int]]:
    """A recommender's tokens in id order and their GGUF token types: padding and start are
    CONTROL tokens, then one NORMAL token per catalogue item whose text is the item's id, so
    llama.cpp's own vocabulary maps ids to tokens and back on a device."""
    from gguf import TokenType

    from slmkit.export import RECOMMENDER_SIDE_FILES

    specials = {config.pad_token_id: "<pad>", config.bos_token_id: "<start>"}
    if sorted(specials) != list(range(len(specials))):
        raise InvalidRequestError(f"A recommender's padding and start tokens must be ids 0 and 1; this one has "
                                  f"{sorted(specials)}.")
    path = Path(source) / RECOMMENDER_SIDE_FILES[0]
    try:
        items = [str(item) for item in json.loads(path.read_text(encoding="utf-8"))["items"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptModelError(f"{path} is not a valid catalogue ({exc}). Retrain the recommender with "
                                "`slm recommend train`.") from exc
    tokens = [specials[i] for i in range(len(specials))] + items
    if len(tokens) != config.vocab_size:
        raise CorruptModelError(f"{path} lists {len(items)} items but the model scores "
                                f"{config.vocab_size - len(specials)}. Retrain the recommender.")
    # llama.cpp refuses a vocabulary with a repeated token text and renames empty ones.
    clashing = sorted({t for t in items if not t or t in specials.values()})
    if clashing:
        raise InvalidRequestError(f"Items {clashing[:5]} cannot be GGUF tokens: a token text must be non-empty and "
                                  f"differ from {list(specials.values())}. Rename them in the log and retrain.")
    types = [int(TokenType.CONTROL)] * len(specials) + [int(TokenType.NORMAL)] * len(items)
    return tokens, types


def add_item_vocabulary(writer, tokens: list[str], token_types: list[int], config) -> None:
    """Write a recommender's vocabulary with llama.cpp's Unigram ("t5") tokenizer type.

    Of llama.cpp's types, this one takes token texts as they are and turns text no token covers
    into the unknown token (here padding). "gpt2" needs merges (a catalogue has none; the writer
    drops an empty list) and byte-level texts; "llama" (SentencePiece) aborts the whole process
    (an uncaught std::out_of_range from its byte fallback) when asked to tokenize such text.
    Devices feed token ids, but a stray text prompt must not kill the app. The file's
    end-of-sequence id points at padding, which is never recommended: the type's default (1)
    would be the start token.
    """
    writer.add_tokenizer_model("t5")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_unk_token_id(config.pad_token_id)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.pad_token_id)
    writer.add_add_bos_token(False)  # a history's token ids already begin with the start token
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)


# Largest |next-item score difference| an unquantized recommender GGUF may show against PyTorch.
# llama.cpp keeps its KV cache in f16 by default, so even an f32 file rounds: measured on the
# ml-100k recommender (scores from -5 to 5) 1.2e-3 for f32 (2e-6 with an f32 cache) and 3.0e-3
# for f16; about 4x margin.
ITEM_SCORE_TOLERANCE = {"f32": 5e-3, "f16": 1e-2}


def gguf_item_parity(source: Path, gguf_file: Path, quant: str, threads: int) -> dict:
    """A recommender GGUF against PyTorch: next-item scores through llama.cpp
    (:func:`slmkit.export.item_score_parity`), and the vocabulary llama.cpp reads from the file
    must be the catalogue's."""
    from transformers import AutoConfig

    from slmkit.export import item_score_parity

    quantized = quant not in ITEM_SCORE_TOLERANCE
    result = item_score_parity(source, gguf_file, quantized, threads, tolerance=ITEM_SCORE_TOLERANCE.get(quant, 0.0))
    tokens, _ = item_vocabulary(source, AutoConfig.from_pretrained(str(source)))
    result["file_vocabulary_match"] = llama_vocabulary(gguf_file) == tokens
    result["passed"] = result["passed"] and result["file_vocabulary_match"]
    return result


@contextlib.contextmanager
def llama_item_scores(gguf_file: Path, config, threads: int):
    """Yields ``score(token_ids) -> (vocab,) logits`` of the last position, from llama.cpp
    (loaded like every GGUF in slmkit: :func:`slmkit.engine.llamacpp_backend.open_llama`)."""
    from slmkit.engine.llamacpp_backend import open_llama, quiet_llama

    context = config.max_position_embeddings
    with quiet_llama():
        llm = open_llama(gguf_file, n_ctx=context, n_batch=context, n_ubatch=context, n_threads=threads,
                         n_threads_batch=threads, logits_all=True, verbose=False)

    def score(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    try:
        yield score
    finally:
        llm.close()


def llama_vocabulary(gguf_file: Path) -> list[str]:
    """The token texts llama.cpp itself reads from ``gguf_file`` (its vocabulary alone)."""
    import llama_cpp
    from llama_cpp import _internals

    from slmkit.engine.llamacpp_backend import quiet_llama

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with quiet_llama():
        model = _internals.LlamaModel(path_model=str(gguf_file), params=params, verbose=False)
    try:
        return [model.token_get_text(i) for i in range(model.n_vocab())]
    finally:
        model.close()
