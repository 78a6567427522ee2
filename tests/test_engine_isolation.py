"""Engine pieces that keep one request's failure or slowness away from the others."""

import threading

import pytest
import torch

from slmkit.engine import GenerationRequest, SamplingParams
from slmkit.engine.sampling import NonFiniteLogitsError, Sampler
from slmkit.errors import InvalidRequestError


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_logits_are_refused_before_sampling(temperature):
    sampler = Sampler(SamplingParams(temperature=temperature))
    for bad in (float("nan"), float("inf")):
        logits = torch.zeros(10)
        logits[3] = bad
        with pytest.raises(NonFiniteLogitsError):
            sampler(logits, [1, 2])
    with pytest.raises(NonFiniteLogitsError):
        sampler(torch.full((10,), float("-inf")), [1])
    masked = torch.zeros(10)
    masked[:9] = float("-inf")  # masked tokens are fine: only token 9 can be picked
    assert sampler(masked, [1]) == 9


def test_sampling_values_that_overflow_are_a_400_not_a_crash():
    # Built without validate(), as a caller that skipped it would: the sampler itself refuses.
    sampler = Sampler(SamplingParams(temperature=1e-40))
    with pytest.raises(InvalidRequestError) as refused:
        sampler(torch.randn(10) * 5, [1])
    assert refused.value.param == "temperature"
    with pytest.raises(InvalidRequestError):
        SamplingParams(temperature=1e-40).validate()
    with pytest.raises(InvalidRequestError):
        SamplingParams(repetition_penalty=1e-300).validate()


def test_a_failing_sequence_leaves_the_scheduler_serving_the_others(tiny_engine):
    from slmkit.engine.sequence import SequenceState
    from slmkit.engine.torch_batching import Slot

    request = GenerationRequest(prompt="steady", max_new_tokens=40)
    alone = "".join(c.text for c in tiny_engine.stream(request))
    steady = tiny_engine.stream(request)
    first = next(steady)
    prompt = tiny_engine.prepare(GenerationRequest(prompt="doomed"))
    doomed = Slot(SequenceState(tiny_engine.tokenizer, prompt, tiny_engine.eos_ids, 10, []),
                  Sampler(SamplingParams(temperature=1e-40, seed=0)))  # unvalidated: overflows in the scheduler
    with pytest.raises(InvalidRequestError):
        list(tiny_engine.scheduler.submit(doomed))
    assert first.text + "".join(c.text for c in steady) == alone
    assert tiny_engine.scheduler.healthy
    assert "".join(c.text for c in tiny_engine.stream(request)) == alone


def test_onnx_engine_does_not_hold_its_lock_while_a_caller_is_not_reading(tiny_model_dir, tmp_path):
    from slmkit.engine.onnx_backend import OnnxEngine
    from slmkit.export.onnx import export_onnx

    folder = export_onnx(str(tiny_model_dir), int8=False, output=tmp_path / "onnx")
    engine = OnnxEngine(getattr(folder, "path", folder))
    request = GenerationRequest(prompt="Hello", max_new_tokens=20)
    alone = "".join(c.text for c in engine.stream(request))
    stalled = engine.stream(GenerationRequest(prompt="slow reader", max_new_tokens=200))
    next(stalled)  # a caller that read one chunk and stopped reading
    result = {}
    other = threading.Thread(target=lambda: result.setdefault("text", "".join(c.text for c in engine.stream(request))))
    other.start()
    other.join(timeout=30)
    finished_while_stalled = not other.is_alive()
    stalled.close()
    other.join(timeout=30)
    assert finished_while_stalled, "a stalled reader blocked another request"
    assert result.get("text") == alone
    engine.close()
