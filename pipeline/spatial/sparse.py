"""The pieces of dynamic spatial sparsification that do not depend on the backbone (DynamicCNN and DynamicSwin):
split the positions of a map by score, gather each part, scatter the results back, and the hard Gumbel decision
of training.

Written for a static ONNX export: TopK (when exporting) or a stable sort (eager, same order), Gather and one
ScatterElements; no in-place indexed assignment, whose export is a chain of ScatterND on a mutated tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Partition:
    """One pruning location's split of the positions: slow [B, k] (highest score first), fast [B, N - k]."""

    slow: Tensor
    fast: Tensor

    @property
    def order(self) -> Tensor:
        """[B, N]: slow then fast positions, a permutation (the scatter-back index)."""
        return torch.cat([self.slow, self.fast], dim=1)


def rank_positions(scores: Tensor, k: int) -> Partition:
    """Top-k of scores [B, N] on the slow path, the rest on the fast path, both in descending score order.

    Ties go to the lower index, as ONNX TopK specifies: the eager path is a stable descending sort (torch.topk
    leaves tie order undefined); the export is one TopK over all N positions, sliced."""
    N = scores.shape[1]
    if not 0 < k <= N:
        raise ValueError(f"slow-path count {k} is outside 1..{N}")
    if torch.onnx.is_in_onnx_export():
        order = torch.topk(scores, N, dim=1, largest=True, sorted=True).indices
    else:
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return Partition(order[:, :k], order[:, k:])


def gather_positions(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, C], idx [B, k] -> [B, k, C]: out[b, j] = x[b, idx[b, j]] (ONNX GatherElements)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_positions(parts: Tensor, order: Tensor) -> Tensor:
    """Undo a gather by the permutation `order` [B, N]: out[b, order[b, j]] = parts[b, j] (ONNX ScatterElements
    onto zeros; every position is written exactly once, so the result does not depend on write order)."""
    index = order.unsqueeze(-1).expand(-1, -1, parts.shape[-1])
    return torch.zeros_like(parts).scatter(1, index, parts)


def gumbel_noise_like(log_probs: Tensor) -> Tensor:
    """Gumbel samples drawn as F.gumbel_softmax draws them, so a seeded run consumes the generator alike."""
    return -torch.empty_like(log_probs, memory_format=torch.legacy_contiguous_format).exponential_().log()


def gumbel_decision(log_probs: Tensor, dim: int, noise: Tensor | None = None) -> Tensor:
    """Hard keep decision (1 = slow path) with the straight-through gradient, from [keep, drop] log-probabilities
    along `dim`; the result keeps that dimension with size 1. `noise` (shaped like log_probs) lets distributed
    ranks reproduce a single-process run's draws."""
    if noise is None:
        noise = gumbel_noise_like(log_probs)
    if noise.shape != log_probs.shape:
        raise ValueError(f"Gumbel noise {tuple(noise.shape)} must have the predictor's shape {tuple(log_probs.shape)}")
    soft = (log_probs + noise).softmax(dim=dim)
    hard = torch.zeros_like(soft).scatter(dim, soft.argmax(dim=dim, keepdim=True), 1.0)
    return (hard - soft.detach() + soft).narrow(dim, 0, 1)
