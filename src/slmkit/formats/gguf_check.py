"""Validate a GGUF file's header before any library trusts it.

The ``gguf`` reader believes the counts and offsets a file claims, so a hostile or
truncated file can make it allocate huge arrays or loop for a long time. This walks the
header with every length capped by the bytes actually left in the file, in well under a
second and without reading tensor data.
"""

from __future__ import annotations

import struct
from pathlib import Path

from slmkit.errors import CorruptModelError

MAGIC = b"GGUF"
MAX_DIMS = 4
# Value types of GGUF metadata: size in bytes of the fixed-size ones.
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> CorruptModelError:
        return CorruptModelError(f"{self.path} is not a valid GGUF file: {what}. Re-download or re-export it.")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"a field at byte {self.pos} claims {n} bytes, past the end of the file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        raw = self.take(self.u64())
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"a string at byte {self.pos} is not UTF-8") from exc

    def left(self) -> int:
        return len(self.data) - self.pos

    def skip_value(self, value_type: int, depth: int = 0) -> None:
        if value_type in _FIXED_SIZES:
            self.take(_FIXED_SIZES[value_type])
        elif value_type == _STRING:
            self.take(self.u64())
        elif value_type == _ARRAY:
            if depth > 2:
                raise self.fail("arrays nested too deeply")
            item_type, count = self.u32(), self.u64()
            if item_type in _FIXED_SIZES:
                self.take(count * _FIXED_SIZES[item_type])
                return
            if count * 8 > self.left():  # every non-fixed item needs at least 8 bytes
                raise self.fail(f"an array claims {count} items, more than the file holds")
            for _ in range(count):
                self.skip_value(item_type, depth + 1)
        else:
            raise self.fail(f"unknown metadata value type {value_type}")


def check_gguf_file(path: Path) -> dict[str, int]:
    """Raise CorruptModelError unless ``path`` has a well-formed GGUF header.

    Returns the version, tensor count and metadata count.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    data = path.read_bytes() if path.stat().st_size < (1 << 16) else None
    with path.open("rb") as handle:
        import mmap

        if data is None:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mapped)
        else:
            view = memoryview(data)
        reader = _Reader(view, path)
        if len(view) < 24 or bytes(view[:4]) != MAGIC:
            raise reader.fail("it does not start with the GGUF magic bytes and a header")
        reader.take(4)
        version = reader.u32()
        if version not in (2, 3):
            raise reader.fail(f"unsupported version {version} (expected 2 or 3)")
        n_tensors, n_kv = reader.u64(), reader.u64()
        # Each metadata entry needs >= 13 bytes and each tensor entry >= 28: counts beyond
        # what the file could hold are lies.
        if n_kv * 13 > reader.left() or n_tensors * 28 > reader.left():
            raise reader.fail(f"it claims {n_kv} metadata entries and {n_tensors} tensors, more than its size allows")
        alignment = 32
        for _ in range(n_kv):
            key = reader.string()
            value_type = reader.u32()
            if key == "general.alignment" and value_type == 4:
                alignment = struct.unpack("<I", reader.take(4))[0]
                if alignment == 0 or alignment & (alignment - 1):
                    raise reader.fail(f"general.alignment is {alignment}, not a power of two")
            else:
                reader.skip_value(value_type)
        tensors = []
        for _ in range(n_tensors):
            name = reader.string()
            n_dims = reader.u32()
            if n_dims == 0 or n_dims > MAX_DIMS:
                raise reader.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
            dims = [reader.u64() for _ in range(n_dims)]
            type_id, offset = reader.u32(), reader.u64()
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
            except (ValueError, KeyError) as exc:
                raise reader.fail(f"tensor {name!r} has unknown type {type_id}") from exc
            elements = 1
            for dim in dims:
                elements *= dim
                if elements > len(view) * 8:
                    raise reader.fail(f"tensor {name!r} claims shape {dims}, larger than the file")
            tensors.append((name, offset, elements * type_size // block))
        data_start = -(-reader.pos // alignment) * alignment
        for name, offset, nbytes in tensors:
            if data_start + offset + nbytes > len(view):
                raise reader.fail(f"tensor {name!r} lies past the end of the file (truncated?)")
        del view, reader
    return {"version": version, "tensors": n_tensors, "metadata": n_kv}
