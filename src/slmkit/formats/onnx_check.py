"""ONNX export files: the decoder's file and tensor names, and a safety check run before
ONNX Runtime opens a file. Shared by the exporter (above) and the ONNX Runtime backend (below)."""

from __future__ import annotations

import os
from pathlib import Path

from slmkit.errors import CorruptModelError, UnsafeModelFileError

ONNX_FILE = "model.onnx"


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def check_onnx_file(path: Path) -> None:
    """Raise unless ``path`` parses as ONNX and every external-data reference stays inside its folder.

    A model file can name its weights in other files (``external_data.location``); a hostile
    one names ``../../etc/passwd`` or an absolute path. Those are refused before ONNX Runtime
    opens anything, as are references past the end of their file.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise CorruptModelError(f"{path} is not a valid ONNX model ({exc}). Re-export it.") from exc
    if not model.graph.node:
        raise CorruptModelError(f"{path} holds no graph (truncated?). Re-export it.")
    folder = path.parent.resolve()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {item.key: item.value for item in tensor.external_data}
        _check_external(folder, path, tensor.name, entries)


def _check_external(folder: Path, path: Path, tensor: str, entries: dict[str, str]) -> None:
    location = entries.get("location", "")
    parts = Path(location).parts
    if not location or os.path.isabs(location) or ".." in parts:
        raise UnsafeModelFileError(
            f"{path}: tensor {tensor!r} points at {location!r}, outside the model's folder. Refusing to load it."
        )
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        raise UnsafeModelFileError(
            f"{path}: tensor {tensor!r} points at {location!r}, which leads outside the model's folder. "
            "Refusing to load it."
        )
    if not target.is_file():
        raise CorruptModelError(f"{path}: tensor {tensor!r} needs {location!r}, which is missing. Re-export it.")
    end = int(entries.get("offset", 0) or 0) + int(entries.get("length", 0) or 0)
    if end > target.stat().st_size:
        raise CorruptModelError(f"{path}: tensor {tensor!r} lies past the end of {location!r} (truncated?).")


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)
