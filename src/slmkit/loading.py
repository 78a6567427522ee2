"""One lock for building models in this process.

transformers builds a model under process-wide patches — the default dtype, a meta-device
context, and weight tying switched off until the weights are in — so two models built at the
same time in two threads can corrupt each other: seen here as a GGUF import whose tied
``lm_head`` stayed on the meta device while a server thread loaded another model. Every build
a server or a library caller can run beside another — engines, LoRA adapters, the GGUF
import, recommenders, embedding models — runs under :data:`MODEL_BUILD_LOCK`. (The one-shot
CLI stages — prune, export, bench — build alone in their process and do not take it.)
"""

from __future__ import annotations

import threading

MODEL_BUILD_LOCK = threading.RLock()
