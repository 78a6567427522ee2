"""`slm export docker`: the generated build context (no Docker engine runs here)."""

import re

import pytest


@pytest.fixture(scope="module")
def context(exports, tmp_path_factory):
    from slmkit.export.docker import export_docker

    return export_docker(str(exports["gguf-q4_k_m"].path), tmp_path_factory.mktemp("docker") / "ctx", port=8080)


def test_context_holds_model_requirements_source_and_dockerfile(context, exports):
    root = context.path
    assert {"Dockerfile", "requirements.txt", "model", "slmkit-src", ".dockerignore"} <= set(context.files)
    assert (root / "model" / "model.gguf").read_bytes() == (exports["gguf-q4_k_m"].path / "model.gguf").read_bytes()
    assert (root / "model" / "slm.json").exists() and (root / "model" / "tokenizer.json").exists()
    assert (root / "slmkit-src" / "pyproject.toml").exists()
    assert (root / "slmkit-src" / "src" / "slmkit" / "engine" / "llamacpp_backend.py").exists()


def test_requirements_are_pinned_to_the_installed_versions(context):
    from importlib import metadata

    lines = (context.path / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if not line.startswith("--"))
    assert pins["torch"] == metadata.version("torch") and pins["llama-cpp-python"] == metadata.version(
        "llama-cpp-python")
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line) for line in lines[1:])
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"  # never a CUDA torch


def test_dockerfile_serves_the_model_as_non_root_with_a_health_check(context):
    text = (context.path / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line[0].isspace()
                    and not line.startswith("#")]
    user_at = instructions.index("USER")
    assert instructions.index("CMD") > user_at and instructions.index("HEALTHCHECK") > user_at
    assert re.search(r"^USER slm$", text, re.M) and "useradd" in text
    assert "http://127.0.0.1:8080/health" in text and "EXPOSE 8080" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    import json

    assert json.loads(cmd) == ["slm", "serve", "--model", f"/models/{context.model_name}", "--backend", "auto",
                               "--host", "0.0.0.0", "--port", "8080"]
    assert "COPY model/ /models/" in text.replace("--chown=root:root ", "")


def test_served_model_path_resolves_to_the_gguf_inside(context):
    from slmkit.references import resolve

    resolved = resolve(str(context.path / "model"))
    assert resolved.format == "gguf" and resolved.path.name == "model.gguf"


def test_existing_outdir_is_refused(context, exports):
    from slmkit.errors import ArtifactExistsError
    from slmkit.export.docker import export_docker

    with pytest.raises(ArtifactExistsError):
        export_docker(str(exports["gguf-q4_k_m"].path), context.path)
