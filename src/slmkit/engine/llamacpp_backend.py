"""llama.cpp backend: runs a GGUF file through llama-cpp-python's low-level bindings.

llama.cpp only turns token ids into logits here; the chat template, sampling, detokenizing,
stop strings and finish reasons are the shared ones (:class:`SequenceState`, :class:`Sampler`,
:func:`render_prompt`), so a GGUF export streams exactly like the PyTorch model it came from.
Concurrent requests are decoded together and repeated prompt prefixes reuse their KV
(:mod:`slmkit.engine.llamacpp_batching`).
The text side uses the HF tokenizer files that ``slm export gguf`` puts beside the GGUF; for a
bare ``.gguf`` file the tokenizer is rebuilt from the file's own metadata by transformers.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slmkit.engine import Chunk, GenerationRequest
from slmkit.engine.llamacpp_prefill import PREFILL_MIN_TOKENS
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.engine.torch_backend import check_scoring_window, load_tokenizer, prepare_prompt, render_prompt
from slmkit.errors import CorruptModelError, InvalidRequestError

# The default per-request window of a model serving several streams at once: each stream keeps
# KV room of its own, so a server of 8 streams holds 9 x 4,096 tokens of KV (~850 MB for
# SmolLM2-135M) instead of 9 x its 8,192. A longer window is a load option (context_length).
SERVING_CONTEXT = 4096


def load_gguf_tokenizer(gguf_path: Path, text_side: Path | None = None):
    """The HF tokenizer in ``text_side`` or beside the GGUF (an slmkit export), else one
    rebuilt from the GGUF."""
    if text_side is not None:
        return load_tokenizer(text_side)
    folder = gguf_path.parent
    if (folder / "tokenizer.json").exists():
        return load_tokenizer(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_path.name)
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptModelError(f"Cannot read the tokenizer stored in {gguf_path}: {exc}") from exc


@contextlib.contextmanager
def quiet_llama():
    """Silence llama.cpp's C-level log lines (they go straight to the process's stderr)."""
    import llama_cpp._logger as llama_logger

    previous = llama_logger.logger.level
    llama_logger.set_verbose(False)
    try:
        yield
    finally:
        llama_logger.logger.setLevel(previous)


def has_amx() -> bool:
    """Whether this CPU advertises AMX to llama.cpp (see :func:`open_llama`)."""
    from llama_cpp import llama_cpp as low_level

    return b"AMX_INT8 = 1" in low_level.llama_print_system_info()


_params_lock = threading.Lock()
_warned_openmp = False
log = logging.getLogger(__name__)


def uses_openmp() -> bool:
    """Whether this llama.cpp build runs its threads on OpenMP (the one PyTorch loads too)."""
    from llama_cpp import llama_cpp as low_level

    return b"OPENMP = 1" in low_level.llama_print_system_info()


class _ThreadpoolParams(ctypes.Structure):  # ggml.h's struct ggml_threadpool_params
    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


def _ggml_cpu():
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"))
    lib.ggml_threadpool_new.restype = ctypes.c_void_p
    lib.ggml_threadpool_new.argtypes = [ctypes.POINTER(_ThreadpoolParams)]
    lib.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
    return lib


def attach_threadpool(ctx, threads: int):
    """A ggml thread pool kept for the context's life (llama-server attaches one the same way),
    where llama.cpp is built without OpenMP; None (nothing to do) where it uses OpenMP.

    Built with OpenMP, llama.cpp shares PyTorch's OpenMP runtime in one process, and once another
    thread has run PyTorch work (an embedding request, a model load) libgomp counts more threads
    than cores and stops spinning at barriers: llama.cpp then sleeps and wakes at every barrier
    of a step, 8 streams decoded 27 % slower (docs/llamacpp.md#openmp). ``make install`` builds
    llama.cpp without OpenMP; without a pool of its own, ggml would then start threads for every
    decode call.
    """
    import llama_cpp

    if uses_openmp():
        global _warned_openmp
        if not _warned_openmp:
            _warned_openmp = True
            log.warning("llama.cpp here is built with OpenMP, which PyTorch in this process shares: after PyTorch "
                        "work on another thread llama.cpp decodes up to ~27 %% slower. `make install` builds it "
                        "without OpenMP (CMAKE_ARGS=-DGGML_OPENMP=OFF).")
        return None
    libdir = Path(llama_cpp.__file__).parent / "lib"
    params = _ThreadpoolParams()
    ctypes.CDLL(str(libdir / "libggml-base.so")).ggml_threadpool_params_init(ctypes.byref(params), threads)
    pool = _ggml_cpu().ggml_threadpool_new(ctypes.byref(params))
    if not pool:
        return None  # ggml starts threads per call, as before
    llama = ctypes.CDLL(str(libdir / "libllama.so"))
    llama.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    with quiet_llama():  # it logs a line per call
        llama.llama_attach_threadpool(ctx, pool, pool)
    return pool


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

    if not has_amx():
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
    """One GGUF model on llama.cpp; concurrent requests are decoded together in one batch.

    ``batch_size`` is llama.cpp's ``n_batch`` (tokens per decode call: prompt chunks plus one
    token per running stream) and ``ubatch_size`` its ``n_ubatch`` (tokens per matrix kernel
    call); ``max_batch_size`` streams run at once. Each stream has KV room of its own for
    ``context_length`` tokens (prompt + answer, at most the model's context; default the
    model's context for one stream, else at most ``SERVING_CONTEXT``), so the KV cache takes
    ``(max_batch_size + 1) x context_length`` tokens (``kv_bytes``; SmolLM2-135M's f16 KV is
    ~23 KB per token). ``prefix_cache_tokens`` bounds the prompt
    prefixes whose KV is kept in host memory for reuse (default half the context; 0 turns the
    cache off). ``draft`` names a small model
    with the same tokenizer for speculative decoding (greedy requests only); ``prompt_lookup``
    honours requests' ``prompt_lookup_tokens`` (off by default, see docs/llamacpp.md). ``jump_forward``
    feeds the tokens a greedy request's JSON grammar forces without a decode step each (on by
    default; off only to measure it). ``prefill`` picks who prefills a cold prompt of at least
    ``prefill_min_tokens``: ``"auto"`` PyTorch in bf16 on CPUs with AMX when the float weights
    the GGUF was made from are at hand (about 4x faster there, engine/llamacpp_prefill.py),
    else llama.cpp; ``"torch"`` always PyTorch (``prefill_dtype`` "bfloat16" or "float32");
    ``"llamacpp"`` never. ``text_side`` is the directory of HF tokenizer files when they do not
    lie beside the GGUF.
    """

    def __init__(self, path: Path, model_name: str | None = None, threads: int | None = 2,
                 context_length: int | None = None, batch_size: int = 512, ubatch_size: int = 512,
                 max_batch_size: int = 8, prefix_cache_tokens: int | None = None,
                 prefix_cache_entries: int = 8, draft: str | None = None, draft_tokens: int = 4,
                 text_side: Path | None = None, prompt_lookup: bool = False, jump_forward: bool = True,
                 prefill: str = "auto", prefill_min_tokens: int = PREFILL_MIN_TOKENS, prefill_dtype: str | None = None):
        import llama_cpp
        from llama_cpp import _internals

        from slmkit.engine.llamacpp_batching import LlamaBatchScheduler
        from slmkit.engine.prefix_cache import PrefixCache
        from slmkit.formats.gguf_check import check_gguf_file

        started = time.perf_counter()
        self.path = Path(path)
        check_gguf_file(self.path)
        self.model_name = model_name or self.path.stem
        self.text_side = Path(text_side) if text_side else self.path.parent
        self.tokenizer = load_gguf_tokenizer(self.path, text_side)
        threads = threads or 2
        model_params = llama_cpp.llama_model_default_params()
        if has_amx():
            # llama.cpp's AMX / repacked weights crash on multi-token batches on the CPUs we test on.
            model_params.use_extra_bufts = False
        try:
            with quiet_llama():
                self.model = _internals.LlamaModel(path_model=str(self.path), params=model_params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise CorruptModelError(f"llama.cpp cannot load {self.path}: {exc}") from exc
        max_batch_size = max(1, min(max_batch_size, batch_size))  # every stream fits in one step
        trained = self.model.n_ctx_train()
        self.context_length = min(context_length or (trained if max_batch_size == 1 else SERVING_CONTEXT), trained)
        self.vocab_size = self.model.n_vocab()
        self.batch_size = batch_size
        prefix_cache = None
        if prefix_cache_tokens != 0 and prefix_cache_entries > 0:
            prefix_cache = PrefixCache(prefix_cache_entries, prefix_cache_tokens or self.context_length // 2)
        params = llama_cpp.llama_context_default_params()
        # One KV stream per sequence id (the running requests' and one for teacher-forced
        # scoring), as llama-server -np N has it: each decode attends only over its own
        # sequence's cells. In one unified cache every token's attention passed over all
        # sequences' cells: 8 streams decoded ~8 % slower (docs/llamacpp.md#one-kv-stream-per-request).
        streams = max_batch_size + 1
        params.kv_unified = False
        params.n_seq_max = streams
        params.n_ctx = streams * self.context_length
        params.n_batch = batch_size
        params.n_ubatch = min(ubatch_size, batch_size)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        try:
            with quiet_llama():
                self.context = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        except ValueError as exc:
            self.model.close()
            raise CorruptModelError(f"llama.cpp cannot make a context for {self.path}: {exc}") from exc
        self.threadpool = attach_threadpool(self.context.ctx, threads)
        # Close before interpreter shutdown: llama-cpp-python's own __del__ fails at that point.
        self._finalizer = weakref.finalize(self, _close_native, self.context, self.model, self.threadpool)
        self.eos_ids = self._end_of_turn_ids()
        self.draft_model, self.draft_tokens = None, draft_tokens
        # Requests' prompt_lookup_tokens are honoured only when asked for at load: on quantized
        # files llama.cpp's multi-token verification is not bit-identical to one-token decoding
        # and was not faster here (docs/llamacpp.md).
        self.prompt_lookup = prompt_lookup
        if draft:
            from types import SimpleNamespace

            from slmkit.engine.torch_backend import load_draft_model

            target = SimpleNamespace(config=SimpleNamespace(vocab_size=self.vocab_size))  # what the check reads
            self.draft_model = load_draft_model(draft, target, self.tokenizer)
        cells = llama_cpp.llama_n_ctx_seq(self.context.ctx)  # llama.cpp may round n_ctx up, never down
        n_layer, kv_heads, head_dim = self._kv_shape()
        self.kv_bytes = streams * cells * 2 * 2 * n_layer * kv_heads * head_dim  # f16 keys and values, every layer
        # What the server's memory budget counts: the weights and the KV cache.
        self.memory_bytes = self.model.size() + self.kv_bytes
        self.scheduler = LlamaBatchScheduler(self.context.ctx, self.vocab_size, batch_size, max_batch_size,
                                             cells, prefix_cache)
        if not jump_forward:
            self.scheduler.max_forced = 0
        self.prefill = self._set_up_prefill(prefill, prefill_min_tokens, prefill_dtype, threads)
        self.load_time_s = time.perf_counter() - started

    def _kv_shape(self) -> tuple[int, int, int]:
        """(layers, KV heads, head dimension) of the model."""
        import llama_cpp

        model = self.model.model
        head_dim = llama_cpp.llama_model_n_embd(model) // llama_cpp.llama_model_n_head(model)
        return llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_head_kv(model), head_dim

    def _end_of_turn_ids(self) -> set[int]:
        """generation_config.json's EOS ids when the export carries one (as the torch backend
        uses), else every token llama.cpp itself treats as end of generation."""
        import llama_cpp

        config = self.text_side / "generation_config.json"
        if config.exists():
            value = json.loads(config.read_text()).get("eos_token_id")
            ids = set(value if isinstance(value, list) else [value] if value is not None else [])
        else:
            vocab = self.model.vocab
            ids = {i for i in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, i)}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _set_up_prefill(self, prefill: str, min_tokens: int, dtype: str | None, threads: int) -> str:
        """Who prefills long cold prompts: "torch" (bf16 or float32) or "llamacpp"."""
        import llama_cpp

        from slmkit.engine import PREFILL_CHOICES
        from slmkit.engine.llamacpp_prefill import TorchPrefill, fast_bf16, float_twin, learn_layout

        if prefill not in PREFILL_CHOICES:
            raise InvalidRequestError(f"prefill must be {', '.join(PREFILL_CHOICES)}, got {prefill!r}.",
                                      param="prefill")
        if prefill == "llamacpp" or (prefill == "auto" and not fast_bf16()):
            return "llamacpp"
        twin = float_twin(self.text_side)
        if twin is None:
            if prefill == "torch":
                raise InvalidRequestError(f"prefill='torch' needs the float weights {self.path.name} was made from; "
                                          "they are not beside it nor on its card.", param="prefill")
            return "llamacpp"
        torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, None: None}[dtype]
        torch_dtype = torch_dtype or (torch.bfloat16 if fast_bf16() else torch.float32)
        n_layer, kv_heads, head_dim = self._kv_shape()
        n_stream = llama_cpp.llama_n_seq_max(self.context.ctx)  # one KV stream per sequence
        config = json.loads((twin / "config.json").read_text(encoding="utf-8"))
        if (config.get("vocab_size"), config.get("num_hidden_layers"), config.get("num_key_value_heads")) != (
                self.vocab_size, n_layer, kv_heads):
            return "llamacpp"
        header = self.scheduler.run_exclusive(lambda seq_id: learn_layout(
            self.context.ctx, lambda s: self._decode(s, [min(self.eos_ids, default=0)], 0, every_row=False),
            seq_id, n_stream, n_layer, kv_heads * head_dim))
        if header is None:
            return "llamacpp"
        self.scheduler.torch_prefill = TorchPrefill(twin, torch_dtype, header, n_stream, n_layer, head_dim, threads)
        # The float model joins at the first long prompt; the server's memory budget counts it now
        # (its float32 safetensors, scaled to the dtype it runs in).
        stored = sum(f.stat().st_size for f in twin.glob("*.safetensors"))
        self.memory_bytes += stored * torch_dtype.itemsize // 4
        self.scheduler.prefill_min_tokens = min_tokens
        return f"torch-{str(torch_dtype).removeprefix('torch.')}"

    def preload(self) -> None:
        """Load now what would load at first use (the PyTorch prefill model): a server calls this
        at start so its first long prompt is not the one that waits."""
        if self.scheduler is not None and self.scheduler.torch_prefill is not None:
            self.scheduler.run_exclusive(lambda _: self.scheduler.torch_prefill.load())

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self.tokenizer, request))

    def prepare(self, request: GenerationRequest) -> list[int]:
        return prepare_prompt(self.tokenizer, request, self.context_length, self.model.n_ctx_train())

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        from slmkit.engine.drafting import ModelDrafter, PromptLookupDrafter
        from slmkit.engine.llamacpp_batching import Slot

        prompt_ids = self.prepare(request)
        state = SequenceState(self.tokenizer, prompt_ids, self.eos_ids, request.max_new_tokens, request.stop)
        slot = Slot(state, Sampler(request.sampling))
        greedy = request.sampling.temperature == 0 and request.sampling.repetition_penalty == 1.0
        if request.prompt_lookup_tokens and greedy and self.prompt_lookup:
            slot.drafter, slot.draft_tokens = PromptLookupDrafter(), request.prompt_lookup_tokens
        elif self.draft_model is not None and greedy:
            slot.drafter, slot.draft_tokens = ModelDrafter(self.draft_model), self.draft_tokens
        return self.scheduler.submit(slot)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def native_tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization of ``text`` (special tokens parsed, no BOS added): what
        llama.cpp and Ollama would feed the model. The parity check compares it with :meth:`tokenize`."""
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        check_scoring_window(len(token_ids), self.context_length)
        token_ids = list(token_ids)
        return self.scheduler.run_exclusive(lambda seq_id: self._score(seq_id, token_ids))

    def _decode(self, seq_id: int, token_ids: list[int], start: int, every_row: bool = True) -> np.ndarray:
        """Feed ``token_ids`` at positions ``start``... of sequence ``seq_id`` (on the scheduler
        thread); the logits of every token (``every_row``) or of the last one only, (rows, vocab)."""
        import llama_cpp

        ctx, rows = self.context.ctx, []
        step = min(self.batch_size, 512)  # every row's logits are kept: bound the buffer
        batch = llama_cpp.llama_batch_init(step, 0, 1)
        try:
            for offset in range(0, len(token_ids), step):
                part = token_ids[offset : offset + step]
                for i, token in enumerate(part):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + offset + i, 1
                    batch.seq_id[i][0] = seq_id
                    batch.logits[i] = every_row or offset + i == len(token_ids) - 1
                batch.n_tokens = len(part)
                status = llama_cpp.llama_decode(ctx, batch)
                if status != 0:
                    raise RuntimeError(f"llama_decode returned {status} while scoring")
                outputs = len(part) if every_row else int(offset + len(part) == len(token_ids))
                if outputs:
                    block = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(outputs, self.vocab_size))
                    rows.append(block.copy())
        finally:
            llama_cpp.llama_batch_free(batch)
        return np.concatenate(rows) if rows else np.zeros((0, self.vocab_size), dtype=np.float32)

    def _score(self, seq_id: int, token_ids: list[int]) -> list[float]:
        """Teacher-forced log-probabilities on sequence ``seq_id`` (runs on the scheduler thread)."""
        logits = torch.from_numpy(self._decode(seq_id, token_ids, 0))[:-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(token_ids[1:], dtype=torch.long).unsqueeze(1)
        return logprobs.gather(1, targets).squeeze(1).tolist()

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Log-probabilities of each continuation's tokens after ``prompt_ids``
        (:func:`slmkit.engine.scoring.score_continuations`): the prompt is decoded once, then each
        continuation on top of its KV, which is cut back to the prompt after each."""
        from slmkit.engine.scoring import check_continuations

        check_continuations(prompt_ids, continuations, self.context_length)
        prompt_ids, continuations = list(prompt_ids), [list(c) for c in continuations]
        return self.scheduler.run_exclusive(lambda seq_id: self._score_after(seq_id, prompt_ids, continuations))

    def _score_after(self, seq_id: int, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
        import llama_cpp

        from slmkit.engine.scoring import continuation_rows

        memory = llama_cpp.llama_get_memory(self.context.ctx)
        first = torch.from_numpy(self._decode(seq_id, prompt_ids, 0, every_row=False)[-1])
        results = []
        for continuation in continuations:
            # the last token's logits predict nothing that is scored, so it is not fed
            rows = self._decode(seq_id, continuation[:-1], len(prompt_ids)) if len(continuation) > 1 else None
            results.append(continuation_rows(first, None if rows is None else torch.from_numpy(rows), continuation))
            llama_cpp.llama_memory_seq_rm(memory, seq_id, len(prompt_ids), -1)
        return results

    def metadata(self) -> dict[str, str]:
        """The GGUF key/value metadata as llama.cpp read it."""
        return dict(self.model.metadata())

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        self._finalizer()


def _close_native(context, model, threadpool) -> None:
    with quiet_llama():
        context.close()
        model.close()
    if threadpool is not None:
        _ggml_cpu().ggml_threadpool_free(threadpool)
