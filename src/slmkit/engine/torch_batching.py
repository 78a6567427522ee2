"""Continuous batching for the PyTorch backend.

One scheduler thread per engine owns the model. Requests join a running batch as soon as
their prompt is prefilled (each prompt alone, so prompts of any length mix), are decoded
together one token per step with their own sampling settings, stops and limits, and leave
the batch the step they finish or their caller stops listening. Sequences of different
lengths share one left-padded KV cache; an attention mask hides the padding. Each request's
chunks reach its reader through a :class:`ChunkStream` (read blocking, or awaited by the
server without a worker thread per token).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading

import torch

from slmkit.engine.drafting import Drafter
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.engine.streams import DONE, ChunkQueue, ChunkStream
from slmkit.errors import SlmError

log = logging.getLogger("slmkit.engine")


@dataclasses.dataclass
class Slot:
    """One request inside the scheduler."""

    state: SequenceState
    sampler: Sampler
    output: ChunkQueue = dataclasses.field(default_factory=ChunkQueue)
    cancelled: bool = False
    last_token: int = 0
    drafter: Drafter | None = None  # speculative decoding (greedy only), when this slot runs alone
    draft_tokens: int = 0
    adapter: str | None = None  # LoRA adapter of a multi-adapter engine; None = the base model


class EngineStoppedError(SlmError):
    """The engine was closed or its scheduler ended; a server reloads it."""

    http_status = 503
    error_type = "server_error"
    code = "engine_stopped"


class GenerationError(RuntimeError):
    """One request failed inside the scheduler for a reason that is not the request's fault;
    the details are in the log, the other requests carry on."""


def request_error(error: BaseException) -> BaseException:
    """What the reader of a failed request sees, on every scheduler: the request's own problem
    or a typed engine error (an SlmError: 400, 500, 503) as it is, anything else as a generic
    failure whose cause stays in the log."""
    if isinstance(error, SlmError):
        return error
    return GenerationError("The generation failed inside the engine.")


class BatchScheduler:
    def __init__(self, model, model_lock: threading.Lock, max_batch_size: int = 8, select_adapters=None):
        self.model = model
        # Multi-adapter engines: select_adapters([adapter of each row]) before every forward pass.
        self.select_adapters = select_adapters
        self.mixed_adapter_steps = 0  # decoding steps whose batch held more than one adapter
        self.model_lock = model_lock
        self.max_batch_size = max_batch_size
        self.pending: queue.Queue[Slot] = queue.Queue()
        self.active: list[Slot] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (batch, cached length): 1 = real token, 0 = padding
        self.error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="slmkit-batch-scheduler", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------
    def submit(self, slot: Slot) -> ChunkStream:
        """The slot's chunks (read them blocking or with ``async for``). It joins the queue when
        reading starts, so a stream that is created but never read costs nothing; closing the
        stream early frees its place in the batch at the next step."""
        if not self.healthy:
            raise EngineStoppedError("The model's engine has stopped; load the model again.") from self.error

        def start() -> None:
            self.pending.put(slot)
            if not self._thread.is_alive():  # it died after the check above: nobody will answer
                slot.output.put(EngineStoppedError("The model's engine has stopped; load the model again."))

        def cancel() -> None:
            slot.cancelled = True

        return ChunkStream(slot.output, start=start, cancel=cancel, error=request_error)

    @property
    def healthy(self) -> bool:
        """False once the scheduler thread has ended (closed, or killed by a bug)."""
        return self.error is None and not self._stopping and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self.pending.qsize()

    @property
    def active_count(self) -> int:
        return len(self.active)

    def stop(self) -> None:
        self._stopping = True
        self.pending.put(None)  # wake the thread
        self._thread.join(timeout=10)

    # -- scheduler thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._admit(block=not self.active)
                    if self.active:
                        self._decode_step()
                except Exception as exc:  # noqa: BLE001 - a whole batch step failed: end its requests, keep serving
                    log.exception("a batched decoding step failed; its %d requests end with an error", len(self.active))
                    for slot in self.active:
                        slot.output.put(exc)
                    self.active, self.cache, self.mask = [], None, None
        except BaseException as exc:  # noqa: BLE001 - the thread is dying: tell every waiting caller
            self.error = exc
            raise
        finally:
            stopped = EngineStoppedError("The model's engine has stopped; load the model again.")
            for slot in self.active:
                slot.output.put(stopped)
            while not self.pending.empty():
                slot = self.pending.get_nowait()
                if slot is not None:
                    slot.output.put(stopped)

    def _admit(self, block: bool) -> None:
        while len(self.active) < self.max_batch_size:
            try:
                slot = self.pending.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                return
            if slot is None:
                return
            block = False
            if slot.cancelled:
                continue
            cache = self._prefill(slot)
            if cache is not None:
                try:
                    self._join_batch(slot, cache)
                except Exception as exc:
                    slot.output.put(exc)
                    raise  # the batch may be half-changed: _run ends it

    def _prefill(self, slot: Slot):
        """Run the prompt alone and emit the first token; the slot's KV cache if it goes on.

        A failure here (bad sampling values, non-finite logits, ...) ends this request only."""
        from transformers import DynamicCache

        try:
            ids = torch.tensor([slot.state.prompt_ids], dtype=torch.long)
            cache = DynamicCache()
            with self.model_lock, torch.inference_mode():
                self._adapters([slot])
                logits = self.model(input_ids=ids, cache=cache, use_cache=True).logits[0, -1]
            if self._emit(slot, logits):
                return None
        except Exception as exc:  # noqa: BLE001 - reported to this request's caller
            self._fail(slot, exc)
            return None
        return cache

    def _fail(self, slot: Slot, exc: Exception) -> None:
        if not isinstance(exc, SlmError) or exc.http_status >= 500:
            log.error("a request failed in the scheduler", exc_info=exc)
        slot.output.put(exc)

    def _emit(self, slot: Slot, logits: torch.Tensor) -> bool:
        """Sample the slot's next token and send its chunk; True when the slot is finished."""
        token = slot.sampler(logits, slot.state.all_ids)
        slot.last_token = token
        chunk = slot.state.append(token, slot.sampler.last_logprob, slot.sampler.logprobs)
        if chunk.text or chunk.finish_reason:
            slot.output.put(chunk)
        if chunk.finish_reason:
            slot.output.put(DONE)
            return True
        return False

    def _emit_or_fail(self, slot: Slot, logits: torch.Tensor) -> bool:
        """:meth:`_emit`, with a failure ending this sequence only (True: it leaves the batch)."""
        try:
            return self._emit(slot, logits)
        except Exception as exc:  # noqa: BLE001 - reported to this request's caller
            self._fail(slot, exc)
            return True

    def _join_batch(self, slot: Slot, cache) -> None:
        """Add a prefilled sequence to the running batch, left-padding whichever is shorter."""
        new_length = cache.get_seq_length()
        new_mask = torch.ones(1, new_length, dtype=torch.long)
        if not self.active:
            self.cache, self.mask, self.active = cache, new_mask, [slot]
            return
        length = self.mask.shape[1]
        if new_length < length:
            _left_pad_cache(cache, length - new_length)
            new_mask = torch.cat([torch.zeros(1, length - new_length, dtype=torch.long), new_mask], dim=1)
        elif new_length > length:
            _left_pad_cache(self.cache, new_length - length)
            pad = torch.zeros(self.mask.shape[0], new_length - length, dtype=torch.long)
            self.mask = torch.cat([pad, self.mask], dim=1)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.mask = torch.cat([self.mask, new_mask], dim=0)
        self.active.append(slot)

    def _decode_step(self) -> None:
        keep = [i for i, slot in enumerate(self.active) if not slot.cancelled]
        if len(keep) < len(self.active):
            self._select(keep)
            if not self.active:
                return
        if len(self.active) == 1 and self.active[0].drafter is not None and self._speculative_step(self.active[0]):
            return
        tokens = torch.tensor([[slot.last_token] for slot in self.active], dtype=torch.long)
        self.mask = torch.cat([self.mask, torch.ones(len(self.active), 1, dtype=torch.long)], dim=1)
        positions = (self.mask.sum(dim=1, keepdim=True) - 1)
        with self.model_lock, torch.inference_mode():
            self._adapters(self.active)
            logits = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=positions,
                                cache=self.cache, use_cache=True).logits[:, -1]
        finished = [self._emit_or_fail(slot, logits[row]) for row, slot in enumerate(self.active)]
        if any(finished):
            self._select([i for i, done in enumerate(finished) if not done])

    def _speculative_step(self, slot: Slot) -> bool:
        """Check drafted tokens in one forward pass (greedy, batch of one). False when there
        was nothing to draft, so the caller takes an ordinary step."""
        state = slot.state
        room = state.max_new_tokens - len(state.generated) - 1
        draft = slot.drafter.propose(state.all_ids, min(slot.draft_tokens, room))
        if not draft:
            return False
        tokens = torch.tensor([[slot.last_token, *draft]], dtype=torch.long)
        self.mask = torch.cat([self.mask, torch.ones(1, tokens.shape[1], dtype=torch.long)], dim=1)
        end = int(self.mask.sum())
        positions = torch.arange(end - tokens.shape[1], end).unsqueeze(0)
        with self.model_lock, torch.inference_mode():
            self._adapters([slot])
            logits = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=positions,
                                cache=self.cache, use_cache=True).logits[0]
        accepted = 0
        while accepted < len(draft) and int(logits[accepted].argmax()) == draft[accepted]:
            accepted += 1
        state.stats.draft_tokens += len(draft)
        state.stats.accepted_draft_tokens += accepted
        # The cache now holds the last token and every drafted one; keep only the agreed ones.
        rejected = len(draft) - accepted
        if rejected:
            self.cache.crop(-rejected)
            self.mask = self.mask[:, :-rejected]
        for position in range(accepted + 1):
            if self._emit_or_fail(slot, logits[position]):
                self._select([])
                return True
        return True

    def _adapters(self, slots: list[Slot]) -> None:
        """Tell a multi-adapter model each row's adapter (under the model lock, before the forward pass)."""
        if self.select_adapters is None:
            return
        adapters = [slot.adapter for slot in slots]
        if len(set(adapters)) > 1:
            self.mixed_adapter_steps += 1
        self.select_adapters(adapters)

    def _select(self, rows: list[int]) -> None:
        """Keep only ``rows`` of the batch and drop padding columns no sequence needs any more."""
        self.active = [self.active[i] for i in rows]
        if not self.active:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        unused = int((self.mask.cumsum(dim=1) == 0).all(dim=0).sum())
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, unused:]
                layer.values = layer.values[:, :, unused:]


def _left_pad_cache(cache, amount: int) -> None:
    for layer in cache.layers:
        batch, heads, _, dim = layer.keys.shape
        pad = torch.zeros(batch, heads, amount, dim, dtype=layer.keys.dtype)
        layer.keys = torch.cat([pad, layer.keys], dim=2)
        layer.values = torch.cat([pad.clone(), layer.values], dim=2)
