"""ONNX Runtime backend: runs an ``slm export onnx`` directory (decoder with KV cache).

The generation loop keeps the KV cache inside ONNX Runtime: each step binds the previous
step's ``present`` OrtValues as the next ``past`` inputs through IO binding, so no cache
tensor is copied to numpy; only the last row of logits is read. Text handling is the shared
one (:class:`SequenceState`, :class:`Sampler`, :func:`render_prompt`), as on every backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slmkit.engine import Chunk, GenerationRequest
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.engine.torch_backend import check_scoring_window, load_tokenizer, prepare_prompt, render_prompt
from slmkit.errors import CorruptModelError


def find_onnx_file(folder: Path) -> Path:
    """The decoder file of an ONNX export directory (int8 exports hold model.onnx too)."""
    from slmkit.formats.onnx_check import ONNX_FILE

    path = Path(folder) / ONNX_FILE
    if not path.is_file():
        raise CorruptModelError(f"{folder} has no {ONNX_FILE}; it is not an ONNX export. Re-export it.")
    return path


class OnnxEngine:
    """One ONNX decoder, one sequence at a time (requests from several threads take turns)."""

    def __init__(self, folder: Path, model_name: str | None = None, threads: int | None = 2):
        import onnxruntime as ort

        from slmkit.formats.onnx_check import check_onnx_file, past_names, present_names

        started = time.perf_counter()
        self.folder = Path(folder)
        self.model_name = model_name or self.folder.name
        model_file = find_onnx_file(self.folder)
        check_onnx_file(model_file)
        config = json.loads((self.folder / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.kv_heads = int(config["num_key_value_heads"])
        self.head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
        self.context_length = int(config.get("max_position_embeddings", 2048))
        self.tokenizer = load_tokenizer(self.folder)
        self.eos_ids = self._end_of_turn_ids()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 2
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped exceptions for bad graphs
            raise CorruptModelError(f"ONNX Runtime cannot load {model_file}: {exc}") from exc
        self.past_names, self.present_names = past_names(self.layers), present_names(self.layers)
        self.load_time_s = time.perf_counter() - started
        self._lock = threading.Lock()

    def _end_of_turn_ids(self) -> set[int]:
        ids: set[int] = set()
        config = self.folder / "generation_config.json"
        if config.exists():
            value = json.loads(config.read_text()).get("eos_token_id")
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _empty_past(self) -> list:
        import onnxruntime as ort

        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        return [ort.OrtValue.ortvalue_from_numpy(empty) for _ in self.past_names]

    def _run(self, token_ids: list[int], past: list) -> tuple[np.ndarray, list]:
        """One forward pass: logits (seq, vocab) and the grown cache as OrtValues."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        ids = ort.OrtValue.ortvalue_from_numpy(np.asarray([token_ids], dtype=np.int64))
        binding.bind_ortvalue_input("input_ids", ids)
        for name, value in zip(self.past_names, past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy()[0], list(outputs[1:])

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self.tokenizer, request))

    def prepare(self, request: GenerationRequest) -> list[int]:
        return prepare_prompt(self.tokenizer, request, self.context_length)

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        prompt_ids = self.prepare(request)
        return self._generate(request, prompt_ids)

    def _generate(self, request: GenerationRequest, prompt_ids: list[int]) -> Iterator[Chunk]:
        # The lock is held for one forward pass at a time, never across a ``yield``: a caller
        # that stops reading must not block the others. Each sequence keeps its own cache, so
        # concurrent requests take turns step by step.
        state = SequenceState(self.tokenizer, prompt_ids, self.eos_ids, request.max_new_tokens, request.stop)
        sampler = Sampler(request.sampling)
        context = torch.tensor(prompt_ids, dtype=torch.long)
        logits, past = self._locked_run(prompt_ids, self._empty_past())
        while True:
            token = sampler(torch.from_numpy(logits[-1]), context)
            chunk = state.append(token, sampler.last_logprob, sampler.logprobs)
            if chunk.text or chunk.finish_reason:
                yield chunk
            if chunk.finish_reason:
                return
            context = torch.cat([context, torch.tensor([token])])
            logits, past = self._locked_run([token], past)

    def _locked_run(self, token_ids: list[int], past: list) -> tuple[np.ndarray, list]:
        with self._lock:
            if self.session is None:
                from slmkit.engine.torch_batching import EngineStoppedError

                raise EngineStoppedError("The model's engine has stopped; load the model again.")
            return self._run(token_ids, past)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_logprobs(self, token_ids: list[int]) -> list[float]:
        check_scoring_window(len(token_ids), self.context_length)
        logits, _ = self._locked_run(list(token_ids), self._empty_past())
        logprobs = torch.log_softmax(torch.from_numpy(logits[:-1]).float(), dim=-1)
        targets = torch.tensor(token_ids[1:], dtype=torch.long).unsqueeze(1)
        return logprobs.gather(1, targets).squeeze(1).tolist()

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Log-probabilities of each continuation's tokens after ``prompt_ids``
        (:func:`slmkit.engine.scoring.score_continuations`): one pass over the prompt, then one per
        continuation over the prompt's cache (the exported graph takes one sequence at a time)."""
        from slmkit.engine.scoring import check_continuations, continuation_rows

        check_continuations(prompt_ids, continuations, self.context_length)
        logits, past = self._locked_run(list(prompt_ids), self._empty_past())
        first = torch.from_numpy(logits[-1])
        results = []
        for continuation in continuations:
            # the last token's logits predict nothing that is scored, so it is not fed
            rows = torch.from_numpy(self._locked_run(list(continuation[:-1]), past)[0]) if len(continuation) > 1 else None
            results.append(continuation_rows(first, rows, list(continuation)))
        return results

    def close(self) -> None:
        with self._lock:
            self.session = None
