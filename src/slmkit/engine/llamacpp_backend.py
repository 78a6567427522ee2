"""llama.cpp backend: runs a GGUF file through llama-cpp-python's low-level context.

llama.cpp only turns token ids into logits here; the chat template, sampling, detokenizing,
stop strings and finish reasons are the shared ones (:class:`SequenceState`, :class:`Sampler`,
:func:`render_prompt`), so a GGUF export streams exactly like the PyTorch model it came from.
The text side uses the HF tokenizer files that ``slm export gguf`` puts beside the GGUF; for a
bare ``.gguf`` file the tokenizer is rebuilt from the file's own metadata by transformers.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slmkit.engine import Chunk, GenerationRequest
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.engine.torch_backend import check_scoring_window, load_tokenizer, prepare_prompt, render_prompt
from slmkit.errors import CorruptModelError


def load_gguf_tokenizer(gguf_path: Path):
    """The HF tokenizer beside the GGUF (an slmkit export), else one rebuilt from the GGUF."""
    folder = gguf_path.parent
    if (folder / "tokenizer.json").exists():
        return load_tokenizer(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_path.name)
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptModelError(f"Cannot read the tokenizer stored in {gguf_path}: {exc}") from exc


_params_lock = threading.Lock()


def open_llama(path: Path, **options):
    """``llama_cpp.Llama(path, **options)``, with llama.cpp's extra CPU buffer types (AMX and
    repacked weights) turned off where the CPU advertises AMX.

    On the CPUs slmkit is tested on (AMX advertised inside a VM), llama.cpp's AMX matmul
    crashes the process with SIGSEGV as soon as a batch of more than one token meets quantized
    weights, so every prompt would crash. llama-cpp-python does not expose the switch
    (``use_extra_bufts``), so the default model parameters are adjusted while the model loads.
    """
    import llama_cpp
    from llama_cpp import llama_cpp as low_level

    if b"AMX_INT8 = 1" not in low_level.llama_print_system_info():
        return llama_cpp.Llama(model_path=str(path), **options)
    original = low_level.llama_model_default_params

    def without_extra_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    with _params_lock:
        low_level.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(model_path=str(path), **options)
        finally:
            low_level.llama_model_default_params = original


class LlamaCppEngine:
    """One GGUF model, one sequence at a time (requests from several threads take turns)."""

    def __init__(self, path: Path, model_name: str | None = None, threads: int | None = 2,
                 context_length: int | None = None, batch_size: int = 512):
        from slmkit.export.gguf import quiet_llama
        from slmkit.formats.gguf_check import check_gguf_file

        started = time.perf_counter()
        self.path = Path(path)
        check_gguf_file(self.path)
        self.model_name = model_name or self.path.stem
        self.tokenizer = load_gguf_tokenizer(self.path)
        threads = threads or 2
        try:
            with quiet_llama():
                self.llm = open_llama(
                    self.path, n_ctx=context_length or 0, n_batch=batch_size, n_ubatch=batch_size,
                    n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise CorruptModelError(f"llama.cpp cannot load {self.path}: {exc}") from exc
        # Close before interpreter shutdown: llama-cpp-python's own __del__ fails at that point.
        self._finalizer = weakref.finalize(self, self.llm.close)
        self.context_length = self.llm.n_ctx()
        self.vocab_size = self.llm.n_vocab()
        self.batch_size = batch_size
        self.eos_ids = self._end_of_turn_ids()
        self.load_time_s = time.perf_counter() - started
        self._lock = threading.Lock()

    def _end_of_turn_ids(self) -> set[int]:
        """generation_config.json's EOS ids when the export carries one (as the torch backend
        uses), else every token llama.cpp itself treats as end of generation."""
        config = self.path.parent / "generation_config.json"
        if config.exists():
            value = json.loads(config.read_text()).get("eos_token_id")
            ids = set(value if isinstance(value, list) else [value] if value is not None else [])
        else:
            import llama_cpp

            vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
            ids = {i for i in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, i)}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _decode(self, token_ids: list[int], n_past: int, all_logits: bool) -> np.ndarray:
        """Run ``token_ids`` at positions ``n_past...``; logits of every token or of the last one.

        Returns a view of llama.cpp's logits buffer for the last row (valid until the next
        decode) or a fresh (tokens, vocab) array when ``all_logits``.
        """
        rows = []
        for start in range(0, len(token_ids), self.batch_size):
            part = token_ids[start : start + self.batch_size]
            self.llm._batch.set_batch(batch=part, n_past=n_past + start, logits_all=all_logits)
            self.llm._ctx.decode(self.llm._batch)
            if all_logits:
                block = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(len(part), self.vocab_size))
                rows.append(block.copy())
        if all_logits:
            return np.concatenate(rows)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.vocab_size,))

    def _reset(self) -> None:
        self.llm._ctx.kv_cache_clear()

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self.tokenizer, request))

    def prepare(self, request: GenerationRequest) -> list[int]:
        return prepare_prompt(self.tokenizer, request, self.context_length)

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        prompt_ids = self.prepare(request)
        return self._generate(request, prompt_ids)

    def _generate(self, request: GenerationRequest, prompt_ids: list[int]) -> Iterator[Chunk]:
        with self._lock:
            self._reset()
            state = SequenceState(self.tokenizer, prompt_ids, self.eos_ids, request.max_new_tokens, request.stop)
            sampler = Sampler(request.sampling)
            context = torch.tensor(prompt_ids, dtype=torch.long)
            logits = torch.from_numpy(self._decode(prompt_ids, 0, all_logits=False))
            n_past = len(prompt_ids)
            while True:
                token = sampler(logits, context)
                chunk = state.append(token)
                if chunk.text or chunk.finish_reason:
                    yield chunk
                if chunk.finish_reason:
                    return
                context = torch.cat([context, torch.tensor([token])])
                logits = torch.from_numpy(self._decode([token], n_past, all_logits=False))
                n_past += 1

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def native_tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization of ``text`` (special tokens parsed, no BOS added): what
        llama.cpp and Ollama would feed the model. The parity check compares it with :meth:`tokenize`."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        check_scoring_window(len(token_ids), self.context_length)
        with self._lock:
            self._reset()
            logits = torch.from_numpy(self._decode(list(token_ids), 0, all_logits=True))[:-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor(token_ids[1:], dtype=torch.long).unsqueeze(1)
            return logprobs.gather(1, targets).squeeze(1).tolist()

    def metadata(self) -> dict[str, str]:
        """The GGUF key/value metadata as llama.cpp read it."""
        return dict(self.llm.metadata)

    def close(self) -> None:
        self._finalizer()
        self.llm = None
