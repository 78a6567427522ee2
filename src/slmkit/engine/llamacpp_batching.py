"""Continuous batching for the llama.cpp backend, on llama-cpp-python's low-level bindings.

One scheduler thread owns the llama.cpp context. Every request is a sequence id with a KV
stream of its own (as in llama-server; a cache shared by all sequences made every token attend
over every sequence's cells). Each step builds one ``llama_batch``: the next token of every decoding
sequence (plus its draft tokens when it decodes speculatively), then prompt chunks of the
sequences still prefilling, up to ``n_batch`` tokens, so a long prompt is prefilled a chunk per
step without stalling the streams already running. One ``llama_decode`` runs it all; each
sequence samples from its own logits rows with its own :class:`Sampler` and
:class:`SequenceState`. Sequences join and leave between steps; a cancelled or finished one has
its KV removed at once. A failure inside one sequence ends that request only.

Prompt prefixes are kept in a :class:`PrefixCache`: when a prompt has been prefilled, its KV is
copied out to host memory (``llama_state_seq_get_data``); a later prompt that starts with the
same tokens has that KV put back into its own sequence (``llama_state_seq_set_data``, the
positions past the shared prefix dropped) instead of computing it again. Cached prefixes are
kept out of the KV cache on purpose: a parked prefix would hold a sequence id and its whole
KV stream, while a copy back costs milliseconds (and from a shared cache, parked prefixes had
made every new prompt slower to prefill: attention passed over their cells too).
"""

from __future__ import annotations

import bisect
import ctypes
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from slmkit.engine.drafting import Drafter
from slmkit.engine.llamacpp_prefill import PREFILL_MIN_TOKENS
from slmkit.engine.prefix_cache import PrefixCache
from slmkit.engine.sampling import Sampler
from slmkit.engine.sequence import SequenceState
from slmkit.engine.streams import DONE, ChunkQueue, ChunkStream, wait_for_readers
from slmkit.engine.torch_batching import EngineStoppedError, request_error

log = logging.getLogger(__name__)

# The longest a step waits for the event loop to take the last step's chunks.
READERS_WAIT_S = 0.005


@dataclasses.dataclass
class Slot:
    """One request inside the scheduler."""

    state: SequenceState
    sampler: Sampler
    output: ChunkQueue = dataclasses.field(default_factory=ChunkQueue)
    cancelled: bool = False
    seq_id: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache (positions 0..n_past-1)
    todo: list[int] = dataclasses.field(default_factory=list)  # tokens to feed next
    prefilling: bool = True
    drafter: Drafter | None = None  # speculative decoding (greedy only)
    draft_tokens: int = 0


@dataclasses.dataclass
class _Fed:
    slot: Slot
    count: int
    draft: list[int]
    row: int = -1  # row of llama.cpp's logits buffer of its first token that has logits


class LlamaBatchScheduler:
    def __init__(self, ctx, vocab_size: int, n_batch: int, max_batch_size: int, kv_cells: int,
                 prefix_cache: PrefixCache | None):
        # kv_cells: the KV room of each sequence (its own stream in llama.cpp's cache).
        import llama_cpp

        self.ll = llama_cpp
        self.ctx, self.vocab_size, self.n_batch = ctx, vocab_size, n_batch
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.max_batch_size, self.kv_cells = max_batch_size, kv_cells
        self.prefix_cache = prefix_cache
        self.saved: dict[int, tuple[ctypes.Array, int]] = {}  # prefix-cache handle -> its KV state and size
        self._next_handle = 0
        # Forced tokens fed in one step per sequence, kept small enough that every running
        # sequence's fit in one batch.
        self.max_forced = max(0, min(32, n_batch // max_batch_size - 2))
        # Cold prompts of at least prefill_min_tokens are prefilled by this callable (token ids ->
        # (last logits, sequence state)) when the engine set one (engine/llamacpp_prefill.py).
        self.torch_prefill = None
        self.prefill_min_tokens = PREFILL_MIN_TOKENS
        # One id per running request, one for teacher-forced scoring: the context's n_seq_max.
        self.sequence_count = llama_cpp.llama_n_seq_max(ctx)
        self.free_ids = list(range(self.sequence_count))
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.pending: queue.Queue = queue.Queue()
        self.waiting: list[Slot] = []  # taken from the queue, waiting for a sequence id or KV room
        self.active: list[Slot] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="slmkit-llamacpp-scheduler", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------
    def submit(self, slot: Slot) -> ChunkStream:
        """The slot's chunks (read them blocking or with ``async for``); it joins when reading
        starts, and closing the stream cancels it."""
        if self._stopping:
            raise EngineStoppedError("The engine has stopped; restart it.")

        def cancel() -> None:
            slot.cancelled = True  # the caller stopped listening: free the sequence at the next step
            self.pending.put(None)  # wake the thread if it is idle

        return ChunkStream(slot.output, start=lambda: self.pending.put(slot), cancel=cancel, error=request_error)

    def run_exclusive(self, job: Callable[[int], object]) -> object:
        """Run ``job(seq_id)`` on the scheduler thread between steps, with a free sequence id
        whose KV is cleared afterwards (teacher-forced scoring uses this)."""
        if self._stopping:
            raise EngineStoppedError("The engine has stopped; restart it.")
        future: Future = Future()
        self.pending.put((job, future))
        return future.result()

    @property
    def active_count(self) -> int:
        return len(self.active)

    @property
    def queue_depth(self) -> int:
        return self.pending.qsize() + len(self.waiting)

    def sequence_tokens(self) -> dict[int, int]:
        """Tokens in the KV cache per sequence id (cached prefixes are not in it)."""
        counts = {}
        for seq_id in range(self.sequence_count):
            top = self.ll.llama_memory_seq_pos_max(self.memory, seq_id)
            if top >= 0:
                counts[seq_id] = top - self.ll.llama_memory_seq_pos_min(self.memory, seq_id) + 1
        return counts

    def stop(self) -> None:
        self._stopping = True
        self.pending.put(None)
        self._thread.join(timeout=30)
        self.ll.llama_batch_free(self.batch)

    # -- scheduler thread --------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            try:
                self._take_pending(block=not self.active and not self.waiting)
                self._drop_cancelled()
                self._admit()
                if self.active:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one step
                log.exception("llama.cpp scheduler step failed")
                for slot in list(self.active):
                    self._finish(slot, exc)
        for slot in self.active + self.waiting:
            slot.output.put(EngineStoppedError("The engine was closed."))

    def _take_pending(self, block: bool) -> None:
        while True:
            try:
                item = self.pending.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                return
            block = False
            if isinstance(item, Slot):
                self.waiting.append(item)
            elif isinstance(item, tuple):
                self._exclusive(*item)

    def _take_id(self) -> int:
        # The lowest free id, and the active list kept in id order: with one KV stream per
        # sequence, llama.cpp puts sequences in one micro-batch only while their ids run
        # consecutively in the batch (llama_batch_allocr::split_equal); rows in any other order
        # were decoded one sequence at a time, 3.5x slower for 8 streams.
        seq_id = min(self.free_ids)
        self.free_ids.remove(seq_id)
        return seq_id

    def _exclusive(self, job, future: Future) -> None:
        seq_id = max(self.free_ids)  # the highest: running requests keep the low, consecutive ones
        self.free_ids.remove(seq_id)
        try:
            future.set_result(job(seq_id))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)
        finally:
            self.ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
            self.free_ids.append(seq_id)

    def _drop_cancelled(self) -> None:
        for slot in [s for s in self.active if s.cancelled]:
            self._release(slot)
        self.waiting = [s for s in self.waiting if not s.cancelled]

    def _admit(self) -> None:
        """Give waiting requests a sequence id while there is one (each has KV room for the
        whole request: the engine refuses prompt + max_new_tokens beyond its context_length)."""
        while self.waiting and len(self.active) < self.max_batch_size:
            slot = self.waiting.pop(0)
            slot.seq_id = self._take_id()
            slot.todo = list(slot.state.prompt_ids)
            if self.prefix_cache:
                entry, length = self.prefix_cache.lookup(slot.state.prompt_ids)
                if entry is not None and self._restore(*self.saved[entry.handle], slot.seq_id, length):
                    slot.n_past, slot.todo = length, slot.todo[length:]
            bisect.insort(self.active, slot, key=lambda s: s.seq_id)
            # The part not cached is long: PyTorch prefills the whole prompt again, which here
            # is still faster than llama.cpp prefilling that part.
            if self.torch_prefill is not None and len(slot.todo) >= self.prefill_min_tokens:
                self._prefill_in_torch(slot)

    def _prefill_in_torch(self, slot: Slot) -> None:
        """Prefill a long prompt with PyTorch and write its KV into the slot's sequence, replacing
        any cached prefix restored there (engine/llamacpp_prefill.py); on any failure llama.cpp
        prefills it as usual."""
        prompt = slot.state.prompt_ids
        try:
            logits, state = self.torch_prefill(prompt)
        except Exception:  # noqa: BLE001 - the request still gets its answer, from llama.cpp's prefill
            log.exception("PyTorch prefill failed; llama.cpp prefills this prompt")
            return
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not self._restore(buffer, len(state), slot.seq_id, len(prompt)):
            return
        slot.n_past, slot.todo, slot.prefilling = len(prompt), [], False
        self._remember_prompt(slot, (buffer, len(state)))
        self._emit(slot, logits)

    def _restore(self, state: ctypes.Array, size: int, seq_id: int, length: int) -> bool:
        """Put a cached prefix's KV into ``seq_id`` and keep its first ``length`` positions;
        False (and nothing kept) when llama.cpp finds no room for it."""
        from slmkit.engine.llamacpp_backend import quiet_llama

        with quiet_llama():  # llama.cpp logs a debug line for every restore
            restored = self.ll.llama_state_seq_set_data(self.ctx, state, size, seq_id)
        if restored == 0:
            self.ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
            return False
        self.ll.llama_memory_seq_rm(self.memory, seq_id, length, -1)
        return True

    def _step(self) -> None:
        batch = self.batch
        # What each sequence feeds this step: decoding ones first (their next token, forced
        # tokens and drafts), then prompt chunks in the room left, up to n_batch tokens.
        plan: dict[int, tuple[list[int], list[int] | None, bool]] = {}  # seq id -> tokens, draft, chunk done
        used = 0
        for slot in self.active:
            if slot.prefilling:
                continue
            if used >= self.n_batch:
                break  # n_batch smaller than the running streams: the rest go next step
            if used and used + len(slot.todo) > self.n_batch:
                continue  # its forced tokens do not fit beside the others: next step
            draft = self._draft(slot, room=self.n_batch - used - len(slot.todo))
            plan[slot.seq_id] = (slot.todo + draft, draft, True)
            used += len(slot.todo) + len(draft)
        for slot in self.active:
            if not slot.prefilling or used >= self.n_batch:
                continue
            chunk = slot.todo[: self.n_batch - used]
            done = len(chunk) == len(slot.todo)
            plan[slot.seq_id] = (chunk, [] if done else None, done)
            used += len(chunk)
        # Written in sequence-id order (self.active is kept in it): llama.cpp splits a batch whose
        # ids do not run consecutively into micro-batches of their own.
        fed, at, outputs = [], 0, 0
        for slot in self.active:
            if slot.seq_id not in plan:
                continue
            tokens, draft, done = plan[slot.seq_id]
            self._add(at, tokens, slot, logits=False)
            if slot.prefilling:
                if done:
                    batch.logits[at + len(tokens) - 1] = True
                fed.append(_Fed(slot, len(tokens), draft, row=outputs if done else -1))
                outputs += done
            else:
                # the last forced token and every draft have logits; nothing is chosen after the
                # forced tokens before it
                for i in range(len(slot.todo) - 1, len(tokens)):
                    batch.logits[at + i] = True
                fed.append(_Fed(slot, len(tokens), draft, row=outputs))
                outputs += len(draft) + 1
            at += len(tokens)
        batch.n_tokens = used
        # The server's event loop writes the last step's tokens out before llama.cpp starts:
        # run beside llama.cpp's threads on the same cores, it held one of them up at every
        # barrier of the step (8 streams: +1.4 % tokens/s, docs/llamacpp.md).
        wait_for_readers(READERS_WAIT_S)
        status = self.ll.llama_decode(self.ctx, batch)
        if status == 1:
            raise RuntimeError(f"llama.cpp found no KV room for this step ({self.kv_cells} tokens per sequence); "
                               "load the model with a larger context_length")
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} for a batch of {used} tokens")
        self._rows = self._logits(outputs)
        for item in fed:
            try:
                self._after_decode(item)
            except Exception as exc:  # noqa: BLE001 - one request fails, the others go on
                log.exception("generation failed for one sequence")
                self._finish(item.slot, exc)

    def _add(self, start: int, tokens: list[int], slot: Slot, logits: bool) -> None:
        batch = self.batch
        for i, token in enumerate(tokens):
            j = start + i
            batch.token[j] = token
            batch.pos[j] = slot.n_past + i
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = slot.seq_id
            batch.logits[j] = logits

    def _draft(self, slot: Slot, room: int) -> list[int]:
        if slot.drafter is None:
            return []
        state = slot.state
        # drafts never pass the request's end, so they fit in its KV stream
        count = min(slot.draft_tokens, state.max_new_tokens - len(state.generated) - 1, room)
        return slot.drafter.propose(state.all_ids, count) if count > 0 else []

    def _logits(self, outputs: int) -> np.ndarray:
        """A view of llama.cpp's logits, one row per batch token that asked for them, in batch
        order (valid until the next decode; the sampler only reads it). One call for the whole
        step instead of one per row: every ctypes call gives up the GIL, and taking it back
        from the server's threads cost more than the call itself."""
        if not outputs:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        pointer = self.ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(outputs, self.vocab_size))

    def _after_decode(self, item: _Fed) -> None:
        slot = item.slot
        if item.draft is None:  # a prompt chunk, more to come
            slot.n_past += item.count
            slot.todo = slot.todo[item.count :]
            return
        if slot.prefilling:
            slot.n_past += item.count
            slot.prefilling = False
            self._remember_prompt(slot)
            self._emit(slot, self._rows[item.row])
            return
        # Decoding: row r predicts the token after the r-th token from the last fed one (the
        # sampled or last forced token); drafts are kept while they agree.
        draft, accepted, fed = item.draft, 0, item.count - len(item.draft)
        slot.state.stats.draft_tokens += len(draft)
        for row in range(len(draft) + 1):
            token = self._emit(slot, self._rows[item.row + row])
            if token is None:
                return  # finished; the sequence is already released
            if row < len(draft) and token == draft[row]:
                accepted += 1
                slot.state.stats.accepted_draft_tokens += 1
                if len(slot.todo) > 1:  # the grammar forced tokens after it: later drafts are off the path
                    slot.todo = slot.todo[1:]  # the accepted token is in the KV already
                    break
                continue
            break
        slot.n_past += fed + accepted
        if accepted < len(draft):  # drop the KV of drafts the model did not agree with
            self.ll.llama_memory_seq_rm(self.memory, slot.seq_id, slot.n_past, -1)

    def _emit(self, slot: Slot, logits: np.ndarray) -> int | None:
        """Sample the slot's next token and send its chunk, then the tokens its grammar forces
        after it (fed with it next step, no logits in between: jump-forward); None when the
        request finished."""
        token = slot.sampler(logits, slot.state.all_ids)
        slot.todo = [token]
        if not self._send(slot, token, slot.sampler.last_logprob):
            return None
        grammar = slot.sampler.grammar_state
        # Greedy only: sampling would draw (and use random numbers) for these tokens too, and
        # could pick another split of the same bytes; jumping would change what it returns.
        if grammar is not None and slot.sampler.greedy:
            room = min(self.max_forced, slot.state.max_new_tokens - len(slot.state.generated))
            for forced in grammar.forced()[:room]:
                grammar.advance(forced)
                slot.todo.append(forced)
                if not self._send(slot, forced, None):
                    return None
        return token

    def _send(self, slot: Slot, token: int, logprob: float | None) -> bool:
        chunk = slot.state.append(token, logprob, slot.sampler.logprobs)
        if chunk.text or chunk.finish_reason:
            slot.output.put(chunk)
        if chunk.finish_reason:
            self._finish(slot, None)
            return False
        return True

    def _remember_prompt(self, slot: Slot, state: tuple[ctypes.Array, int] | None = None) -> None:
        """Copy the just-prefilled prompt's KV (positions 0..n_past-1, nothing generated yet)
        out to host memory for the prefix cache (``state``: already at hand, as written)."""
        cache = self.prefix_cache
        if cache is None or not cache.wants(slot.state.prompt_ids):
            return
        if state is not None:
            buffer, written = state
        else:
            size = self.ll.llama_state_seq_get_size(self.ctx, slot.seq_id)
            buffer = (ctypes.c_uint8 * size)()
            written = self.ll.llama_state_seq_get_data(self.ctx, buffer, size, slot.seq_id)
        if written == 0:
            return
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self.saved[handle] = (buffer, written)
        for freed in cache.insert(slot.state.prompt_ids, handle):
            del self.saved[freed]

    def _finish(self, slot: Slot, error: BaseException | None) -> None:
        self._release(slot)  # before the caller hears of it: its KV is gone when the stream ends
        slot.output.put(error if error is not None else DONE)

    def _release(self, slot: Slot) -> None:
        if slot in self.active:
            self.ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            self.free_ids.append(slot.seq_id)
            self.active.remove(slot)

