"""Per-sample transforms for streamed images, batch mixing, and the classification loss that goes with them.

The 'timm' policy is DeiT's recipe exactly as timm builds it (create_transform, Mixup, SoftTargetCrossEntropy,
LabelSmoothingCrossEntropy): we choose the values, timm owns the code. 'shift-flip' is the in-memory path's
pad-2 crop and flip, per sample, for data too large to hold in memory.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..config import AugmentConfig
from ..data import fit_square


def normalization(aug: AugmentConfig, data_mean: tuple[float, ...], data_std: tuple[float, ...],
                  in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std images are normalised with: the data's own, or timm's ImageNet constants (averaged over
    the three channels for grey models)."""
    if aug.normalization == "dataset":
        return tuple(data_mean), tuple(data_std)
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if in_chans == 1:
        return (sum(IMAGENET_DEFAULT_MEAN) / 3,), (sum(IMAGENET_DEFAULT_STD) / 3,)
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


class FitSquare:
    """Resize the short side and centre-crop to img_size: the in-memory path's decode, as a transform."""

    def __init__(self, img_size: int):
        self.img_size = img_size

    def __call__(self, im: Any) -> Any:
        return fit_square(im, self.img_size)

    def __repr__(self) -> str:
        return f"FitSquare({self.img_size})"


def train_transform(aug: AugmentConfig, img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Any], Tensor]:
    """PIL image in, normalised [C, H, W] float tensor out; random parts draw from the global generators."""
    from torchvision import transforms as T

    if aug.policy == "timm":
        from timm.data import create_transform

        return create_transform(  # type: ignore[no-any-return]
            input_size=img_size, is_training=True, color_jitter=aug.color_jitter, auto_augment=aug.auto_augment,
            interpolation=aug.interpolation, re_prob=aug.re_prob, re_mode=aug.re_mode, re_count=aug.re_count,
            mean=mean, std=std,
        )
    steps: list[Any] = [FitSquare(img_size)]
    if aug.policy == "shift-flip":
        steps += [T.RandomCrop(img_size, padding=2), T.RandomHorizontalFlip()]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(aug: AugmentConfig, img_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Any], Tensor]:
    """timm's evaluation transform (bicubic resize to img_size / crop_pct, centre crop) for the timm policy;
    otherwise the in-memory path's resize-and-crop, so both paths evaluate the same pixels."""
    from torchvision import transforms as T

    if aug.policy == "timm":
        from timm.data import create_transform

        return create_transform(  # type: ignore[no-any-return]
            input_size=img_size, is_training=False, interpolation=aug.interpolation, crop_pct=aug.crop_pct,
            mean=mean, std=std,
        )
    return T.Compose([FitSquare(img_size), T.ToTensor(), T.Normalize(mean, std)])


def resize_words(aug: AugmentConfig, img_size: int) -> str | None:
    """What the timm policy's transforms do to an image's size, in words, for the log; None for the other policies,
    whose decode is fit_square on both paths (data.fit_square_words says what that does)."""
    if aug.policy != "timm":
        return None
    s, short = img_size, math.floor(img_size / aug.crop_pct)  # timm's transforms_imagenet_eval
    return (f"training: random resized crop to {s}x{s} ({aug.interpolation}) and timm's augmentation; evaluation: "
            f"short side resized to {short} ({aug.interpolation}), centre crop to {s}x{s}")


def mixer(aug: AugmentConfig, num_classes: int, label_smoothing: float) -> Any:
    """timm's Mixup/CutMix (with label smoothing folded into its soft targets), or None when off."""
    if not aug.mixes:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob, switch_prob=aug.mixup_switch_prob,
        mode=aug.mixup_mode, label_smoothing=label_smoothing, num_classes=num_classes,
    )


def classification_loss(aug: AugmentConfig, label_smoothing: float) -> Callable[[Tensor, Tensor], Tensor] | None:
    """timm's loss for the timm policy, as DeiT chooses it: soft-target CE after Mixup, label-smoothing CE
    otherwise. None: plain F.cross_entropy with label_smoothing (the small recipe, bit-for-bit as before)."""
    if aug.policy != "timm":
        return None
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if aug.mixes:
        return SoftTargetCrossEntropy()  # type: ignore[no-any-return]
    if label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=label_smoothing)  # type: ignore[no-any-return]
    return None
