"""LoRA adapters stacked layer by layer, so that a batch mixing adapters costs what a batch of
one adapter costs.

peft's mixed-adapter batches (``adapter_names``) run each LoRA layer once per adapter present
in the batch, on that adapter's rows. Here every adapter's ``A`` and ``B`` (scaling folded into
``B``) of a layer sit in one tensor, ``(adapters, in, rank)`` and ``(adapters, rank, out)``, and
a forward pass picks each row's pair by index and takes two batched products (``torch.bmm``)
whatever the mix. Rows of the plain base model are masked out. Ranks may differ between
adapters (smaller ones are zero-padded to the largest). Adapters are used as loaded: no
dropout, plain LoRA only (DoRA and other variants are refused).

The stacks are held in 16-bit (``STACK_DTYPE``), half of float32: 4 adapters of rank 16 on
every linear layer of SmolLM2-135M are 39 MB instead of 78 MB (docs/router.md). The rows a
forward pass picks are cast back to the activations' dtype, so the products run in float32;
only the adapter weights are rounded.
"""

from __future__ import annotations

import functools

import torch

from slmkit.errors import CorruptModelError

# float16 keeps 11 significant bits against bfloat16's 8, and LoRA weights (|w| well under 1,
# scaling folded in) sit far inside float16's range: with float16 a mixed batch gives the
# merged adapters' greedy tokens exactly (tests/router/test_multi_lora.py), with bfloat16 it
# does not. Speed of the two: docs/router.md.
STACK_DTYPE = torch.float16


class AdapterStack:
    """The stacked adapters of a peft model; :meth:`select` sets the adapter of each batch row
    for the next forward passes (call it under the model's lock)."""

    def __init__(self, peft_model, names: list[str], dtype: torch.dtype | None = None):
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

        self.names, self.dtype = list(names), dtype or STACK_DTYPE
        self.index = {name: number for number, name in enumerate(self.names)}
        self.rows: torch.Tensor | None = None  # (batch,) adapter numbers; None = every row is the base
        self.keep: torch.Tensor | None = None  # (batch, 1, 1) 1.0 for adapter rows, 0.0 for base rows
        for module in peft_model.modules():
            if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear):
                raise CorruptModelError(f"LoRA on {type(module).__name__} layers is not supported for serving several "
                                        "adapters on one base; train adapters on linear layers only.")
            if isinstance(module, LoraLinear):
                self._stack(module)

    def _stack(self, layer) -> None:
        if layer.lora_variant or any(layer.use_dora.get(name) for name in self.names):
            raise CorruptModelError("DoRA and other LoRA variants cannot be served on a shared base; use plain LoRA.")
        present = [name for name in self.names if name in layer.lora_A]
        rank = max(layer.lora_A[name].weight.shape[0] for name in present)
        a_stack = torch.zeros(len(self.names), layer.in_features, rank, dtype=self.dtype)
        b_stack = torch.zeros(len(self.names), rank, layer.out_features, dtype=self.dtype)
        with torch.no_grad():
            for name in present:
                a, b = layer.lora_A[name].weight, layer.lora_B[name].weight * layer.scaling[name]  # (r, in), (out, r)
                a_stack[self.index[name], :, : a.shape[0]] = a.T
                b_stack[self.index[name], : a.shape[0], :] = b.T
                del layer.lora_A[name], layer.lora_B[name]  # held once, in the stacks
        layer.register_buffer("slm_lora_a", a_stack)
        layer.register_buffer("slm_lora_b", b_stack)
        layer.forward = functools.partial(self._forward, layer)

    def select(self, adapters: list[str | None]) -> None:
        """Row ``i`` of the next forward passes uses ``adapters[i]`` (None: the base model)."""
        if all(name is None for name in adapters):
            self.rows = self.keep = None
            return
        self.rows = torch.tensor([self.index.get(name, 0) if name else 0 for name in adapters], dtype=torch.long)
        mask = torch.tensor([name is not None for name in adapters], dtype=torch.float32)
        self.keep = None if bool(mask.all()) else mask.view(-1, 1, 1)

    def _forward(self, layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = layer.base_layer(x, *args, **kwargs)
        if self.rows is None:
            return result
        # x: (batch, tokens, in) -> (batch, tokens, rank) -> (batch, tokens, out)
        a, b = layer.slm_lora_a[self.rows].to(x.dtype), layer.slm_lora_b[self.rows].to(x.dtype)  # 16-bit -> x's
        delta = torch.bmm(torch.bmm(x, a), b)
        return result + (delta if self.keep is None else delta * self.keep)
