"""Data loading, validation errors, chat-template masking, split and packing."""

from __future__ import annotations

import pytest
from training_helpers import write_jsonl

from slmkit.data import IGNORE_INDEX, DataError, Example, collate, load_examples, pack, prepare, tokenize_example
from slmkit.engine.torch_backend import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([label for label in example.labels if label != IGNORE_INDEX])


def test_chat_labels_cover_only_assistant_turns(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Japan?"},
                {"role": "assistant", "content": "Tokyo."}]
    tokenized = tokenize_example(tokenizer, Example("x", messages=messages))
    assert len(tokenized.labels) == len(tokenized.input_ids)
    assert trained_text(tokenizer, tokenized) == "Paris.<|im_end|>\nTokyo.<|im_end|>\n"
    # Every labeled position carries its own token; every other position is ignored.
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        assert label in (token, IGNORE_INDEX)
    untrained = tokenizer.decode([t for t, lab in zip(tokenized.input_ids, tokenized.labels, strict=True)
                                  if lab == IGNORE_INDEX])
    assert "Be brief." in untrained and "Capital of France?" in untrained and "Paris" not in untrained


def test_prompt_completion_trains_on_completion_and_text_on_everything(tokenizer):
    tokenized = tokenize_example(tokenizer, Example("x", prompt="Say hi.", completion="Hi there."))
    assert trained_text(tokenizer, tokenized) == "Hi there.<|im_end|>\n"
    text = tokenize_example(tokenizer, Example("x", text="plain words"))
    assert text.labels == text.input_ids and text.input_ids[-1] == tokenizer.eos_token_id


def test_collate_shifts_labels_into_targets(tokenizer):
    example = tokenize_example(tokenizer, Example("x", prompt="Say hi.", completion="Hi."))
    short = tokenize_example(tokenizer, Example("y", text="a"))
    batch = collate([example, short], pad_id=0)
    assert batch["targets"][0, :-1].tolist() == example.labels[1:]
    assert batch["targets"][0, -1] == IGNORE_INDEX
    assert batch["attention_mask"][1].sum() == len(short.input_ids)
    assert (batch["targets"][1, len(short.input_ids) - 1:] == IGNORE_INDEX).all()


@pytest.mark.parametrize(("line", "message"), [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}', "messages[1].role"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}', "messages[0].content"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"prompt": "hi", "completion": 3}', "field 'completion'"),
    ('{"text": ""}', "field 'text'"),
    ('{"question": "hi"}', "unknown record shape"),
    ('{"text": "a",', "invalid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n\n' + line + "\n")
    with pytest.raises(DataError) as caught:
        load_examples([path])
    assert f"{path}:3:" in caught.value.message
    assert message in caught.value.message


def test_bad_files_are_named(tmp_path):
    binary = tmp_path / "notes.txt"
    binary.write_bytes(b"ok \xff\xfe")
    with pytest.raises(DataError, match="notes.txt: not UTF-8"):
        load_examples([binary])
    with pytest.raises(DataError, match="unsupported data file"):
        load_examples([write_jsonl(tmp_path / "data.csv", [])])
    with pytest.raises(DataError, match="No such data file"):
        load_examples([tmp_path / "missing.jsonl"])


def test_split_is_seeded_disjoint_and_complete(tokenizer):
    examples = [Example(f"x:{i}", text=f"document number {i}") for i in range(20)]
    first = prepare(tokenizer, examples, 64, validation_fraction=0.25, seed=3)
    again = prepare(tokenizer, examples, 64, validation_fraction=0.25, seed=3)
    other = prepare(tokenizer, examples, 64, validation_fraction=0.25, seed=4)
    key = lambda part: sorted(tuple(e.input_ids) for e in part)  # noqa: E731
    assert len(first.train) == 15 and len(first.validation) == 5
    assert key(first.validation) == key(again.validation) != key(other.validation)
    assert not set(key(first.train)) & set(key(first.validation))


def test_packing_makes_full_blocks_and_cutting_keeps_text(tokenizer):
    examples = [Example(f"x:{i}", text="word " * (10 + i)) for i in range(10)]
    tokenized = [tokenize_example(tokenizer, e) for e in examples]
    blocks = pack(tokenized, 16)
    assert all(len(b.input_ids) == 16 for b in blocks)
    assert len(blocks) == sum(len(t.input_ids) for t in tokenized) // 16
    long = prepare(tokenizer, [Example("x", text="word " * 100)], 16)
    assert sum(len(e.input_ids) for e in long.train) == len(tokenize_example(tokenizer, Example("x", text="word " * 100)).input_ids)  # noqa: E501
    chat = [Example("c", prompt="p " * 40, completion="answer")]
    cut = prepare(tokenizer, chat, 16)
    assert cut.truncated == 1 and cut.dropped == 1 and cut.train == []
