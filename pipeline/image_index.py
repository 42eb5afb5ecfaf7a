"""The files of a class-per-folder image tree, found once and held compactly.

Both data paths start here: the in-memory loader decodes every file of the index up front, the streamed loader
decodes them one at a time in worker processes. Paths live in one byte buffer with offsets, not a list of
Python strings, so an ImageNet-sized index (1.28 M files) costs about 100 MB and forked workers share it
instead of copying it page by page as reference counts change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
HOLDOUT_SEED = 1234  # the split of a plain ImageFolder into train and test: fixed, so every stage sees the same one


@dataclass
class ImageIndex:
    """Image files with integer labels; `classes[label]` names each label's folder."""

    root: Path
    classes: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    blob: np.ndarray  # uint8: every path relative to root, UTF-8, concatenated
    offsets: np.ndarray  # int64 [N + 1]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def path(self, i: int) -> Path:
        rel = bytes(self.blob[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8", "surrogateescape")
        return self.root / rel

    def take(self, idx: np.ndarray) -> ImageIndex:
        """The entries at `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        parts = [self.blob[self.offsets[i] : self.offsets[i + 1]] for i in idx]
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        blob = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        return ImageIndex(self.root, self.classes, self.labels[idx].copy(), blob, offsets)

    def counts(self) -> dict[str, int]:
        per = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, per)}


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def scan_image_folder(root: str | os.PathLike[str], classes: tuple[str, ...] | None = None) -> ImageIndex:
    """Index a class-per-sub-folder tree. `classes` fixes the label order (a val split must use train's).

    Files are listed, not opened: opening 1.28 M files up front would take longer than an epoch's first
    minutes, so an unreadable file is met (and handled) when it is decoded.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: pass a directory with one sub-folder per class")
    found = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not found:
        raise DataError(f"{root} has no class sub-folders: put each class's images in a folder named after it")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"{root} has class folders {unknown} that the training split lacks: add them to train/ or remove them"
        )
    rels: list[bytes] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a class of train's that this split lacks: allowed, evaluation simply has none of it
        before = len(rels)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            rels.extend(os.fsencode(os.path.join(rel_dir, f)) for f in sorted(filenames) if _is_image(f))
        if len(rels) == before:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): add images or remove the folder"
            )
        labels.extend([label] * (len(rels) - before))
    lengths = np.fromiter((len(r) for r in rels), dtype=np.int64, count=len(rels))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    blob = np.frombuffer(b"".join(rels), dtype=np.uint8).copy()
    return ImageIndex(root, classes, np.asarray(labels, dtype=np.int64), blob, offsets)


def holdout_split(n: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, held-out) indices of a plain ImageFolder of n images."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).numpy()
    n_test = max(1, int(n * holdout))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def is_imagenet_style(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def class_folders(root: Path) -> tuple[str, ...]:
    """The class names of a tree, from its sub-folder names alone (no files listed)."""
    return tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))


def folder_split(root: str | os.PathLike[str], split: str, holdout: float = 0.1) -> ImageIndex:
    """The `split` of a folder dataset: train/ and val/ sub-trees when both exist (val for any split other
    than 'train', labelled by train's classes), else a fixed `holdout` fraction of one ImageFolder."""
    root = Path(root)
    if is_imagenet_style(root):
        if split == "train":
            return scan_image_folder(root / "train")
        return scan_image_folder(root / "val", class_folders(root / "train"))
    full = scan_image_folder(root)
    return full.take(holdout_split(len(full), holdout)[0 if split == "train" else 1])


def folder_splits(root: str | os.PathLike[str], holdout: float = 0.1) -> tuple[ImageIndex, ImageIndex]:
    """(train, test) of a folder dataset, as folder_split gives them, listing each file once."""
    root = Path(root)
    if is_imagenet_style(root):
        train = scan_image_folder(root / "train")
        return train, scan_image_folder(root / "val", train.classes)
    full = scan_image_folder(root)
    train_rows, test_rows = holdout_split(len(full), holdout)
    return full.take(train_rows), full.take(test_rows)
