"""The shared text side of generation: incremental detokenizing, stop strings, finish reasons."""

import random

import pytest

from slmkit.engine.sequence import IncrementalDetokenizer, SequenceState, StopMatcher


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_stream_of_random_ids_joins_to_the_full_decode(tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(1, 40))]
        detok = IncrementalDetokenizer(tokenizer)
        deltas = [detok.push(i) for i in ids] + [detok.flush()]
        # A character cut in half at the very end is dropped, not shown as U+FFFD.
        assert "".join(deltas) == decode(tokenizer, ids).rstrip("\ufffd")


def test_multibyte_text_streams_without_replacement_characters(tokenizer):
    text = "北京大学 😂🚀 ñandú e\u0301 Ωμέγα 東京"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    partial = [i for i in ids if "\ufffd" in decode(tokenizer, [i])]
    assert partial, "the tiny vocabulary should split some characters into byte pieces"
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + detok.flush() == text


def test_character_cut_by_the_token_limit_is_dropped_not_garbled(tokenizer):
    ids = tokenizer("ab 😂", add_special_tokens=False)["input_ids"]
    pieces = [decode(tokenizer, [i]) for i in ids]
    assert "\ufffd" in pieces[-1], "the emoji must span several tokens for this test"
    state = SequenceState(tokenizer, [1], set(), max_new_tokens=len(ids) - 1, stop=[])
    chunks = [state.append(i) for i in ids[:-1]]
    assert chunks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == "ab "


@pytest.mark.parametrize("pieces", [["Hel", "lo ST", "OP there"], ["ST", "O", "P"], ["xS", "TOPy"]])
def test_stop_string_split_across_pieces_never_leaks(pieces):
    matcher = StopMatcher(["STOP"])
    emitted, stopped = "", False
    for piece in pieces:
        text, stopped = matcher.push(piece)
        emitted += text
        assert "S" not in emitted.replace("Hel", ""), "a possible stop prefix was emitted early"
        if stopped:
            break
    assert stopped
    assert emitted == "".join(pieces).split("STOP")[0]


def test_partial_stop_prefix_is_released_when_it_turns_out_harmless():
    matcher = StopMatcher(["</end>"])
    assert matcher.push("a </e") == ("a ", False)
    assert matcher.push("xtra") == ("</extra", False)


def test_sequence_finishes_on_eos_length_and_stop(tokenizer):
    ids = tokenizer("alpha beta gamma delta", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    state = SequenceState(tokenizer, [1, 2], {eos}, max_new_tokens=100, stop=[])
    chunks = [state.append(i) for i in [*ids, eos]]
    assert chunks[-1].finish_reason == "stop" and all(c.finish_reason is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == "alpha beta gamma delta"
    assert chunks[-1].stats.completion_tokens == len(ids) + 1

    state = SequenceState(tokenizer, [1], {eos}, max_new_tokens=2, stop=[])
    assert state.append(ids[0]).finish_reason is None
    assert state.append(ids[1]).finish_reason == "length"

    state = SequenceState(tokenizer, [1], {eos}, max_new_tokens=100, stop=["gamma"])
    texts = []
    for i in ids:
        chunk = state.append(i)
        texts.append(chunk.text)
        if chunk.finish_reason:
            break
    assert chunk.finish_reason == "stop"
    assert "".join(texts) == "alpha beta "
