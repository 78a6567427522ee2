"""Training data: load and validate, render through the chat template, mask, split, batch.

Accepted inputs (one or more files or directories):

- ``.jsonl`` with one object per line in one of three shapes:
  chat ``{"messages": [{"role", "content"}, ...]}``,
  prompt/completion ``{"prompt": str, "completion": str}``,
  plain text ``{"text": str}``;
- ``.txt`` / ``.md`` files, each one plain-text document.

Everything is validated before any training starts; errors name the file, line and field.
Chat examples are rendered with the model's own chat template and only assistant tokens are
trained on. Prompt/completion examples become a user turn and an assistant turn when the
tokenizer has a chat template (plain concatenation otherwise); the loss covers the
completion. Plain text is trained on every token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from slmkit.errors import InvalidRequestError

IGNORE_INDEX = -100  # label of a token the loss skips (the value torch's cross_entropy ignores)
TEXT_SUFFIXES = (".txt", ".md")
ROLES = ("system", "user", "assistant")


class DataError(InvalidRequestError):
    """Training or evaluation data that cannot be used as it is."""

    code = "invalid_data"


@dataclasses.dataclass
class Example:
    """One validated training example; ``source`` is ``file:line`` for error messages."""

    source: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None

    @property
    def kind(self) -> str:
        return "chat" if self.messages is not None else "prompt" if self.prompt is not None else "text"


@dataclasses.dataclass
class TokenizedExample:
    """Token ids and labels of one example (labels are unshifted; IGNORE_INDEX = not trained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def target_count(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files behind ``paths``: a directory stands for its .jsonl/.txt/.md files, in name order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".jsonl", *TEXT_SUFFIXES))
            if not found:
                raise DataError(f"{path} holds no .jsonl, .txt or .md files.")
            files.extend(found)
        elif path.is_file():
            if path.suffix not in (".jsonl", *TEXT_SUFFIXES):
                raise DataError(f"{path}: unsupported data file; use .jsonl, .txt or .md.")
            files.append(path)
        else:
            raise DataError(f"No such data file or directory: {path}")
    return files


def data_sha256(files: Sequence[Path]) -> str:
    """One hash over the data files' names and bytes (recorded in the artifact's card)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_examples(paths: Iterable[str | Path]) -> list[Example]:
    """Read and validate every example in ``paths``; raises DataError naming file:line:field."""
    examples: list[Example] = []
    for path in expand_paths(paths):
        if path.suffix in TEXT_SUFFIXES:
            text = read_utf8(path)
            if text.strip():
                examples.append(Example(source=f"{path}", text=text))
            continue
        for number, line in enumerate(read_utf8(path).splitlines(), start=1):
            if line.strip():
                examples.append(parse_record(line, f"{path}:{number}"))
    if not examples:
        raise DataError("The data holds no examples (all files are empty).")
    return examples


def read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}). Convert it to UTF-8.") from exc


def parse_json_object(line: str, where: str) -> dict:
    """One JSONL line that must hold a JSON object; errors name ``where`` (``file:line``)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}).") from exc
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    return record


def parse_record(line: str, where: str) -> Example:
    """One JSONL line as an Example; ``where`` (``file:line``) prefixes every error."""
    record = parse_json_object(line, where)
    if "messages" in record:
        return Example(source=where, messages=check_messages(record["messages"], where))
    if "prompt" in record or "completion" in record:
        for field in ("prompt", "completion"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise DataError(f"{where}: field '{field}' must be a non-empty string.")
        return Example(source=where, prompt=record["prompt"], completion=record["completion"])
    if "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DataError(f"{where}: field 'text' must be a non-empty string.")
        return Example(source=where, text=record["text"])
    raise DataError(
        f"{where}: unknown record shape with fields {sorted(record)}. "
        "Use {\"messages\": [...]}, {\"prompt\": ..., \"completion\": ...} or {\"text\": ...}."
    )


def check_messages(messages, where: str, need_assistant: bool = True) -> list[dict[str, str]]:
    """Validate a chat message list; errors name the exact field (``messages[2].role``)."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list.")
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise DataError(f"{where}: field '{field}' must be an object with 'role' and 'content'.")
        if message.get("role") not in ROLES:
            raise DataError(f"{where}: field '{field}.role' must be one of {', '.join(ROLES)}, "
                            f"got {message.get('role')!r}.")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{field}.content' must be a string.")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where}: field 'messages[0].role' is 'assistant'; a conversation starts with system or user.")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn, so there is nothing to train on.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- tokenizing ---------------------------------------------------------------------------------


def tokenize_example(tokenizer, example: Example) -> TokenizedExample:
    """Token ids of ``example`` with labels: only assistant/completion tokens for chat and
    prompt/completion examples, every token for plain text."""
    if example.kind == "text":
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return TokenizedExample(ids, list(ids))
    if example.kind == "prompt" and not tokenizer.chat_template:
        full = example.prompt + example.completion
        return _masked(tokenizer, full + tokenizer.eos_token, [(len(example.prompt), len(full) + len(tokenizer.eos_token))])
    messages = example.messages or [{"role": "user", "content": example.prompt},
                                    {"role": "assistant", "content": example.completion}]
    return render_chat(tokenizer, messages, example.source)


def render_chat(tokenizer, messages: list[dict[str, str]], where: str = "messages") -> TokenizedExample:
    """Render ``messages`` with the chat template; label the characters each assistant turn
    adds (its content and end-of-turn marker), found by rendering the conversation up to it."""
    if not tokenizer.chat_template:
        raise DataError(f"{where}: chat data needs a chat template, and this model's tokenizer has none. "
                        "Use {\"text\": ...} records or a model with a chat template.")

    def render(part, prompt=False) -> str:
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt)

    full = render(messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:index], prompt=True), render(messages[: index + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise DataError(f"{where}: this model's chat template does not render a conversation as the "
                            "extension of its beginning, so assistant turns cannot be located for masking.")
        spans.append((len(before), len(through)))
    return _masked(tokenizer, full, spans)


def _masked(tokenizer, text: str, spans: list[tuple[int, int]]) -> TokenizedExample:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    labels = [token if any(start <= offset[0] < end for start, end in spans) else IGNORE_INDEX
              for token, offset in zip(ids, encoded["offset_mapping"], strict=True)]
    return TokenizedExample(ids, labels)


@dataclasses.dataclass
class PreparedData:
    """Tokenized, split data ready for the training loop."""

    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    truncated: int  # examples cut to the sequence length
    dropped: int  # examples left with no trained token after cutting


def prepare(tokenizer, examples: Sequence[Example], seq_len: int, validation_fraction: float = 0.0,
            seed: int = 0, packing: bool = False) -> PreparedData:
    """Tokenize, split (seeded shuffle) into train/validation, then cut or pack to ``seq_len``.

    Long plain-text examples are cut into consecutive ``seq_len`` pieces; long chat and
    prompt examples are truncated (counted in ``truncated``). With ``packing``, examples are
    concatenated and cut into full blocks, so no compute goes to padding.
    """
    if seq_len < 8:
        raise DataError(f"seq_len must be at least 8, got {seq_len}.")
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_validation = round(len(order) * validation_fraction)
    if validation_fraction and n_validation == 0 and len(order) > 1:
        n_validation = 1
    parts = (order[n_validation:], order[:n_validation])
    truncated = dropped = 0
    splits: list[list[TokenizedExample]] = []
    for indices in parts:
        tokenized = [tokenize_example(tokenizer, examples[i]) for i in indices]
        if packing:
            splits.append(pack(tokenized, seq_len))
            continue
        kept = []
        for example, index in zip(tokenized, indices, strict=True):
            pieces = _cut(example, seq_len, examples[index].kind == "text")
            truncated += len(example.input_ids) > seq_len
            usable = [p for p in pieces if p.target_count > 0]
            dropped += not usable
            kept.extend(usable)
        splits.append(kept)
    return PreparedData(splits[0], splits[1], truncated, dropped)


def _cut(example: TokenizedExample, seq_len: int, split_long: bool) -> list[TokenizedExample]:
    if len(example.input_ids) <= seq_len:
        return [example]
    if not split_long:
        return [TokenizedExample(example.input_ids[:seq_len], example.labels[:seq_len])]
    return [TokenizedExample(example.input_ids[i : i + seq_len], example.labels[i : i + seq_len])
            for i in range(0, len(example.input_ids) - 1, seq_len)]


def pack(examples: Sequence[TokenizedExample], seq_len: int) -> list[TokenizedExample]:
    """Concatenate ``examples`` and cut the stream into full blocks of ``seq_len`` tokens
    (the incomplete tail is dropped). Blocks keep each token's own label."""
    ids = [token for example in examples for token in example.input_ids]
    labels = [label for example in examples for label in example.labels]
    blocks = [TokenizedExample(ids[i : i + seq_len], labels[i : i + seq_len])
              for i in range(0, len(ids) - seq_len + 1, seq_len)]
    return [block for block in blocks if block.target_count > 0]


def collate(examples: Sequence[TokenizedExample], pad_id: int):
    """Right-padded tensors: ``input_ids``, ``attention_mask`` and ``targets`` (labels shifted
    left by one, so ``targets[:, t]`` is what position ``t`` should predict)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        attention_mask[row, :length] = 1
        targets[row, : length - 1] = torch.tensor(example.labels[1:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets}
