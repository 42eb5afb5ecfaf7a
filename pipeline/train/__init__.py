"""`dvit train`: a dense teacher, or a DynamicViT student distilled from it, on data of any size; token pruning
(DeiT, LV-ViT) or spatial sparsification (DynamicCNN on ConvNeXt, DynamicSwin on Swin).

loop: the training loop; recipe: named defaults (small, deit); sources: in memory or streamed; memory and
stream: the two batch sources; augment: timm's transforms and Mixup; distributed, optim, rng, progress: the
loop's parts; spatial: what the ConvNeXt and Swin models train with (teacher, initialisation, optimiser groups,
loss); cli: the flags.
"""
from __future__ import annotations

from .cli import configure, main
from .loop import train
from .optim import lr_factor

__all__ = ["configure", "lr_factor", "main", "train"]
