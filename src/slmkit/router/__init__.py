"""Routing requests to specialists: a small classifier over sentence embeddings decides which
specialist (a chat model, a LoRA adapter, a knowledge base, the document extractor or a
recommender) answers a prompt, and falls back to the general model when it is unsure.

- :mod:`slmkit.router.routes` reads routes files (JSONL ``{"prompt", "route"}``) and names
  what a route label means.
- :mod:`slmkit.router.train` trains a router and writes its artifact (``slm router train``).
- :mod:`slmkit.router.model` loads a router and decides (``Router.decide``).
- :mod:`slmkit.router.evaluate` scores a router on a routes file (``slm router eval``).
"""
