"""Streamed training data: images decoded on the fly by worker processes, so memory stays flat in dataset size.

What a step draws is fixed by (seed, epoch) alone, exactly as on the in-memory path: one permutation of the
whole dataset and one seed per position, for the global batch. Rank r takes its contiguous slice of every
global batch (what DistributedSampler does, but by step, so that accumulation and ranks cut the same global
batch), and each sample's transform runs under its own seed. A sample therefore comes out the same whichever
rank, worker or process count decodes it.

An unreadable image is skipped: the next image of the index takes its place (the step keeps its size and
its seeds), the file is named in a warning, and the skips are counted in the epoch's metrics. More than 1%
of an epoch unreadable stops the run: that is a damaged dataset, not a stray file.
"""
from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import UNREADABLE, as_chw, channel_stats, fit_square, open_image
from ..errors import DataError
from ..image_index import ImageIndex
from .rng import seeded

MAX_CONSECUTIVE_BAD = 16
Skip = tuple[str, str]  # (file, reason)


class FolderSource:
    """Images from files, decoded in the model's colour mode."""

    def __init__(self, index: ImageIndex, in_chans: int):
        self.index, self.in_chans = index, in_chans

    def __len__(self) -> int:
        return len(self.index)

    def label(self, i: int) -> int:
        return int(self.index.labels[i])

    def name(self, i: int) -> str:
        return str(self.index.path(i))

    def load(self, i: int) -> Any:
        return open_image(self.index.path(i), self.in_chans)


class ArraySource:
    """Images already in memory as uint8 [N, C, H, W] (Fashion-MNIST's idx arrays), served as PIL images so
    that the same per-sample transforms apply; in the model's colour mode when `in_chans` is given (as
    FolderSource's open_image converts files)."""

    def __init__(self, images: Tensor, labels: Tensor, name: str, in_chans: int | None = None):
        self.images, self.labels, self._name, self.in_chans = images, labels, name, in_chans

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def name(self, i: int) -> str:
        return f"{self._name}[{i}]"

    def load(self, i: int) -> Any:
        from PIL import Image

        a = self.images[i].numpy()
        im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        if self.in_chans is not None and self.in_chans != a.shape[0]:
            im = im.convert("L" if self.in_chans == 1 else "RGB")
        return im


class SampleSet(Dataset):  # type: ignore[type-arg]
    """Indexed by (image index, sample seed); returns (image, label, skipped files)."""

    def __init__(self, source: Any, transform: Callable[[Any], Tensor]):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int, list[Skip]]:
        i, seed = item
        n = len(self.source)
        skipped: list[Skip] = []
        for attempt in range(min(MAX_CONSECUTIVE_BAD, n)):
            j = (i + attempt) % n
            try:
                im = self.source.load(j)
            except UNREADABLE as e:
                skipped.append((self.source.name(j), f"{type(e).__name__}: {e}"))
                continue
            with seeded(seed):
                x = self.transform(im)
            return x, self.source.label(j), skipped
        raise DataError(
            f"{len(skipped)} images in a row from {self.source.name(i)} on are unreadable: the dataset looks damaged; "
            "check the files (e.g. with PIL's Image.verify)"
        )


def start_workers(loader: DataLoader) -> Iterator[Any]:  # type: ignore[type-arg]
    """iter(loader), which forks its workers, with the training process's objects frozen for the fork.

    A forked worker's garbage collector would otherwise walk, and so write to, every object it inherited,
    copying the pages they sit on; frozen, they stay shared (what Python's gc.freeze documentation recommends
    before fork). The parent unfreezes at once: its own collection is unchanged.
    """
    gc.collect()
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


def collate(samples: list[tuple[Tensor, int, list[Skip]]]) -> tuple[Tensor, Tensor, list[Skip]]:
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return x, y, [k for s in samples for k in s[2]]


class StepSampler(Sampler):  # type: ignore[type-arg]
    """This rank's (index, seed) list for every step of the current epoch; set_epoch picks the epoch."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, steps: int):
        self.n, self.global_batch, self.seed, self.steps = n, global_batch, seed, steps
        self.local = global_batch // world
        self.first = rank * self.local
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=g).tolist()
        for step in range(self.steps):
            lo = step * self.global_batch + self.first
            yield [(perm[k], seeds[k]) for k in range(lo, lo + self.local)]


def default_workers(local_world: int) -> int:
    """Decoding processes per training process: the cores left after one per training process, at most 8."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, local_world) - 1))


class StreamBatches:
    """Training batches decoded by `workers` processes; same interface as memory.MemoryBatches."""

    kind = "stream"

    def __init__(self, source: Any, transform: Callable[[Any], Tensor], global_batch: int, seed: int,
                 rank: int = 0, world: int = 1, workers: int = 1, pin_memory: bool = False,
                 max_steps: int | None = None):
        if global_batch % world:
            raise DataError(f"global batch {global_batch} is not divisible by {world} processes: change --batch-size")
        self.source, self.global_batch, self.rank, self.world = source, global_batch, rank, world
        self.local_batch = global_batch // world
        self.workers = workers
        steps = len(source) // global_batch
        self._steps = min(steps, max_steps) if max_steps else steps
        self.sampler = StepSampler(len(source), global_batch, rank, world, seed, self._steps)
        self.loader = DataLoader(
            SampleSet(source, transform), batch_sampler=self.sampler, num_workers=workers, collate_fn=collate,
            pin_memory=pin_memory,
        )
        self.skipped: list[Skip] = []

    def __len__(self) -> int:
        return len(self.source)

    def steps_per_epoch(self) -> int:
        return self._steps

    def epoch(self, epoch: int) -> Generator[tuple[Tensor, Tensor, int], None, None]:
        self.sampler.set_epoch(epoch)
        for step, (x, y, skipped) in enumerate(start_workers(self.loader)):
            for path, why in skipped:
                self.skipped.append((path, why))
                print(f"warning: skipped unreadable image {path} ({why}); the next image takes its place "
                      f"[{len(self.skipped)} skipped so far on rank {self.rank}]", file=sys.stderr, flush=True)
            yield x, y, step * self.global_batch + self.rank * self.local_batch

    def close(self) -> None:
        """Nothing to release: each epoch's workers exit when its generator is closed or exhausted."""


class StreamEval:
    """Evaluation images decoded by workers, in order; quacks like ImageSet for measure.accuracy."""

    def __init__(self, source: Any, transform: Callable[[Any], Tensor], workers: int):
        self.source, self.transform, self.workers = source, transform, workers

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self) if limit is None else min(limit, len(self))
        order = [[(i, 0) for i in range(s, min(s + batch_size, n))] for s in range(0, n, batch_size)]
        loader = DataLoader(SampleSet(self.source, self.transform), batch_sampler=order, num_workers=self.workers,
                            collate_fn=collate)
        for x, y, skipped in start_workers(loader):
            for path, why in skipped:
                print(f"warning: skipped unreadable evaluation image {path} ({why})", file=sys.stderr, flush=True)
            yield x, y


def sample_stats(source: Any, img_size: int, count: int = 512) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of up to `count` evenly spaced images (the in-memory path
    computes them over every image; a sample is what streaming can afford)."""
    n = len(source)
    picks = np.unique(np.linspace(0, n - 1, num=min(count, n)).astype(np.int64))
    arrays = []
    for i in picks:
        try:
            arrays.append(as_chw(fit_square(source.load(int(i)), img_size)))
        except UNREADABLE:
            continue
    if not arrays:
        raise DataError(f"none of {len(picks)} sampled images could be read (first: {source.name(0)}): check the files")
    return channel_stats(torch.from_numpy(np.stack(arrays)))
