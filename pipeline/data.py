"""Datasets: Fashion-MNIST (the embedded default), ImageFolder trees and ImageNet-style train/val folders.

Here everything is decoded once into uint8 tensors held in memory and batched by index: on a 2-core machine
a DataLoader's worker processes cost more than they save for 28x28 images. Data too large for memory is
streamed by `pipeline.train.stream`, from the same file index (pipeline.image_index).
"""
from __future__ import annotations

import dataclasses
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


def refit(images: Tensor, in_chans: int, img_size: int) -> Tensor:
    """uint8 [N, c, h, w] images as a model of `in_chans` x `img_size`^2 takes them: what open_image and fit_square do
    to a file (Pillow's colour conversion, bilinear short side, centre crop), for images already decoded
    (Fashion-MNIST's idx arrays). Unchanged when they fit already."""
    from PIL import Image

    if tuple(images.shape[1:]) == (in_chans, img_size, img_size):
        return images
    mode = "L" if in_chans == 1 else "RGB"
    out = torch.empty(len(images), in_chans, img_size, img_size, dtype=torch.uint8)
    for i in range(len(images)):
        a = images[i].numpy()
        im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).convert(mode)
        out[i].numpy()[...] = as_chw(fit_square(im, img_size))
    return out


# What Pillow's image modes are, in words; channels from Image.getmodebands.
MODE_WORDS = {"1": "black and white", "L": "grey", "LA": "grey with alpha", "La": "grey with alpha", "P": "palette",
              "PA": "palette with alpha", "I": "32-bit grey", "I;16": "16-bit grey", "I;16B": "16-bit grey",
              "I;16L": "16-bit grey", "F": "floating-point grey", "RGB": "RGB", "RGBA": "RGB with alpha",
              "RGBa": "RGB with alpha", "RGBX": "RGB", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # Pillow's convert("L"/"RGB") clips these to 0-255


@dataclass(frozen=True)
class ImageSurvey:
    """What a sample of the training images is, from their headers alone (Pillow opens lazily: nothing decoded)."""

    sampled: int
    total: int
    modes: dict[str, int]
    sizes: dict[tuple[int, int], int]
    formats: dict[str, int]
    unreadable: int = 0

    def describe(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "total": self.total, "modes": dict(self.modes),
                "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.items()}, "formats": dict(self.formats),
                "unreadable": self.unreadable}

    def text(self, extra: str = "") -> str:
        """e.g. '1-channel 300x300 PNG images (grey)', `extra` inside the brackets."""
        from PIL import Image

        def bands(m: str) -> str:
            try:
                return f"{Image.getmodebands(m)}-channel"
            except (KeyError, ValueError):
                return m
        chans = " and ".join(dict.fromkeys(bands(m) for m in self.modes)) if self.modes else "unreadable"
        colour = ", ".join(dict.fromkeys(MODE_WORDS.get(m, m) for m in self.modes))
        fmt = "/".join(self.formats) or "image"
        return f"{chans} {self.size_text()} {fmt} images ({colour}{extra})"

    def size_text(self) -> str:
        if len(self.sizes) == 1:
            w, h = next(iter(self.sizes))
            return f"{w}x{h}"
        if not self.sizes:
            return "unknown-size"
        areas = sorted(self.sizes, key=lambda s: (s[0] * s[1], s))
        return f"{areas[0][0]}x{areas[0][1]} to {areas[-1][0]}x{areas[-1][1]}"


def survey_images(paths: list[Path], total: int) -> ImageSurvey:
    """Mode, size and format of each file in `paths`, read from its header."""
    from collections import Counter

    from PIL import Image

    modes: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    formats: Counter[str] = Counter()
    bad = 0
    for p in paths:
        try:
            with Image.open(p) as im:
                modes[im.mode] += 1
                sizes[(int(im.size[0]), int(im.size[1]))] += 1
                formats[str(im.format or p.suffix.lstrip(".").upper())] += 1
        except UNREADABLE:
            bad += 1
    return ImageSurvey(len(paths), total, dict(modes), dict(sizes), dict(formats), bad)


def survey_index(index: ImageIndex, count: int = 32) -> ImageSurvey:
    """`count` evenly spaced files of `index` (so every class is sampled), surveyed by their headers."""
    n = len(index)
    picks = np.unique(np.linspace(0, max(n - 1, 0), num=min(count, n)).astype(np.int64))
    return survey_images([index.path(int(i)) for i in picks], n)


def colour_steps(modes: list[str], in_chans: int) -> list[str]:
    """What open_image's convert("L" | "RGB") does to images of these Pillow modes, in words (none: as they are)."""
    steps: list[str] = []
    grey = [m for m in modes if m in GREY_MODES]
    colour = [m for m in modes if m not in GREY_MODES]
    deep = sorted({MODE_WORDS.get(m, m) for m in modes if m in DEEP_MODES})
    if deep:
        steps.append(f"{' and '.join(deep)} clipped to 0-255 by Pillow's conversion (values above 255 turn white: "
                     "save 8-bit images, or rescale them, to keep the range)")
    if in_chans == 1 and colour:
        steps.append("colour turned grey (ITU-R 601-2 luma; pass --in-chans 3 to keep colour)")
    if in_chans != 1 and grey:
        steps.append(f"grey repeated to {in_chans} channels (pass --in-chans 1 to keep one channel)")
    if any(m in ("P", "PA") for m in modes) and in_chans != 1:
        steps.append("palette expanded to RGB")
    if any(m in ("LA", "La", "PA", "RGBA", "RGBa") for m in modes):
        steps.append("alpha dropped")
    if any(m in ("CMYK", "YCbCr", "LAB", "HSV") for m in modes) and in_chans != 1:
        steps.append("converted to RGB by Pillow")
    return steps


def fit_square_words(sizes: list[tuple[int, int]], img_size: int) -> str:
    """What fit_square does to images of these sizes, in words."""
    s = img_size
    if sizes and all(sz == (s, s) for sz in sizes):
        return f"no resize (already {s}x{s})"
    if sizes and all(w == h for w, h in sizes):
        return f"resized to {s}x{s} (bilinear)"
    return f"short side resized to {s} (bilinear), centre crop to {s}x{s}"


def conversion_text(survey: ImageSurvey, in_chans: int, img_size: int, resize: str | None = None) -> str:
    """The log line's 'what the images are turned into': e.g. '1-channel 300x300 PNG images (grey) -> 3x96x96:
    grey repeated to 3 channels (pass --in-chans 1 to keep one channel), resized to 96x96 (bilinear)'. `resize`
    replaces fit_square's words where another transform resizes (timm's)."""
    steps = [*colour_steps(list(survey.modes), in_chans), resize or fit_square_words(list(survey.sizes), img_size)]
    sampled = f"; {survey.sampled} of {survey.total} sampled" if survey.sampled < survey.total else ""
    unreadable = f", {survey.unreadable} unreadable" if survey.unreadable else ""
    return f"{survey.text(sampled + unreadable)} -> {in_chans}x{img_size}x{img_size}: {', '.join(steps)}"


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


FMNIST_SHAPE = (1, 28, 28)


@dataclass
class VerificationData:
    """A few normalised test images a model can take, and where they came from (the export's manifest records
    `describe()`, its log `text`)."""

    images: Tensor  # float [count, C, H, W], normalised
    source: str  # "folder:/abs/path", "fashion-mnist:/abs/dir" or "seeded random normal images"
    split: str | None  # which split of the source: "test" (idx file, held-out fraction of a folder) or "val"
    chosen_by: str  # "--data", "checkpoint" (the data it records it was trained on), "default"
    why: str  # the choice in words
    files: list[str] = dataclasses.field(default_factory=list)  # the decoded files, relative to the source
    decoded: int = 0  # images read from the source (the rest of `images` repeats them)
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def text(self) -> str:
        if self.split is None:
            return f"{len(self.images)} {self.source} ({self.why})"
        return f"{self.source} {self.split} split, first {self.decoded} image(s) ({self.why})"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "split": self.split, "chosen_by": self.chosen_by, "why": self.why,
                "images": len(self.images), "decoded": self.decoded, "files": self.files,
                "normalization": self.normalization}


def _fits(what: str, cfg: Any, chans: int | None, size: int | None, classes: tuple[str, ...] | None,
          trained_classes: Any) -> None:
    """Refuse images the model cannot take: another image shape (where no transform applies), another number of
    classes, or other class names than those the checkpoint records it was trained on."""
    if chans is not None and (chans, size) != (cfg.in_chans, cfg.img_size):
        raise DataError(f"{what} has {chans}x{size}x{size} images, the model takes {cfg.in_chans}x{cfg.img_size}x"
                        f"{cfg.img_size}: pass --data DIR with the test images of the dataset it was trained on")
    if classes is not None and len(classes) != cfg.num_classes:
        raise DataError(f"{what} has {len(classes)} classes, the model {cfg.num_classes}: pass --data DIR with the "
                        "test images of the dataset it was trained on")
    if classes is not None and isinstance(trained_classes, (list, tuple)) and list(trained_classes) != list(classes):
        diff = [f"{a!r} vs {b!r}" for a, b in zip(classes, trained_classes) if a != b][:2]
        raise DataError(f"{what}'s classes differ from those the checkpoint was trained on ({', '.join(diff)}): pass "
                        "--data DIR with the test images of the dataset it was trained on")


def _normalization(cfg: Any, trained_on: dict[str, Any] | None, fallback: tuple[tuple[float, ...], tuple[float, ...]],
                   fallback_from: str) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    rec = trained_on or {}
    mean, std = rec.get("mean"), rec.get("std")
    if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) == cfg.in_chans:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std), "checkpoint"
    return fallback[0], fallback[1], fallback_from


def _normalized(images_u8: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    x = images_u8.float().div_(255.0)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _trained_refitted(trained_on: dict[str, Any] | None, size: int) -> bool:
    """Whether the checkpoint records training on idx images of this size, refitted to the model's input by 'dvit
    train' (data.refit): then verification refits them the same way; any other shape is refused."""
    rec = (trained_on or {}).get("source_images") or {}
    return set(rec.get("formats") or {}) == {"idx"} and set(rec.get("sizes") or {}) == {f"{size}x{size}"}


def _fmnist_verification(root: Path | None, cfg: Any, count: int, trained_on: dict[str, Any] | None,
                         chosen_by: str, why: str) -> VerificationData:
    ds = load_fashion_mnist("test", root)
    where = f"fashion-mnist:{find_fashion_mnist(root)}"
    refitted = _trained_refitted(trained_on, ds.img_size)
    _fits(where, cfg, None if refitted else ds.in_chans, ds.img_size, ds.classes, (trained_on or {}).get("classes"))
    n = min(count, len(ds))
    picked = refit(ds.images[:n], cfg.in_chans, cfg.img_size)
    fallback = (ds.mean * cfg.in_chans, ds.std * cfg.in_chans) if cfg.in_chans != ds.in_chans else (ds.mean, ds.std)
    mean, std, norm_from = _normalization(cfg, trained_on, fallback, "dataset")
    images = _normalized(picked[torch.arange(count) % n], mean, std)
    return VerificationData(images, where, "test", chosen_by, why, [f"{FMNIST_FILES['test'][0]}[{i}]" for i in range(n)],
                            n, {"mean": list(mean), "std": list(std), "from": norm_from})


def _folder_verification(root: Path, cfg: Any, count: int, trained_on: dict[str, Any] | None,
                         chosen_by: str, why: str) -> VerificationData:
    """The first `count` files of the folder's test split, listed by the file index and decoded one by one:
    nothing else is opened, whatever the size of the tree."""
    index = folder_split(root, "test")
    split = "val" if is_imagenet_style(root) else "test"
    where = f"folder:{root.resolve()}"
    if not len(index):
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the {split} split of {root}: pass --data "
                        "DIR with the test images of the dataset the model was trained on")
    _fits(where, cfg, None, None, index.classes, (trained_on or {}).get("classes"))
    n = min(count, len(index))
    picked = np.empty((n, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.uint8)
    for i in range(n):
        picked[i] = _load_image(index.path(i), cfg.in_chans, cfg.img_size)
    images_u8 = torch.from_numpy(picked)
    mean, std, norm_from = _normalization(cfg, trained_on, channel_stats(images_u8), "these images")
    files = [os.path.relpath(index.path(i), root) for i in range(n)]
    return VerificationData(_normalized(images_u8[torch.arange(count) % n], mean, std), where, split, chosen_by, why,
                            files, n, {"mean": list(mean), "std": list(std), "from": norm_from})


def _recorded_root(source: str) -> tuple[str, Path | None]:
    """('fashion-mnist' | 'folder' | '', path) of a training-data source string ('fashion-mnist:DIR:split',
    'folder:DIR'); the train/ half of an ImageNet-style tree stands for the tree."""
    if source.startswith("fashion-mnist:"):
        return "fashion-mnist", Path(source[len("fashion-mnist:"):].rsplit(":", 1)[0])
    if source.startswith("folder:"):
        p = Path(source[len("folder:"):])
        if p.name == "train" and is_imagenet_style(p.parent):
            p = p.parent
        return "folder", p
    return "", None


def verification_data(cfg: Any, count: int, data: str | None = None,
                      trained_on: dict[str, Any] | None = None) -> VerificationData:
    """`count` normalised test images for a model of config `cfg`, decoding only the files they come from.

    The data: `data` (--data: Fashion-MNIST's idx files or an image folder, whose test split's first files are
    used); else the data the checkpoint records it was trained on (`trained_on`, train's `data` record); else
    Fashion-MNIST where the model takes it whole (1x28x28 images, 10 classes); else, for a model whose input
    Fashion-MNIST cannot feed, seeded random normal images, said so. Refused with one line: images that do not fit
    the model (shape, unless the checkpoint records training on them refitted; class count, class names), recorded data not on this machine, and a 1x28x28 model of another
    class count with nothing to say what it was trained on. Images are normalised as the checkpoint records, else
    with the data's own statistics.
    """
    if data is not None:
        if data in ("", "fashion-mnist", "fmnist"):
            return _fmnist_verification(None, cfg, count, trained_on, "--data", f"--data {data}")
        root = Path(data)
        if not root.exists():
            raise DataError(f"dataset path {root} does not exist: pass 'fashion-mnist' or an image directory")
        if (root / FMNIST_FILES["train"][0]).exists() or (root / FMNIST_FILES["test"][0]).exists():
            return _fmnist_verification(root, cfg, count, trained_on, "--data", f"--data {data}")
        return _folder_verification(root, cfg, count, trained_on, "--data", f"--data {data}")
    source = str((trained_on or {}).get("source") or "")
    if source:
        kind, recorded = _recorded_root(source)
        why = f"the data the checkpoint was trained on, {source}"
        if kind == "fashion-mnist":
            here = recorded if recorded is not None and recorded.is_dir() else None
            return _fmnist_verification(here, cfg, count, trained_on, "checkpoint", why)
        if kind == "folder" and recorded is not None and recorded.is_dir():
            return _folder_verification(recorded, cfg, count, trained_on, "checkpoint", why)
        raise DataError(f"the checkpoint was trained on {source}, which is not on this machine: pass --data DIR with "
                        "that dataset's test images")
    if (cfg.in_chans, cfg.img_size, cfg.img_size) == FMNIST_SHAPE:
        if cfg.num_classes != len(FMNIST_CLASSES):
            raise DataError(
                f"the checkpoint does not say what it was trained on, and its {cfg.num_classes} classes are not "
                f"Fashion-MNIST's {len(FMNIST_CLASSES)}: pass --data DIR with the test images it was trained on")
        return _fmnist_verification(None, cfg, count, trained_on, "default",
                                    "the default: the checkpoint names no dataset and its model fits Fashion-MNIST")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(count, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)
    return VerificationData(images, "seeded random normal images", None, "default",
                            f"the checkpoint names no dataset and Fashion-MNIST does not fit a {cfg.in_chans}x"
                            f"{cfg.img_size}x{cfg.img_size} input: pass --data DIR to verify on real images")


def verification_images(cfg: Any, count: int, data: str | None = None,
                        trained_on: dict[str, Any] | None = None) -> tuple[Tensor, str]:
    """(images, where they came from in words) of verification_data: the plugin pass checks its graphs on these."""
    v = verification_data(cfg, count, data, trained_on)
    return v.images, v.text
