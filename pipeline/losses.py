"""The DynamicViT objective (paper Eq. 11-14; official losses.DistillDiffPruningLoss_dynamic with dynamic=False).

loss = ce * CE(student, y)
     + distill_kl * KL(teacher || student) over class probabilities (batchmean, as F.kl_div computes it)
     + distill_token * token distillation over the tokens the student keeps: MSE of the final tokens (DeiT), or
       KL(teacher || student) of the auxiliary head's per-token class probabilities (LV-ViT, batchmean over the
       kept tokens: the official mse_token=False branch)
     + ratio * mean over stages of mean over samples of (mean keep decision - target ratio)^2
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossWeights
from .model import TrainOutput


@dataclass
class LossTerms:
    total: Tensor
    ce: Tensor
    distill_kl: Tensor
    distill_token: Tensor
    ratio: Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "ce", "distill_kl", "distill_token", "ratio")}


def keep_ratio_loss(decisions: list[Tensor], targets: list[float]) -> Tensor:
    """Per-sample kept fraction against each stage's target, averaged over stages."""
    if not decisions:
        raise ValueError("keep_ratio_loss needs at least one pruning stage")
    per_stage = [((d.mean(dim=1) - t) ** 2).mean() for d, t in zip(decisions, targets)]
    return torch.stack(per_stage).mean()


def distill_kl_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    return F.kl_div(
        F.log_softmax(student_logits, dim=-1),
        F.log_softmax(teacher_logits, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def token_distill_loss(student_tokens: Tensor, teacher_tokens: Tensor, keep_mask: Tensor, kind: str = "mse") -> Tensor:
    """MSE (kind 'mse') or KL over class logits (kind 'kl') on the tokens still kept at the end; zero when nothing
    is kept."""
    B, N, C = student_tokens.shape
    keep = keep_mask.reshape(B * N) > 0.5
    if not bool(keep.any()):
        return student_tokens.new_zeros(())
    s = student_tokens.reshape(B * N, C)[keep]
    t = teacher_tokens.reshape(B * N, C)[keep]
    if kind == "kl":
        return distill_kl_loss(s, t)
    if kind != "mse":
        raise ValueError(f"token distillation is 'mse' or 'kl', not {kind!r}")
    return ((s - t) ** 2).mean()


def dynamicvit_loss(
    out: TrainOutput,
    labels: Tensor,
    teacher_logits: Tensor,
    teacher_tokens: Tensor,
    stage_ratios: list[float],
    weights: LossWeights,
    label_smoothing: float = 0.0,
    ce: Callable[[Tensor, Tensor], Tensor] | None = None,
    token_kind: str = "mse",
) -> LossTerms:
    """`labels` are class indices, or soft targets [B, K] after Mixup/CutMix; `ce` is the classification loss
    to use for them (the official code wraps timm's SoftTargetCrossEntropy the same way), else cross-entropy
    with `label_smoothing`. `token_kind` is the model family's token distillation (ModelConfig.token_distillation)."""
    ce_term = ce(out.logits, labels) if ce is not None else F.cross_entropy(out.logits, labels, label_smoothing=label_smoothing)
    kl = distill_kl_loss(out.logits, teacher_logits)
    tok = token_distill_loss(out.tokens, teacher_tokens, out.keep_mask, token_kind)
    ratio = keep_ratio_loss(out.decisions, stage_ratios)
    total = weights.ce * ce_term + weights.distill_kl * kl + weights.distill_token * tok + weights.ratio * ratio
    return LossTerms(total, ce_term, kl, tok, ratio)
