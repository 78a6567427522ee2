"""Per-token cost of picking the next token: slmkit's Sampler beside transformers' logits
processors (the peer: what the Sampler called before, plus the torch NaN/inf checks it ran).

One row of SmolLM2's vocabulary size (49,152 random logits), a 300-token context, one torch
thread (as in a serving process whose cores belong to llama.cpp). CPU microseconds per token,
median of 5 rounds.

    python bench/sampling.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from slmkit.engine import SamplingParams
from slmkit.engine.sampling import Sampler

VOCAB = 49_152
SETTINGS = {
    "greedy": SamplingParams(),
    "greedy, repetition_penalty 1.1": SamplingParams(repetition_penalty=1.1),
    "temperature 0.7": SamplingParams(temperature=0.7, seed=0),
    "temperature 0.7, top_p 0.9": SamplingParams(temperature=0.7, top_p=0.9, seed=0),
    "temperature 0.8, top_k 40, top_p 0.95, penalty 1.1": SamplingParams(temperature=0.8, top_k=40, top_p=0.95,
                                                                         repetition_penalty=1.1, seed=0),
}


def transformers_pick(params: SamplingParams):
    """The peer: transformers' processors and torch sampling, with the finite checks a server needs."""
    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature:
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    generator = torch.Generator().manual_seed(0)

    def finite(scores):
        return not bool(torch.isnan(scores).any() | torch.isposinf(scores).any()) and bool(torch.isfinite(scores).any())

    def pick(logits, context):
        scores = logits.unsqueeze(0)
        assert finite(scores)
        if len(processors):
            scores = processors(torch.as_tensor(context).unsqueeze(0), scores)
        assert finite(scores)
        if not params.temperature:
            return int(scores.argmax())
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))

    return pick


def cpu_us(pick, logits, context, count: int) -> float:
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(count):
            pick(logits, context)
        rounds.append((time.process_time() - started) / count * 1e6)
    return statistics.median(rounds)


def main() -> None:
    torch.set_num_threads(1)
    logits = torch.from_numpy(np.random.default_rng(0).standard_normal(VOCAB).astype(np.float32) * 3)
    context = list(range(1000, 1300))
    print(f"vocabulary {VOCAB}, context {len(context)} tokens, 1 torch thread; CPU us per token (median of 5)\n")
    print("| setting | transformers processors | slmkit Sampler | speed-up |")
    print("|---|---:|---:|---:|")
    for name, params in SETTINGS.items():
        peer = cpu_us(transformers_pick(params), logits, context, 100)
        ours = cpu_us(Sampler(params), logits.numpy(), context, 300)
        print(f"| {name} | {peer:.0f} | {ours:.0f} | {peer / ours:.1f}x |")


if __name__ == "__main__":
    main()
