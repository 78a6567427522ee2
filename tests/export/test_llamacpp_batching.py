"""Continuous batching, the prefix cache and speculative decoding in the llama.cpp backend, on
the tiny model's f32 GGUF (exact kernels, so batched and one-at-a-time greedy runs can be
compared token for token)."""

import threading
import time

import pytest

from slmkit.engine import GenerationRequest, load_engine

QUESTIONS = ["hi", "Tell me about the sea and the wind and the long grey waves.", "2 + 2 =",
             "List three colours", "Why is the sky blue? Answer in detail please, with examples.", "ok"]


def _request(text: str, tokens: int = 24, **options) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], max_new_tokens=tokens, **options)


def _ids(result) -> list[int]:
    return [i for chunk in result for i in chunk.token_ids]


@pytest.fixture()
def gguf_path(exports):
    return str(exports["gguf-f32"].path)


def _engine(path, **options):
    return load_engine(path, backend="llamacpp", **options)


def _concurrently(engine, requests, stagger_s: float = 0.0) -> list[list[int]]:
    results: list = [None] * len(requests)

    def run(index):
        results[index] = _ids(list(engine.stream(requests[index])))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
        time.sleep(stagger_s)
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_batched_output_equals_one_at_a_time_greedy_output(gguf_path):
    engine = _engine(gguf_path, prefix_cache_tokens=0)
    requests = [_request(q) for q in QUESTIONS]
    alone = [_ids(list(engine.stream(r))) for r in requests]
    assert len({tuple(a) for a in alone}) > 1, "the prompts should give different answers"
    together = _concurrently(engine, requests)
    staggered = _concurrently(engine, requests, stagger_s=0.05)  # requests join a running batch
    engine.close()
    assert together == alone
    assert staggered == alone


def test_chunked_prefill_gives_the_same_output(gguf_path):
    long_prompt = _request(" ".join(QUESTIONS * 4), tokens=16)
    whole = _engine(gguf_path, prefix_cache_tokens=0)
    want = _ids(list(whole.stream(long_prompt)))
    whole.close()
    chunked = _engine(gguf_path, prefix_cache_tokens=0, batch_size=32, ubatch_size=32)
    assert len(chunked.prepare(long_prompt)) > 3 * 32
    short = _request("hi", tokens=40)
    got = _concurrently(chunked, [short, long_prompt])
    chunked.close()
    assert got[1] == want


def test_a_cancelled_stream_frees_its_sequence_and_the_others_go_on(gguf_path):
    engine = _engine(gguf_path, prefix_cache_tokens=0)
    other = _request("Why is the sky blue?", tokens=40)
    want = _ids(list(engine.stream(other)))
    results = []
    worker = threading.Thread(target=lambda: results.append(_ids(list(engine.stream(other)))))
    stream = engine.stream(_request("Tell me a long story", tokens=200))
    next(stream)
    worker.start()
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    worker.join(timeout=60)
    while engine.scheduler.active_count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.scheduler.active_count == 0
    assert engine.scheduler.sequence_tokens() == {}, "the cancelled sequence still holds KV cells"
    assert results == [want]
    engine.close()


def test_an_error_in_one_sequence_ends_that_request_only(gguf_path):
    from slmkit.engine.llamacpp_batching import Slot
    from slmkit.engine.sampling import Sampler
    from slmkit.engine.sequence import SequenceState
    from slmkit.engine.torch_batching import GenerationError

    engine = _engine(gguf_path)
    good = _request("Why is the sky blue?", tokens=30)
    want = _ids(list(engine.stream(good)))

    class BrokenSampler(Sampler):
        def __call__(self, logits, context_ids):
            if len(context_ids) > len(prompt) + 1:
                raise ValueError("injected failure")
            return super().__call__(logits, context_ids)

    prompt = engine.prepare(_request("hi", tokens=30))
    broken = Slot(SequenceState(engine.tokenizer, prompt, engine.eos_ids, 30, []),
                  BrokenSampler(good.sampling))
    results = []
    worker = threading.Thread(target=lambda: results.append(_ids(list(engine.stream(good)))))
    worker.start()
    with pytest.raises(GenerationError, match="failed inside the engine") as failed:
        list(engine.scheduler.submit(broken))
    assert "injected failure" not in str(failed.value), "the cause stays in the log, not in the answer"
    worker.join(timeout=60)
    assert results == [want]
    assert _ids(list(engine.stream(good))) == want, "the scheduler should keep serving"
    engine.close()


def test_prefix_cache_reuses_a_shared_prefix_and_never_a_different_one(gguf_path):
    system = "You answer questions about the sea, the wind, the long grey waves and the ships. " * 3
    changed = system.replace("wind", "rain", 1)  # same length in tokens, different text early on

    def ask(system_text, question):
        return GenerationRequest(messages=[{"role": "system", "content": system_text},
                                           {"role": "user", "content": question}], max_new_tokens=16)

    requests = [ask(system, "hi"), ask(system, "Why?"), ask(changed, "Why?"), ask(system, "Why?")]
    fresh = _engine(gguf_path, prefix_cache_tokens=0)
    want = [_ids(list(fresh.stream(r))) for r in requests]
    fresh.close()
    cached = _engine(gguf_path, context_length=2048, prefix_cache_tokens=1024)
    cache = cached.scheduler.prefix_cache
    got, reused = [], []
    for request in requests:
        before = cache.reused_tokens
        got.append(_ids(list(cached.stream(request))))
        reused.append(cache.reused_tokens - before)
    prompts = [cached.prepare(r) for r in requests]
    cached.close()
    assert got == want
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    assert reused[1] == shared, "the second request should reuse the shared system prompt"
    differ = next(i for i, (a, b) in enumerate(zip(prompts[1], prompts[2], strict=False)) if a != b)
    assert reused[2] == differ, "only the tokens before the changed word may be reused"
    assert reused[3] == len(prompts[3]) - 1, "a repeated prompt reuses all but its last token"


def test_cached_prefixes_hold_no_kv_cells_between_requests_and_come_back_exactly(gguf_path):
    """A cached prefix waits in host memory, not in the shared KV cache (where every later
    prompt's attention would pass over it), and what is restored decodes like a fresh prefill,
    also for two requests restoring the same prefix at once."""
    system = "You answer questions about the sea, the wind, the long grey waves and the ships. " * 3

    def ask(question):
        return GenerationRequest(messages=[{"role": "system", "content": system},
                                           {"role": "user", "content": question}], max_new_tokens=12)

    questions = ["hi", "Why?", "Where?", "When?"]
    fresh = _engine(gguf_path, prefix_cache_tokens=0)
    want = [_ids(list(fresh.stream(ask(q)))) for q in questions]
    fresh.close()
    engine = _engine(gguf_path, context_length=2048, prefix_cache_tokens=1024)
    scheduler = engine.scheduler

    def cells_in_use() -> int:  # asked of llama.cpp itself, over every sequence id it has
        import llama_cpp

        memory = llama_cpp.llama_get_memory(scheduler.ctx)
        return sum(llama_cpp.llama_memory_seq_pos_max(memory, seq) + 1
                   for seq in range(llama_cpp.llama_n_seq_max(scheduler.ctx)))

    assert _ids(list(engine.stream(ask(questions[0])))) == want[0]
    assert len(scheduler.prefix_cache.entries) == 1
    assert cells_in_use() == 0, "the cached prefix should not occupy KV cells"
    assert _ids(list(engine.stream(ask(questions[1])))) == want[1]
    before = scheduler.prefix_cache.reused_tokens
    assert _concurrently(engine, [ask(q) for q in questions[2:]]) == want[2:]
    assert scheduler.prefix_cache.reused_tokens - before > 0, "the concurrent requests should restore the prefix"
    assert cells_in_use() == 0
    engine.close()
    small = _engine(gguf_path, prefix_cache_tokens=1024, prefix_cache_entries=2)
    for question in questions:
        list(small.stream(ask(question)))
    assert len(small.scheduler.prefix_cache.entries) == 2
    assert set(small.scheduler.saved) == set(small.scheduler.prefix_cache.entries), "evicted entries keep no memory"
    small.close()


def test_prefix_cache_is_bounded_and_evicts_least_recently_used():
    from slmkit.engine.prefix_cache import PrefixCache

    cache = PrefixCache(max_entries=2, max_tokens=10)
    assert cache.insert([1, 2, 3], handle=10) == []
    assert cache.insert([4, 5, 6], handle=11) == []
    assert cache.lookup([1, 2, 3, 9]) == (cache.entries[10], 3)  # 10 is now the most recent
    assert cache.insert([7, 8], handle=12) == [11]  # over two entries: the LRU one goes
    assert cache.insert([1, 2, 3, 4], handle=13) == [10]  # covers [1, 2, 3]: that entry is dropped
    assert cache.insert([9] * 9, handle=14) == [12, 13]  # over 10 tokens
    assert cache.lookup([5, 5]) == (None, 0)
    assert not cache.wants(list(range(11)))


def test_prefix_cache_matches_tokens_exactly():
    from slmkit.engine.prefix_cache import PrefixCache

    cache = PrefixCache(max_entries=4, max_tokens=100)
    cache.insert([1, 2, 3, 4, 5], handle=0)
    cache.insert([1, 2, 7, 8, 9], handle=1)
    entry, length = cache.lookup([1, 2, 7, 8, 0, 0])
    assert (entry.handle, length) == (1, 4)
    entry, length = cache.lookup([1, 2, 3, 4, 5])
    assert (entry.handle, length) == (0, 4)  # the last prompt token is always run again
    assert cache.lookup([2, 1, 3, 4, 5]) == (None, 0)


def test_prompt_lookup_speculation_keeps_the_greedy_output(gguf_path):
    engine = _engine(gguf_path, prefix_cache_tokens=0, prompt_lookup=True)
    text = "one two three four five six seven eight nine ten " * 4
    plain = GenerationRequest(prompt=f"Repeat: {text}", max_new_tokens=120)
    speculative = GenerationRequest(prompt=f"Repeat: {text}", max_new_tokens=120, prompt_lookup_tokens=4)
    want = list(engine.stream(plain))
    got = list(engine.stream(speculative))
    assert _ids(got) == _ids(want)
    assert got[-1].stats.draft_tokens > 0
    together = _concurrently(engine, [speculative, plain, GenerationRequest(prompt="hi", max_new_tokens=30)])
    engine.close()
    assert together[0] == together[1] == _ids(want)


def test_draft_model_speculation_keeps_the_greedy_output(gguf_path, eot_model_dir):
    plain_engine = _engine(gguf_path, prefix_cache_tokens=0)
    request = GenerationRequest(prompt="Tell me about the sea", max_new_tokens=30)
    want = _ids(list(plain_engine.stream(request)))
    plain_engine.close()
    engine = _engine(gguf_path, prefix_cache_tokens=0, draft=str(eot_model_dir), draft_tokens=3)
    got = list(engine.stream(request))
    engine.close()
    assert _ids(got) == want
    # The draft is the model the GGUF came from, so it agrees with nearly everything.
    assert got[-1].stats.accepted_draft_tokens > got[-1].stats.draft_tokens // 2


def test_backend_aliases_and_unknown_backend(gguf_path):
    from slmkit.engine.llamacpp_backend import LlamaCppEngine
    from slmkit.errors import InvalidRequestError

    engine = load_engine(gguf_path, backend="llama.cpp")
    assert isinstance(engine, LlamaCppEngine)
    engine.close()
    with pytest.raises(InvalidRequestError, match="Unknown backend 'llama_cpp'. Available: auto, torch, llamacpp"):
        load_engine(gguf_path, backend="llama_cpp")


def test_prompt_lookup_is_off_unless_the_engine_was_asked(gguf_path):
    engine = _engine(gguf_path, prefix_cache_tokens=0)
    text = "one two three four five six seven eight nine ten " * 4
    got = list(engine.stream(GenerationRequest(prompt=f"Repeat: {text}", max_new_tokens=20, prompt_lookup_tokens=4)))
    engine.close()
    assert got[-1].stats.draft_tokens == 0


ENUM_SCHEMA = {"type": "object", "properties": {
    "invoice_number": {"enum": ["INV-2024-00017", "PO-55123", None]},
    "vendor_name": {"enum": ["Northwind Trading Ltd", "Bluebird Logistics GmbH", None]},
    "note": {"type": "string", "maxLength": 12}},
    "required": ["invoice_number", "vendor_name", "note"], "additionalProperties": False}


def test_forced_tokens_are_fed_in_one_step_and_give_the_same_output(gguf_path):
    """Jump-forward: the tokens a grammar forces (keys, the rest of the only matching span) go
    into the next step together, without a decode step each; the output is the same."""
    engine = _engine(gguf_path, prefix_cache_tokens=0, max_batch_size=4)
    scheduler, steps = engine.scheduler, []
    original = scheduler._step

    def counted():
        steps.append(1)
        original()

    scheduler._step = counted
    requests = [_request(q, tokens=80, json_schema=ENUM_SCHEMA) for q in QUESTIONS[:4]]
    try:
        jumped = _concurrently(engine, requests)
        jumped_steps = len(steps)
        scheduler.max_forced, steps[:] = 0, []  # as load_engine(..., jump_forward=False) sets it
        stepped = _concurrently(engine, requests)
    finally:
        engine.close()
    assert jumped == stepped
    assert all(engine.tokenizer.decode(ids).startswith('{"invoice_number": ') for ids in jumped)
    assert jumped_steps < len(steps) * 0.6, (jumped_steps, len(steps))


@pytest.mark.parametrize("backend", ["llamacpp", "torch"])
def test_reported_logprobs_are_the_teacher_forced_ones(gguf_path, eot_model_dir, backend):
    """SamplingParams.logprobs: each chosen token's log-probability under the raw scores, the
    same as scoring the answer afterwards; tokens a grammar forced (llama.cpp jump-forward) carry
    None, the chosen ones still their raw, unmasked log-probability."""
    from slmkit.engine import SamplingParams
    from slmkit.engine.torch_backend import render_prompt
    from slmkit.generate import collect

    engine = load_engine(gguf_path if backend == "llamacpp" else str(eot_model_dir), backend=backend,
                         prefix_cache_tokens=0)
    try:
        for schema in (None, ENUM_SCHEMA):
            request = _request(QUESTIONS[1], tokens=40, json_schema=schema, sampling=SamplingParams(logprobs=True))
            result = collect(engine.stream(request))
            assert result.logprobs is not None and len(result.logprobs) == len(result.token_ids)
            scored = engine.token_logprobs(render_prompt(engine.tokenizer, request) + result.token_ids)
            scored = scored[-len(result.token_ids):]
            chosen = [(got, want) for got, want in zip(result.logprobs, scored, strict=True) if got is not None]
            assert chosen and all(abs(got - want) < 1e-3 for got, want in chosen), chosen
            forced = len(result.logprobs) - len(chosen)
            assert forced == 0 if schema is None or backend == "torch" else forced > len(result.token_ids) / 3
        plain = collect(engine.stream(_request(QUESTIONS[1], tokens=8)))
        assert plain.logprobs is None, "not asked for, not reported"
    finally:
        engine.close()


LONG = "Tell me everything about the sea, the wind, the long grey waves and the boats that sail on them. " * 2


def test_long_prompts_prefilled_by_pytorch_decode_like_llama_cpp(gguf_path):
    """prefill="torch": PyTorch runs the prompt, its KV is written into llama.cpp's cache, and
    llama.cpp decodes from there. In float32 the tokens equal llama.cpp's own prefill's; the
    KV kept for the prefix cache is the transferred one."""
    plain = _engine(gguf_path, prefill="llamacpp", prefix_cache_tokens=0)
    hybrid = _engine(gguf_path, prefill="torch", prefill_dtype="float32", prefill_min_tokens=16)
    assert hybrid.prefill == "torch-float32" and plain.prefill == "llamacpp"
    calls = []
    prefill = hybrid.scheduler.torch_prefill

    def counted(ids):
        calls.append(len(ids))
        return prefill(ids)

    hybrid.scheduler.torch_prefill = counted
    try:
        for question in (LONG, LONG + " And the fish?", "hi"):
            want = _ids(list(plain.stream(_request(question, tokens=16))))
            assert _ids(list(hybrid.stream(_request(question, tokens=16)))) == want, question
        assert len(calls) == 2, "the short prompt and the cached prefix's short rest stay on llama.cpp"
        # A prompt whose uncached rest is long goes to PyTorch whole, replacing the restored prefix.
        longer = LONG + " Now the fish, the birds and the weather. " * 4
        assert _ids(list(hybrid.stream(_request(longer, tokens=16)))) == _ids(list(plain.stream(_request(longer, tokens=16))))
        assert len(calls) == 3
        assert hybrid.scheduler.sequence_tokens() == {}, "no KV left behind"
    finally:
        plain.close()
        hybrid.close()


def test_bf16_prefill_and_refusals(gguf_path, tmp_path):
    import shutil

    from slmkit.errors import InvalidRequestError

    hybrid = _engine(gguf_path, prefill="torch", prefill_dtype="bfloat16", prefill_min_tokens=16)
    try:
        # PyTorch work of a llama.cpp engine runs on its scheduler thread: where llama.cpp is
        # built with OpenMP it shares PyTorch's runtime, and an OpenMP thread pool made by
        # another thread throttles every barrier of llama.cpp's decoding (docs/llamacpp.md)
        prefill, loaded_on = hybrid.scheduler.torch_prefill, []
        load = prefill.load
        prefill.load = lambda: loaded_on.append(threading.current_thread().name) or load()
        hybrid.preload()
        assert loaded_on == ["slmkit-llamacpp-scheduler"]
        result = list(hybrid.stream(_request(LONG, tokens=8)))
        assert result[-1].finish_reason in ("stop", "length") and len(_ids(result)) >= 1
    finally:
        hybrid.close()
    lone = tmp_path / "lone.gguf"  # no card, no float weights beside it
    shutil.copy(f"{gguf_path}/model.gguf", lone)
    with pytest.raises(InvalidRequestError, match="float weights"):
        _engine(str(lone), prefill="torch")
    with pytest.raises(InvalidRequestError, match="prefill must be"):
        _engine(gguf_path, prefill="gpu")


def test_running_sequences_take_the_lowest_ids_and_are_batched_in_id_order(gguf_path):
    """Each sequence has its own KV stream; llama.cpp decodes sequences in one micro-batch only
    while their ids run consecutively in the batch, so the scheduler keeps them that way."""
    import types

    from slmkit.engine.llamacpp_batching import LlamaBatchScheduler, Slot
    from slmkit.engine.sampling import Sampler
    from slmkit.engine.sequence import SequenceState

    engine = _engine(gguf_path, prefix_cache_tokens=0, max_batch_size=4)
    scheduler = engine.scheduler
    real, batches = scheduler.ll, []

    def llama_decode(ctx, batch):
        batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return real.llama_decode(ctx, batch)

    scheduler.ll = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if name.startswith("llama_")})
    scheduler.ll.llama_decode = llama_decode
    requests = [_request(q, tokens=t) for q, t in zip(QUESTIONS, (200, 8, 200, 200, 8, 200), strict=True)]
    assert all(_concurrently(engine, requests, stagger_s=0.01))
    engine.close()
    assert any(len(set(rows)) > 1 for rows in batches), "requests should have run together"
    for rows in batches:
        assert rows == sorted(rows), f"batch rows out of id order: {rows}"
    assert {seq for rows in batches for seq in rows} <= {0, 1, 2, 3}, "the scorer's id is the highest, unused here"

    # the admission rule on its own: a request joining a batch with a gap takes the gap's id
    # and its place in id order
    bare = LlamaBatchScheduler.__new__(LlamaBatchScheduler)
    bare.free_ids, bare.active, bare.max_batch_size = [4, 3, 2, 1, 0], [], 4
    bare.prefix_cache, bare.torch_prefill = None, None

    def slot() -> Slot:
        return Slot(SequenceState(engine.tokenizer, [1, 2], set(), 4, []), Sampler(requests[0].sampling))

    bare.waiting = [slot(), slot(), slot()]
    bare._admit()
    assert [s.seq_id for s in bare.active] == [0, 1, 2]
    gone = bare.active.pop(1)  # the request at id 1 finished
    bare.free_ids.append(gone.seq_id)
    bare.waiting = [slot()]
    bare._admit()
    assert [s.seq_id for s in bare.active] == [0, 1, 2]


def test_each_request_has_kv_room_for_its_window_and_a_longer_one_is_refused_with_the_fix(gguf_path):
    from slmkit.errors import ContextLengthExceededError

    engine = _engine(gguf_path, context_length=256, max_batch_size=2)
    assert engine.context_length == 256
    assert engine.scheduler.kv_cells >= 256
    per_token = engine.kv_bytes // (3 * engine.scheduler.kv_cells)
    assert engine.kv_bytes == 3 * engine.scheduler.kv_cells * per_token and per_token > 0
    assert engine.memory_bytes > engine.kv_bytes
    # two requests that each fill most of their window run side by side
    prompt_tokens = len(engine.prepare(_request("hi", tokens=1)))
    fill = _request("hi", tokens=256 - prompt_tokens)
    results = _concurrently(engine, [fill, fill])
    assert all(len(ids) > 0 for ids in results)
    with pytest.raises(ContextLengthExceededError, match="context_length="):
        engine.prepare(_request("hi", tokens=256 - prompt_tokens + 1))
    engine.close()
