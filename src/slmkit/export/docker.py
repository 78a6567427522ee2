"""``slm export docker MODEL OUTDIR``: a Docker build context whose image serves one model.

The context holds the model artifact (``model/``), ``requirements.txt`` pinned to the exact
versions installed here (CPU-only torch from PyTorch's CPU index), slmkit's own source, and a
Dockerfile that installs them, runs ``slm serve`` as an unprivileged user and declares a
HEALTHCHECK on the server's ``/health``. Nothing is built here: the context is plain files.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from importlib import metadata
from pathlib import Path

from slmkit.errors import InvalidRequestError

BASE_IMAGE = "python:3.11-slim"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MODEL_DIR = "/models"
USER_ID = 10001


@dataclasses.dataclass
class DockerContext:
    path: Path
    model_name: str
    files: list[str]


def pinned_requirements() -> list[str]:
    """slmkit's runtime dependencies, each pinned to the version installed in this environment."""
    lines = [f"--extra-index-url {TORCH_CPU_INDEX}"]
    for requirement in metadata.requires("slmkit") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        lines.append(f"{name}=={metadata.version(name)}")
    return lines


def slmkit_source() -> Path | None:
    """The project root (pyproject.toml + src/slmkit) when slmkit runs from a source checkout."""
    import slmkit

    root = Path(slmkit.__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "slmkit").is_dir() else None


def dockerfile(model_name: str, model_path: str, port: int, backend: str, from_source: bool) -> str:
    install_slmkit = (
        "COPY slmkit-src/ /app/slmkit-src/\nRUN pip install --no-deps /app/slmkit-src\n" if from_source
        else f"RUN pip install --no-deps slmkit=={metadata.version('slmkit')}\n"
    )
    health = (f"python -c \"import sys, urllib.request; "
              f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4).status != 200)\"")
    return f"""# Built by `slm export docker`: serves {model_name} with `slm serve` (OpenAI-compatible API).
FROM {BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \\
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false SLM_HOME=/home/slm/.slm
RUN useradd --create-home --uid {USER_ID} --shell /usr/sbin/nologin slm
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt
{install_slmkit}COPY --chown=root:root model/ {MODEL_DIR}/{model_name}/
USER slm
EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \\
    CMD {health}
# WARNING: the API listens on every interface; run with -e SLM_API_KEY=... or anyone who reaches the port can use it.
CMD ["slm", "serve", "--model", "{model_path}", "--backend", "{backend}", "--host", "0.0.0.0", "--port", "{port}"]
"""


def export_docker(reference: str, outdir: str | Path, port: int = 8000, backend: str = "auto") -> DockerContext:
    """Write the build context for ``reference`` into the new directory ``outdir``."""
    from slmkit.artifact import staged_directory, write_text_atomic
    from slmkit.engine import BACKENDS
    from slmkit.references import resolve

    if backend not in ("auto", *BACKENDS):
        raise InvalidRequestError(f"Unknown backend {backend!r}. Available: auto, {', '.join(BACKENDS)}.")
    if not 0 < port < 65536:
        raise InvalidRequestError(f"port must be between 1 and 65535, got {port}.")
    resolved = resolve(reference)
    artifact = resolved.path.parent if resolved.format == "gguf" and (resolved.path.parent / "slm.json").exists() \
        else resolved.path
    source = slmkit_source()
    with staged_directory(Path(outdir)) as staging:
        if artifact.is_file():  # a bare .gguf: the image gets that file alone
            (staging / "model").mkdir()
            shutil.copy2(artifact, staging / "model" / artifact.name)
        else:
            shutil.copytree(artifact, staging / "model", ignore=shutil.ignore_patterns(".*"))
        write_text_atomic(staging / "requirements.txt", "\n".join(pinned_requirements()) + "\n")
        if source is not None:
            (staging / "slmkit-src").mkdir()
            shutil.copy2(source / "pyproject.toml", staging / "slmkit-src" / "pyproject.toml")
            shutil.copytree(source / "src" / "slmkit", staging / "slmkit-src" / "src" / "slmkit",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        model_path = f"{MODEL_DIR}/{resolved.name}" + (f"/{artifact.name}" if artifact.is_file() else "")
        write_text_atomic(staging / "Dockerfile",
                          dockerfile(resolved.name, model_path, port, backend, source is not None))
        write_text_atomic(staging / ".dockerignore", "**/__pycache__\n**/*.pyc\n")
        files = sorted(p.name for p in staging.iterdir())
    return DockerContext(Path(outdir), resolved.name, files)
