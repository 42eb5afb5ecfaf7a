"""Optimiser parameter groups, the learning-rate schedule and the Gumbel noise of a step."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..model import DynamicViT


def param_groups(model: DynamicViT, cfg: TrainConfig, student: bool) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings; a student's backbone learns at backbone_lr_scale."""
    skip = model.no_weight_decay()
    predictor_ids = {id(p) for p in model.predictor_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name in skip
        is_backbone = id(p) not in predictor_ids
        groups.setdefault((no_decay, is_backbone), []).append(p)
    out = []
    for (no_decay, is_backbone), params in groups.items():
        scale = cfg.backbone_lr_scale if (student and is_backbone) else 1.0
        out.append(
            {"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr_scale": scale,
             "lr": cfg.lr * scale}
        )
    return out


def lr_factor(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up, then cosine from base down to floor; returned relative to base."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    lr = floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr / base


def gumbel_noise_for(step_seed: int, global_batch: int, num_patches: int, stages: int, offset: int, local: int) -> list[Tensor]:
    """This rank's slice of the global batch's Gumbel noise for every pruning stage."""
    g = torch.Generator().manual_seed(step_seed)
    out = []
    for _ in range(stages):
        u = torch.rand(global_batch, num_patches, 2, generator=g).clamp_(1e-10, 1.0)
        out.append(-torch.log(-torch.log(u))[offset : offset + local])
    return out
