"""The distillation objective of the spatially sparsified models (official losses.ConvNextDistillDiffPruningLoss, as
main.py builds it for convnext-* and, with swin_token=True, swin-*: clf_weight 1.0, ratio_weight 10.0, distill_weight
0.5 for both the logit KL and the feature-map MSE).

loss = 1.0 * CE(student, y)
     + 10.0 * mean over locations of mean over samples of (share of positions on the slow path - location's ratio)^2
     + 0.5 * KL(teacher || student) over class probabilities (batchmean, log targets)
     + 0.5 * MSE between the final normed feature maps, over every position (nothing is pruned while training)

Unlike token pruning, the ratio targets are the per-location ratios themselves (rho, rho - 0.2, rho - 0.4), not
cumulative ones: each location ranks the whole map afresh.
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..config import LossWeights
from ..losses import LossTerms, distill_kl_loss, keep_ratio_loss

SPATIAL_LOSS_WEIGHTS = LossWeights(ce=1.0, distill_kl=0.5, distill_token=0.5, ratio=10.0)


def spatial_distill_loss(
    logits: Tensor,
    featmap: Tensor,
    decisions: list[Tensor],
    labels: Tensor,
    teacher_logits: Tensor,
    teacher_featmap: Tensor,
    stage_ratios: list[float],
    weights: LossWeights = SPATIAL_LOSS_WEIGHTS,
    ce: Callable[[Tensor, Tensor], Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> LossTerms:
    """`decisions` are each location's hard decisions, [B, N] or [B, N, 1] (1 = slow path); `labels` class indices
    or, with `ce` (e.g. timm's SoftTargetCrossEntropy after Mixup), soft targets. distill_token is the feature-map
    MSE."""
    if len(decisions) != len(stage_ratios):
        raise ValueError(f"{len(decisions)} decisions for {len(stage_ratios)} ratios: one per pruning location")
    if featmap.shape != teacher_featmap.shape:
        raise ValueError(f"student feature map {tuple(featmap.shape)} and teacher's {tuple(teacher_featmap.shape)} "
                         "differ: distil from the dense teacher of the same architecture and input size")
    ce_term = ce(logits, labels) if ce is not None else F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    ratio = keep_ratio_loss([d.reshape(d.shape[0], -1) for d in decisions], stage_ratios)
    kl = distill_kl_loss(logits, teacher_logits)
    feat = (featmap - teacher_featmap).pow(2).mean()
    total = weights.ce * ce_term + weights.ratio * ratio + weights.distill_kl * kl + weights.distill_token * feat
    return LossTerms(total, ce_term, kl, feat, ratio)
