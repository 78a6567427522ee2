"""Models are never built by two threads at once: transformers builds under process-wide
patches (default dtype, meta device, weight tying off), so overlapping builds corrupt each other."""

import threading
import time

import transformers


def test_concurrent_loads_never_build_two_models_at_once(tiny_model_dir, monkeypatch):
    from slmkit.engine.torch_backend import load_causal_lm

    original = transformers.AutoModelForCausalLM.from_pretrained.__func__
    inside, most = [0], [0]
    guard = threading.Lock()

    def spy(cls, *args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.2)  # widen the window a second build could enter
            return original(cls, *args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    threads = [threading.Thread(target=load_causal_lm, args=(tiny_model_dir,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert most[0] == 1, f"{most[0]} models were being built at the same time"
