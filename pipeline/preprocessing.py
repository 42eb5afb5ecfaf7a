"""What a camera frame goes through to become the model's input tensor: the record that travels with the model.

`dvit export` writes a `Preprocessing` record into the manifest header (key "preprocessing"); precision, the
plugin pass and the build carry it unchanged, so every graph set says how to feed its engines. The record is
the evaluation path of the data the model was trained on, step by step:

  1. colour: to the model's channels (grey: Pillow's convert("L"), ITU-R 601-2 luma; RGB: grey repeated, alpha
     dropped);
  2. resize: the short side to `resize.short_side`, the long side scaled with it (rounded as `resize.long_side`
     says), with `resize.interpolation`;
  3. centre crop to `input_size` (offset rounded as `crop_offset` says);
  4. scale to 0-1 (pixel / 255), then (x - mean) / std per channel: `mean` and `std` are in the 0-1 scale.

Two evaluation paths exist in training: the in-memory/small-recipe one (data.fit_square: bilinear short side to
the input size, long side rounded, floor crop offset) and timm's, which the deit recipe uses (bicubic short side
to floor(size / crop_pct), long side floored, torchvision's centre crop with rounded offset).

Standard library and numpy only (Pillow when installed): a device imports this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "dvit-edge/preprocessing/v1"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
ROUNDINGS = ("round", "floor")
SCALE = "0-1"  # mean and std apply to pixel / 255


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the input tensor [C, H, W] float32 (see the module docstring for the steps).

    `sources` says where each value came from ("checkpoint": the data record 'dvit train' wrote; "training
    config": the checkpoint's recipe; "model config"; "dataset default"; "verification images"), and for a value
    that is absent (None), why.
    """

    input_size: tuple[int, int]  # (H, W) of the tensor
    channels: int  # 1 or 3
    color: str  # "grey" or "rgb"
    resize_short_side: int
    resize_long_side: str  # "round" (data.fit_square) or "floor" (torchvision Resize)
    interpolation: str  # "nearest", "bilinear" or "bicubic"
    crop_offset: str  # "floor" ((size - crop) // 2) or "round" (torchvision: round half to even)
    mean: tuple[float, ...] | None  # per channel, 0-1 scale
    std: tuple[float, ...] | None  # per channel, 0-1 scale
    classes: tuple[str, ...] | None
    eval_path: str  # the training-side transform this mirrors, in words
    sources: dict[str, str] = field(default_factory=dict)
    scale: str = SCALE

    def __post_init__(self) -> None:
        if self.channels not in (1, 3) or self.color != ("grey" if self.channels == 1 else "rgb"):
            raise ValueError(f"preprocessing: {self.channels} channel(s) with colour {self.color!r}: expected 1/grey or 3/rgb")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocessing: interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if self.resize_long_side not in ROUNDINGS or self.crop_offset not in ROUNDINGS:
            raise ValueError("preprocessing: resize_long_side and crop_offset must be 'round' or 'floor'")
        if self.resize_short_side < min(self.input_size):
            raise ValueError(f"preprocessing: resize to {self.resize_short_side} is smaller than the crop {self.input_size}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.channels:
                raise ValueError(f"preprocessing: {name} has {len(v)} values for {self.channels} channel(s)")
        if self.scale != SCALE:
            raise ValueError(f"preprocessing: scale {self.scale!r} is not {SCALE!r}")

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "input_size": list(self.input_size),
            "channels": self.channels,
            "color": self.color,
            "color_conversion": self.color_conversion,
            "resize": {"short_side": self.resize_short_side, "long_side": self.resize_long_side,
                       "interpolation": self.interpolation},
            "center_crop": {"size": list(self.input_size), "offset": self.crop_offset},
            "scale": self.scale,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "classes": None if self.classes is None else list(self.classes),
            "eval_path": self.eval_path,
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        if d.get("format") != FORMAT:
            raise ValueError(f"preprocessing record of format {d.get('format')!r}, expected {FORMAT!r}")
        r, c = d["resize"], d["center_crop"]
        if list(c["size"]) != list(d["input_size"]):
            raise ValueError("preprocessing: the centre crop differs from the input size")
        h, w = (int(x) for x in d["input_size"])
        return cls(
            (h, w), int(d["channels"]), str(d["color"]), int(r["short_side"]), str(r["long_side"]),
            str(r["interpolation"]), str(c["offset"]),
            None if d.get("mean") is None else tuple(float(x) for x in d["mean"]),
            None if d.get("std") is None else tuple(float(x) for x in d["std"]),
            None if d.get("classes") is None else tuple(str(x) for x in d["classes"]),
            str(d.get("eval_path", "")), {str(k): str(v) for k, v in (d.get("sources") or {}).items()},
            str(d.get("scale", SCALE)),
        )

    @property
    def color_conversion(self) -> str:
        if self.channels == 1:
            return "RGB to grey by ITU-R 601-2 luma (Pillow convert('L')); grey input as is"
        return "grey input repeated to 3 channels; RGBA input: alpha dropped"

    def summary(self) -> str:
        """One line: what the images are turned into."""
        h, w = self.input_size
        norm = ("mean/std unknown" if self.mean is None or self.std is None else
                f"mean {' '.join(f'{v:.4f}' for v in self.mean)} std {' '.join(f'{v:.4f}' for v in self.std)}")
        if self.classes is None:
            cls = f"classes unknown ({self.sources.get('classes', 'not recorded')})"
        else:
            shown = ", ".join(self.classes[:3]) + (", ..." if len(self.classes) > 3 else "")
            cls = f"{len(self.classes)} classes ({shown})"
        return (f"input: {self.channels}x{h}x{w}, {self.color}, {self.interpolation} resize short side to "
                f"{self.resize_short_side} + centre crop, {norm} (0-1 scale), {cls}")

    # ---- the transform ----
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, as the training-side transform computes it."""
        s = self.resize_short_side
        if self.resize_long_side == "round":  # data.fit_square
            f = s / min(width, height)
            return max(s, round(width * f)), max(s, round(height * f))
        short, long = min(width, height), max(width, height)  # torchvision.transforms.Resize(int)
        new_long = int(s * long / short)
        return (s, new_long) if width <= height else (new_long, s)

    def crop_box(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the centre crop on a width x height image."""
        h, w = self.input_size
        if self.crop_offset == "floor":
            return (width - w) // 2, (height - h) // 2
        return round((width - w) / 2.0), round((height - h) / 2.0)  # half to even, as torchvision

    def apply(self, image: np.ndarray, backend: str = "auto") -> np.ndarray:
        """A uint8 image (H x W grey, or H x W x C with C = 1, 3 or 4) as the model's input: float32 [C, H, W].

        backend "pillow" (the default when Pillow is installed) resizes exactly as training did. "numpy" (the
        default without Pillow: a device may have numpy only) reimplements Pillow's separable resampling
        (antialiased bilinear/bicubic filters, rounding to uint8 after each pass) in float: it agrees with Pillow
        to within one grey level per pixel, not bit for bit. Colour conversion, crop and normalisation are exact
        in both.
        """
        if self.mean is None or self.std is None:
            raise ValueError(f"preprocessing: no mean/std recorded ({self.sources.get('mean', 'unknown')})")
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise ValueError(f"preprocessing: expected a uint8 HxW or HxWxC image (C 1, 3 or 4), got {arr.dtype} "
                             f"{arr.shape}")
        if backend == "auto":
            backend = "pillow" if _has_pillow() else "numpy"
        if backend not in ("pillow", "numpy"):
            raise ValueError(f"preprocessing: backend {backend!r} is not 'auto', 'pillow' or 'numpy'")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        arr = _to_color(arr, self.channels, backend)
        height, width = arr.shape[:2]
        new_w, new_h = self.resized_size(width, height)
        if (new_w, new_h) != (width, height):
            arr = (_resize_pillow if backend == "pillow" else _resize_numpy)(arr, new_w, new_h, self.interpolation)
        h, w = self.input_size
        left, top = self.crop_box(new_w, new_h)
        if left < 0 or top < 0:
            raise ValueError(f"preprocessing: resized image {new_w}x{new_h} is smaller than the crop {w}x{h}")
        arr = arr[top : top + h, left : left + w]
        chw = (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((chw - mean) / std, dtype=np.float32)


# ---- building the record from what training recorded ----
def from_training(
    *,
    in_chans: int,
    img_size: int,
    train_config: dict[str, Any] | None,
    mean: tuple[float, ...] | list[float] | None,
    std: tuple[float, ...] | list[float] | None,
    norm_from: str,
    classes: tuple[str, ...] | list[str] | None,
    classes_from: str,
) -> Preprocessing:
    """The record for a model of `in_chans` x `img_size`^2 trained with `train_config` (the checkpoint's
    train_config dict; None: not recorded, the default small-recipe path is assumed and said so)."""
    aug = (train_config or {}).get("aug") if isinstance(train_config, dict) else None
    sources = {"input_size": "model config", "channels": "model config"}
    if isinstance(aug, dict) and aug.get("policy") == "timm":
        crop_pct = float(aug.get("crop_pct", 0.875))
        short = math.floor(img_size / crop_pct)
        interp = str(aug.get("interpolation", "bicubic"))
        interp = interp if interp in INTERPOLATIONS else "bicubic"  # another timm name ("random", ...): bicubic assumed
        long_side, offset = "floor", "round"
        path = f"timm eval transform (Resize {short} {interp}, CenterCrop {img_size}, crop_pct {crop_pct:g})"
        sources["resize"] = "training config (timm policy)"
    else:
        short, interp, long_side, offset = img_size, "bilinear", "round", "floor"
        path = f"data.fit_square (bilinear short side to {img_size}, centre crop)"
        sources["resize"] = ("training config (in-memory eval path)" if isinstance(aug, dict) else
                             "default: the checkpoint records no training config; the in-memory eval path assumed")
    sources["mean"] = sources["std"] = norm_from
    sources["classes"] = classes_from
    return Preprocessing(
        (img_size, img_size), in_chans, "grey" if in_chans == 1 else "rgb", short, long_side, interp, offset,
        None if mean is None else tuple(float(v) for v in mean), None if std is None else tuple(float(v) for v in std),
        None if classes is None else tuple(str(c) for c in classes), path, sources,
    )


# ---- helpers ----
def _has_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def _to_color(arr: np.ndarray, channels: int, backend: str) -> np.ndarray:
    if channels == 3:
        return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
    if arr.ndim == 2:
        return arr
    if backend == "pillow":
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").convert("L"))
    rgb = arr.astype(np.uint32)  # Pillow's fixed-point luma: exact
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _resize_pillow(arr: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(arr))
    return np.asarray(im.resize((width, height), Image.Resampling[interpolation.upper()]))


def _filter(x: np.ndarray, interpolation: str) -> np.ndarray:
    x = np.abs(x)
    if interpolation == "bilinear":
        return np.clip(1.0 - x, 0.0, None)
    a = -0.5  # Pillow's bicubic
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                    np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


def _weights(n_in: int, n_out: int, interpolation: str) -> np.ndarray:
    """[n_out, n_in] resampling matrix, as Pillow computes its coefficients (antialiased when shrinking)."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float64)
    if interpolation == "nearest":
        src = np.minimum(((np.arange(n_out) + 0.5) * scale).astype(np.int64), n_in - 1)
        m[np.arange(n_out), src] = 1.0
        return m
    support = (1.0 if interpolation == "bilinear" else 2.0) * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = _filter((np.arange(lo, hi) - center + 0.5) * inv, interpolation)
        total = w.sum()
        m[i, lo:hi] = w / total if total else w
    return m


def _resize_numpy(arr: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """Pillow's two passes (horizontal, then vertical), each rounded to uint8."""
    x = arr.astype(np.float64)
    grey = x.ndim == 2
    if grey:
        x = x[:, :, None]
    if x.shape[1] != width:
        x = np.einsum("ow,hwc->hoc", _weights(x.shape[1], width, interpolation), x)
        x = np.clip(np.floor(x + 0.5), 0, 255)
    if x.shape[0] != height:
        x = np.einsum("oh,hwc->owc", _weights(x.shape[0], height, interpolation), x)
        x = np.clip(np.floor(x + 0.5), 0, 255)
    out = x.astype(np.uint8)
    return out[:, :, 0] if grey else out
