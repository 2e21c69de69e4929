"""The training knobs every model has, declared once: `TrainConfig`, which each model's Config extends.

`trainables.loop.fit` reads `epochs` and `seed`, `Recipe.optimize` reads `grad_clip`, and every
recipe builds its optimiser from `lr` (and `weight_decay`) and its batches from `batch_size`.
A model whose best default differs overrides the field in its own Config with a comment saying
why; the defaults below are the ones most models share. Dataclass inheritance puts these fields
first in a model's field order (so `tuner show` and "valid keys" messages list them first); all
have defaults, so a subclass may add fields with defaults after them.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.config import bounded


@dataclass(frozen=True)
class TrainConfig:
    lr: float = bounded(1.0e-3, low=0.0, doc="learning rate (Adam)")
    weight_decay: float = bounded(0.0, low=0.0, doc="L2 penalty on the weights (Adam's, unless the model says otherwise)")
    batch_size: int = bounded(256, low=1, doc="training examples per optimiser step")
    epochs: int = bounded(20, low=1, doc="passes over the training data")
    seed: int = 0  # torch.manual_seed and the epoch generator's seed (trainables.loop.fit)
    grad_clip: float = bounded(0.0, low=0.0, doc="max gradient norm (L2, over all parameters); 0 = no clipping")
