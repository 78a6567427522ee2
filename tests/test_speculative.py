"""Prompt-lookup speculative decoding: same tokens as plain greedy decoding, fewer steps."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from slmkit.engine.drafting import PromptLookupDrafter
from slmkit.generate import build_request, collect

PROMPTS = ["Hello Hello Hello Hello", "def main(): return main() def main(): return", "abc abc abc abc abc",
           "The for statement", "東京 東京 東京 😀 😀"]


def run(engine, prompt, lookup=0, **options):
    request = build_request(prompt, **{"max_new_tokens": 40, **options})
    request.prompt_lookup_tokens = lookup
    return collect(engine.stream(request))


def test_drafter_proposes_what_followed_the_latest_match():
    drafter = PromptLookupDrafter(max_ngram=2)
    assert drafter.propose([1, 2, 3, 4, 9, 1, 2], 3) == [3, 4, 9]
    assert drafter.propose([5, 6, 7, 8, 5, 6, 1, 5, 6], 2) == [1, 5], "the latest occurrence wins"
    assert drafter.propose([1, 2, 3], 4) == []
    assert drafter.propose([1, 2, 1], 0) == []
    assert drafter.propose([7, 1, 8, 1], 2) == [], "a lone one-token match drafts nothing"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_output_is_identical_to_plain_greedy(tiny_engine, prompt):
    plain = run(tiny_engine, prompt)
    fast = run(tiny_engine, prompt, lookup=5)
    assert fast.token_ids == plain.token_ids and fast.text == plain.text
    assert fast.finish_reason == plain.finish_reason


def test_drafts_are_counted_and_some_are_accepted(tiny_engine):
    results = [run(tiny_engine, p, lookup=5) for p in PROMPTS]
    assert sum(r.stats.draft_tokens for r in results) > 0
    assert sum(r.stats.accepted_draft_tokens for r in results) > 0
    assert all(r.stats.accepted_draft_tokens <= r.stats.draft_tokens for r in results)


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_token_limit_is_exact(tiny_engine, limit):
    fast = run(tiny_engine, "abc abc abc abc abc", lookup=8, max_new_tokens=limit)
    assert fast.stats.completion_tokens == limit or fast.finish_reason == "stop"
    assert fast.token_ids == run(tiny_engine, "abc abc abc abc abc", max_new_tokens=limit).token_ids


def test_stop_strings_still_apply(tiny_engine):
    plain = run(tiny_engine, "abc abc abc abc abc", max_new_tokens=40)
    stop = plain.text[6:9]
    assert stop
    fast = run(tiny_engine, "abc abc abc abc abc", lookup=5, stop=[stop])
    assert fast.text == plain.text[: plain.text.index(stop)] and fast.finish_reason == "stop"


def test_sampling_ignores_lookup_and_batches_stay_exact(tiny_engine):
    sampled = [run(tiny_engine, "Hello", lookup=5, temperature=1.0, seed=3) for _ in range(2)]
    assert sampled[0].token_ids == sampled[1].token_ids and sampled[0].stats.draft_tokens == 0
    alone = [run(tiny_engine, p, lookup=4).token_ids for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: run(tiny_engine, p, lookup=4).token_ids, PROMPTS))
    assert together == alone


@pytest.fixture(scope="module")
def other_draft_dir(tmp_path_factory):
    from tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("draft") / "draft", seed=1)


def test_draft_model_gives_identical_greedy_output(tiny_model_dir, tiny_engine, other_draft_dir):
    from slmkit.engine.torch_backend import TorchEngine

    self_drafted = TorchEngine(tiny_model_dir, draft=str(tiny_model_dir))
    other_drafted = TorchEngine(tiny_model_dir, draft=str(other_draft_dir))
    try:
        for prompt in PROMPTS[:3]:
            plain = run(tiny_engine, prompt)
            same, other = run(self_drafted, prompt), run(other_drafted, prompt)
            assert same.token_ids == plain.token_ids == other.token_ids
            # A draft identical to the target is always right; an unrelated one rarely is.
            assert same.stats.accepted_draft_tokens == same.stats.draft_tokens > 0
            assert other.stats.accepted_draft_tokens < other.stats.draft_tokens
    finally:
        self_drafted.close()
        other_drafted.close()


def test_draft_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    import shutil

    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.errors import InvalidRequestError
    from tiny import build_tokenizer

    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_model_dir, foreign)
    build_tokenizer(foreign, vocab_size=500)
    with pytest.raises(InvalidRequestError, match="different tokenizer"):
        TorchEngine(tiny_model_dir, draft=str(foreign))
