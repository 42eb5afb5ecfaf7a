"""Training batches from images decoded into memory: the embedded default's path.

For 28x28 Fashion-MNIST this is the faster path on a 2-core machine: indexing a uint8 tensor and a vectorised
pad-and-shift crop cost less than worker processes would. The permutation and augmentation parameters come
from (seed, epoch) alone, for the global batch; rank r takes its contiguous slice of every global batch.
"""
from __future__ import annotations

from collections.abc import Generator

import torch
from torch import Tensor

from ..data import ImageSet
from ..errors import DataError


class MemoryBatches:
    """Shuffled, augmented training batches from an ImageSet, sharded over distributed ranks."""

    kind = "memory"

    def __init__(self, ds: ImageSet, global_batch: int, seed: int, augment: bool, rank: int = 0, world: int = 1,
                 max_steps: int | None = None):
        if global_batch % world:
            raise DataError(f"global batch {global_batch} is not divisible by {world} processes: change --batch-size")
        self.ds, self.global_batch, self.seed, self.augment = ds, global_batch, seed, augment
        self.rank, self.world = rank, world
        self.local_batch = global_batch // world
        steps = len(ds) // global_batch  # drop the last partial batch: every step has the same size
        self._steps = min(steps, max_steps) if max_steps else steps
        self.skipped: list[tuple[str, str]] = []  # decoded up front: nothing is skipped mid-epoch

    def __len__(self) -> int:
        return len(self.ds)

    def steps_per_epoch(self) -> int:
        return self._steps

    def epoch(self, epoch: int) -> Generator[tuple[Tensor, Tensor, int], None, None]:
        """Yields (images, labels, global_offset) where global_offset is this rank's first sample in the step."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = len(self.ds)
        perm = torch.randperm(n, generator=g)
        pad = 2
        shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        for step in range(self.steps_per_epoch()):
            lo = step * self.global_batch + self.rank * self.local_batch
            sel = perm[lo : lo + self.local_batch]
            x = self.ds.images[sel]
            if self.augment:
                x = shift_flip(x, shifts[lo : lo + self.local_batch], flips[lo : lo + self.local_batch], pad)
            yield self.ds.normalize(x), self.ds.labels[sel], lo

    def close(self) -> None:
        pass


def shift_flip(x: Tensor, shifts: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Random crop with zero padding and horizontal flip, vectorised over the batch ([B, C, H, W])."""
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = shifts[:, 0].view(B, 1, 1, 1) + torch.arange(H).view(1, 1, H, 1)
    out = torch.gather(padded, 2, rows.expand(B, C, H, W + 2 * pad))
    cols = shifts[:, 1].view(B, 1, 1, 1) + torch.arange(W).view(1, 1, 1, W)
    out = torch.gather(out, 3, cols.expand(B, C, H, W))
    return torch.where(flips.view(B, 1, 1, 1), out.flip(-1), out)
