"""slmkit: take a small language model through its whole life on your own hardware.

``import slmkit`` is light; heavy libraries (torch, transformers) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "generate", "load_engine", "resolve"]


def __getattr__(name):
    if name == "generate":
        from slmkit.generate import generate

        return generate
    if name == "load_engine":
        from slmkit.engine import load_engine

        return load_engine
    if name == "resolve":
        from slmkit.references import resolve

        return resolve
    raise AttributeError(f"module 'slmkit' has no attribute {name!r}")
