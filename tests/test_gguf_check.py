"""Hostile and broken GGUF files are rejected fast, before any library trusts their header."""

import contextlib
import struct
import time

import numpy as np
import pytest

from slmkit.errors import CorruptModelError
from slmkit.formats.gguf_check import check_gguf_file
from slmkit.references import builtin_file


@pytest.fixture(scope="module")
def valid_gguf(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "ok.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_tensor("w", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def kv_string(key: str, value: str) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value.encode()


def tensor_info(name: str, dims: list[int], type_id: int = 0, offset: int = 0) -> bytes:
    return (struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", type_id, offset))


def test_valid_files_pass(valid_gguf):
    assert check_gguf_file(valid_gguf) == {"version": 3, "tensors": 1, "metadata": 3}
    started = time.perf_counter()
    info = check_gguf_file(builtin_file("smollm2-135m"))
    assert info["tensors"] == 272 and time.perf_counter() - started < 1.0


HOSTILE = {
    "only the magic": b"GGUF",
    "not gguf at all": b"PK\x03\x04" + b"\0" * 100,
    "unknown version": header(0, 0, version=99) + b"\0" * 16,
    "kv count 2^63": header(0, 1 << 63) + b"\0" * 64,
    "tensor count 2^63": header(1 << 63, 0) + b"\0" * 64,
    "string longer than the file": header(0, 1) + struct.pack("<Q", 1 << 62) + b"key",
    "array count 2^62": header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 1 << 62) + b"\0" * 64,
    "unknown value type": header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77) + b"\0" * 64,
    "alignment zero": header(0, 1) + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 0) + b"\0" * 40,
    "five dimensions": header(1, 0) + tensor_info("t", [1, 1, 1, 1, 1]) + b"\0" * 64,
    "dims overflow u64": header(1, 0) + tensor_info("t", [1 << 40, 1 << 40]) + b"\0" * 64,
    "offset past the end": header(1, 1) + kv_string("general.name", "x") + tensor_info("t", [4], 0, 1 << 20) + b"\0" * 64,
    "unknown tensor type": header(1, 0) + tensor_info("t", [4], 999) + b"\0" * 64,
    "invalid utf-8 key": header(0, 1) + struct.pack("<Q", 2) + b"\xff\xfe" + b"\0" * 64,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_are_rejected_quickly(tmp_path, name):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[name])
    started = time.perf_counter()
    with pytest.raises(CorruptModelError, match="bad.gguf"):
        check_gguf_file(path)
    assert time.perf_counter() - started < 1.0


def test_truncated_real_file_is_rejected(tmp_path, valid_gguf):
    data = valid_gguf.read_bytes()
    for cut in (30, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptModelError):
            check_gguf_file(path)


def test_random_mutations_never_crash(tmp_path, valid_gguf):
    rng = np.random.default_rng(0)
    data = bytearray(valid_gguf.read_bytes())
    path = tmp_path / "fuzz.gguf"
    for _ in range(300):
        mutated = bytearray(data)
        for position in rng.integers(0, 200, size=4):
            mutated[position] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        with contextlib.suppress(CorruptModelError):
            check_gguf_file(path)
