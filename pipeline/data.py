"""Datasets: Fashion-MNIST (the embedded default), ImageFolder trees and ImageNet-style train/val folders.

Here everything is decoded once into uint8 tensors held in memory and batched by index: on a 2-core machine
a DataLoader's worker processes cost more than they save for 28x28 images. Data too large for memory is
streamed by `pipeline.train.stream`, from the same file index (pipeline.image_index).
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .image_index import (
    IMAGE_SUFFIXES,
    ImageIndex,
    folder_split,
    holdout_split,
    is_imagenet_style,
    scan_image_folder,
)

FMNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass
class ImageSet:
    """Images as uint8 [N, C, H, W] with int64 labels, plus the normalisation the model expects."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def img_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """A deterministic sample of n items (all when n is None or too large)."""
        idx = subset_indices(len(self), n, seed)
        if idx is None:
            return self
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.source)

    def normalize(self, images_u8: Tensor) -> Tensor:
        x = images_u8.float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised, un-augmented batches in order: evaluation, calibration, validation."""
        n = len(self) if limit is None else min(limit, len(self))
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            yield self.normalize(self.images[s:e]), self.labels[s:e]


def subset_indices(total: int, n: int | None, seed: int) -> Tensor | None:
    """Sorted indices of a deterministic sample of n of `total` items; None when n is None or not smaller."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _read_idx(path: Path, expect_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}): reinstall dataset-fashion-mnist") from e
    if len(raw) < 4 + 4 * expect_dims or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != expect_dims:
        raise DataError(f"{path} is not an idx file of {expect_dims} dimensions: reinstall dataset-fashion-mnist")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expect_dims)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * expect_dims)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes): reinstall the dataset")
    return body.reshape(dims)


def find_fashion_mnist(data_dir: str | os.PathLike[str] | None) -> Path:
    root = Path(data_dir) if data_dir else Path(os.environ.get("DVIT_FMNIST_DIR", FMNIST_DEFAULT_DIR))
    needed = [n for pair in FMNIST_FILES.values() for n in pair]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}): run 'make data' "
            "(installs the Debian package dataset-fashion-mnist) or pass --data DIR holding the four idx.gz files"
        )
    return root


# Mean and standard deviation of the Fashion-MNIST training images (computed by fashion_mnist_stats()).
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)


def load_fashion_mnist(split: str, data_dir: str | os.PathLike[str] | None = None) -> ImageSet:
    if split not in FMNIST_FILES:
        raise DataError(f"unknown split '{split}': use 'train' or 'test'")
    root = find_fashion_mnist(data_dir)
    img_name, lbl_name = FMNIST_FILES[split]
    images = _read_idx(root / img_name, 3)
    labels = _read_idx(root / lbl_name, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels in the {split} split")
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        FMNIST_CLASSES,
        FMNIST_MEAN,
        FMNIST_STD,
        f"fashion-mnist:{root}:{split}",
    )


def fashion_mnist_stats(data_dir: str | None = None) -> tuple[float, float]:
    x = load_fashion_mnist("train", data_dir).images.float() / 255.0
    return float(x.mean()), float(x.std())


UNREADABLE = (OSError, ValueError, SyntaxError)  # PIL's UnidentifiedImageError is an OSError; SyntaxError: bad PNG chunks


def open_image(path: str | os.PathLike[str], in_chans: int) -> Any:
    """A PIL image in the model's colour mode, fully decoded (so that a truncated file fails here)."""
    from PIL import Image

    with Image.open(path) as src:
        im = src.convert("L" if in_chans == 1 else "RGB")
        im.load()
    return im


def fit_square(im: Any, img_size: int) -> Any:
    """Resize the short side to img_size, then centre-crop: the in-memory path's one transform."""
    from PIL import Image

    if im.size == (img_size, img_size):
        return im
    w, h = im.size
    s = img_size / min(w, h)
    im = im.resize((max(img_size, round(w * s)), max(img_size, round(h * s))), Image.Resampling.BILINEAR)
    w, h = im.size
    left, top = (w - img_size) // 2, (h - img_size) // 2
    return im.crop((left, top, left + img_size, top + img_size))


def as_chw(im: Any) -> np.ndarray:
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _load_image(path: Path, in_chans: int, img_size: int) -> np.ndarray:
    try:
        return as_chw(fit_square(open_image(path, in_chans), img_size))
    except UNREADABLE as e:
        raise DataError(f"cannot read image {path} ({e}): remove or replace the file") from e


def decode_index(index: ImageIndex, in_chans: int, img_size: int, name: str) -> ImageSet:
    """Every image of `index` decoded into memory, normalised with its own mean and standard deviation."""
    if not len(index):
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {index.root}")
    images = torch.empty(len(index), in_chans, img_size, img_size, dtype=torch.uint8)
    for i in range(len(index)):
        images[i].numpy()[...] = _load_image(index.path(i), in_chans, img_size)
    mean, std = channel_stats(images)
    return ImageSet(images, torch.from_numpy(index.labels), index.classes, mean, std, name)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images in [0, 1], 32 MiB of float64 at a time (a float
    copy of the whole set would take several times its memory)."""
    chunk = max(1, (4 << 20) // max(1, images[0].numel()))
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    var = (squares - n * mean * mean) / max(1, n - 1)
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in var.clamp_min(0).sqrt())


def load_image_folder(
    root: str | os.PathLike[str],
    in_chans: int,
    img_size: int,
    classes: tuple[str, ...] | None = None,
) -> ImageSet:
    """A class-per-sub-folder tree. `classes` fixes the label order (a val split must use train's)."""
    return decode_index(scan_image_folder(root, classes), in_chans, img_size, f"folder:{root}")


def is_fashion_mnist(spec: str | None) -> bool:
    return spec in (None, "", "fashion-mnist", "fmnist") or (Path(str(spec)) / FMNIST_FILES["train"][0]).exists()


def load_dataset(
    spec: str | None, split: str, in_chans: int = 1, img_size: int = 28, holdout: float = 0.1
) -> ImageSet:
    """Resolve a dataset argument.

    None or 'fashion-mnist': the embedded default; a directory holding the four idx.gz files: Fashion-MNIST
    from there; a directory with train/ and val/ sub-folders: ImageNet-style; any other directory: an
    ImageFolder, split deterministically into train and a `holdout` fraction for test.
    """
    if spec in (None, "", "fashion-mnist", "fmnist"):
        return load_fashion_mnist(split)
    root = Path(spec)
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist: pass 'fashion-mnist' or an image directory")
    if (root / FMNIST_FILES["train"][0]).exists():
        return load_fashion_mnist(split, root)
    if is_imagenet_style(root):
        sub = "train" if split == "train" else "val"
        ds = decode_index(folder_split(root, split), in_chans, img_size, f"folder:{root / sub}")
        if sub == "val":  # normalise with the training statistics
            tr = load_image_folder(root / "train", in_chans, img_size)
            ds.mean, ds.std = tr.mean, tr.std
        return ds
    full = load_image_folder(root, in_chans, img_size)
    idx = torch.from_numpy(holdout_split(len(full), holdout)[0 if split == "train" else 1])
    return ImageSet(full.images[idx], full.labels[idx], full.classes, full.mean, full.std, f"{full.source}:{split}")


def verification_images(cfg: Any, count: int, data: str | None = None) -> tuple[Tensor, str]:
    """`count` normalised test images a model of config `cfg` can take: Fashion-MNIST (or --data), else seeded
    noise. The export and the plugin pass check their graphs on these."""

    fits_fmnist = cfg.in_chans == 1 and cfg.img_size == 28
    if data is not None or fits_fmnist:
        try:
            ds = load_dataset(data, "test", cfg.in_chans, cfg.img_size)
        except DataError:
            if data is not None:
                raise
        else:
            if ds.in_chans != cfg.in_chans or ds.img_size != cfg.img_size:
                raise DataError(
                    f"{ds.source} has {ds.in_chans}x{ds.img_size}x{ds.img_size} images, the model takes "
                    f"{cfg.in_chans}x{cfg.img_size}x{cfg.img_size}: pass matching --data"
                )
            idx = torch.arange(count) % len(ds)
            return ds.normalize(ds.images[idx]), f"{ds.source} (first {count} images)"
    g = torch.Generator().manual_seed(0)
    return torch.randn(count, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g), "seeded random normal images"
