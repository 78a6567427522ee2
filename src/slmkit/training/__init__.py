"""Building blocks for training: the one loop (:func:`train`), its config and checkpoints.

Every training verb (pretrain, finetune with full weights or LoRA, distill) calls
:func:`train` with its model, its tokenized data and a ``loss_fn(model, batch) -> loss``.
"""

from slmkit.training.loop import (
    LossFn,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    causal_lm_loss,
    train,
)

__all__ = ["LossFn", "NonFiniteLossError", "TrainConfig", "TrainResult", "causal_lm_loss", "train"]
