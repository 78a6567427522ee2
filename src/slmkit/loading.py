"""One lock for building models in this process.

transformers builds a model under process-wide patches — the default dtype, a meta-device
context, and weight tying switched off until the weights are in — so two models built at the
same time in two threads can corrupt each other: seen here as a GGUF import whose tied
``lm_head`` stayed on the meta device while a server thread loaded another model. Every
``from_pretrained``/``from_config`` in slmkit runs under :data:`MODEL_BUILD_LOCK`.
"""

from __future__ import annotations

import threading

MODEL_BUILD_LOCK = threading.RLock()
