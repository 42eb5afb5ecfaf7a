"""A slice of a dataset split as plain numpy: what validation runs on and what a recorded reference stores.

uint8 images and labels plus the normalisation the model expects. Normalising here (numpy, float32) gives the
same bits as data.ImageSet.normalize (torch), so a Jetson without torch feeds its engines exactly what PyTorch
saw on the workstation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageSlice:
    images: np.ndarray  # uint8 [n, C, H, W]
    labels: np.ndarray  # int64 [n]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    split: str
    start: int = 0  # the slice is images start .. start+n-1 of the split, in the split's order
    spec: str = "fashion-mnist"  # the --data argument that names the dataset (see data_spec)
    classes: tuple[str, ...] = ()  # class names, by label

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalized(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [m, C, H, W] of images start..stop-1 of the slice."""
        x = self.images[start:stop].astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def head(self, n: int) -> ImageSlice:
        return ImageSlice(self.images[:n], self.labels[:n], self.mean, self.std, self.source, self.split, self.start,
                          self.spec, self.classes)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "spec": self.spec, "split": self.split, "first": self.start, "samples": len(self)}


def data_spec(data: str | None) -> str:
    """A --data argument in one canonical form: 'fashion-mnist' for the embedded default, else an absolute path."""
    if data in (None, "", "fashion-mnist", "fmnist"):
        return "fashion-mnist"
    return str(Path(str(data)).resolve())


def from_image_set(ds: Any, split: str, limit: int | None = None, data: str | None = None) -> ImageSlice:
    """The first `limit` images (all when None) of a data.ImageSet loaded from --data `data`."""
    n = len(ds) if limit is None else min(limit, len(ds))
    return ImageSlice(ds.images[:n].numpy(), ds.labels[:n].numpy().astype(np.int64), tuple(ds.mean), tuple(ds.std),
                      ds.source, split, 0, data_spec(data), tuple(ds.classes))
