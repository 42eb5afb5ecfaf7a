"""Measurements of a model in PyTorch: top-1/top-5 accuracy, FLOPs of the real inference pass, CPU throughput.

Shared by training (per-epoch accuracy) and `dvit evaluate`; FLOPs are counted by torch.utils.flop_counter on
the hard-pruning inference pass, so a pruned model's figure reflects the tokens it actually processes.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from .model import DynamicViT


class LabelledBatches(Protocol):
    """Normalised images with labels, in order: an in-memory ImageSet or streamed evaluation data."""

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]: ...


@torch.no_grad()
def accuracy(
    model: DynamicViT, ds: LabelledBatches, batch_size: int = 256, device: torch.device | str = "cpu", limit: int | None = None
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent, with the inference (hard-pruning) pass."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    k5 = min(5, model.cfg.num_classes)
    for x, y in ds.batches(batch_size, limit):
        logits = model.forward_inference(x.to(device)).logits.float().cpu()
        top = logits.topk(k5, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += int(y.numel())
    model.train(was_training)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


@torch.no_grad()
def count_flops(model: DynamicViT) -> int:
    """FLOPs of one image's inference pass (a multiply-add counts 2)."""
    model.eval()
    c = model.cfg
    x = torch.zeros(1, c.in_chans, c.img_size, c.img_size)
    with FlopCounterMode(display=False) as counter:
        model.forward_inference(x)
    return int(counter.get_total_flops())


@torch.no_grad()
def throughput(model: DynamicViT, batch_size: int = 64, iters: int = 10, warmup: int = 3) -> float:
    """Images per second of the inference pass on CPU, median over `iters` timed batches."""
    model.eval()
    c = model.cfg
    x = torch.randn(batch_size, c.in_chans, c.img_size, c.img_size)
    for _ in range(warmup):
        model.forward_inference(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.forward_inference(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return batch_size / times[len(times) // 2]
