"""Fixtures for the training tests: a writable copy of the tiny model and a small chat file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from training_helpers import chat_records, write_jsonl


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model (training must never touch the shared one)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy"))


@pytest.fixture()
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", chat_records())
