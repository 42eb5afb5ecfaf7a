"""Building and loading the spatially sparsified models by configuration: what `checkpoint.load_model` hands a
ConvNeXt or Swin file to, so every command that takes a checkpoint takes these too.

Our files (`dvit train`) say their configuration; official DynamicCNN/DynamicSwin releases and their dense
teachers (Facebook ConvNeXt, Microsoft Swin, timm) take it from `--model` (an official name), with the classes
from their head and dense when they hold no predictors.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ..errors import CheckpointError
from .config import SPATIAL_PRESETS, SpatialConfig, spatial_config
from .convnext import DynamicCNN, load_dynamic_cnn
from .convnext import is_sparse_key as convnext_sparse_key
from .swin import DynamicSwin, load_dynamic_swin
from .swin import is_sparse_key as swin_sparse_key

SpatialModel = DynamicCNN | DynamicSwin


def build_spatial(cfg: SpatialConfig) -> SpatialModel:
    return DynamicCNN(cfg) if cfg.family == "convnext" else DynamicSwin(cfg)


def family_loader(family: str) -> Callable[..., SpatialModel]:
    """The file loader of a family: load_dynamic_cnn or load_dynamic_swin (path, cfg, from_dense=...)."""
    return load_dynamic_cnn if family == "convnext" else load_dynamic_swin


def sparse_key_of(family: str) -> Callable[[str], bool]:
    """Whether a state-dict key is one only the sparse model has (predictors, fast paths), for a family."""
    return convnext_sparse_key if family == "convnext" else swin_sparse_key


def is_spatial_name(name: str | None) -> bool:
    return name is not None and name in SPATIAL_PRESETS


def foreign_spatial_config(sd: dict[str, torch.Tensor], preset: str, keep_ratio: float | None = None) -> SpatialConfig:
    """The configuration of an official release or dense teacher named by its preset: dense without predictors,
    classes from its head (timm's ConvNeXt calls it head.fc)."""
    base = SPATIAL_PRESETS[preset]
    sparse = sparse_key_of(base.family)
    dense = not any(sparse(k) for k in sd)
    return spatial_config(preset, keep_ratio=keep_ratio, num_classes=head_classes(sd), dense=dense)


def head_classes(sd: dict[str, torch.Tensor]) -> int | None:
    """Rows of the classifier (timm's ConvNeXt and Swin call it head.fc)."""
    head = sd.get("head.weight", sd.get("head.fc.weight"))
    return int(head.shape[0]) if head is not None and head.ndim == 2 else None


def load_spatial(
    path: str | os.PathLike[str], obj: dict[str, Any], sd: dict[str, torch.Tensor], *,
    preset: str | None = None, keep_ratio: float | None = None, expect: SpatialConfig | None = None,
) -> SpatialModel:
    """A ConvNeXt or Swin model in eval mode from a checkpoint already read (`obj`, its state dict `sd`)."""
    from ..checkpoint import FORMAT, load_weights

    if obj.get("format") == FORMAT and isinstance(obj.get("config"), dict):
        cfg = SpatialConfig.from_dict(obj["config"])
        want = expect or (SPATIAL_PRESETS[preset] if preset is not None and is_spatial_name(preset) else None)
        if expect is not None and cfg.architecture_key() != expect.architecture_key():
            raise CheckpointError(f"checkpoint {path} was trained for another configuration ({cfg.name}) than the "
                                  f"graphs ({expect.name}): pass the matching checkpoint")
        if want is not None and _arch(cfg) != _arch(want):
            raise CheckpointError(f"checkpoint {path} holds a '{cfg.name}' model ({cfg.family}), not '{want.name}' "
                                  f"({want.family}): pass --model {cfg.name} or the matching file")
        if expect is not None:
            cfg = expect
        elif keep_ratio is not None:
            cfg = cfg.replace(keep_ratio=float(keep_ratio))
        model = build_spatial(cfg)
        load_weights(model, sd, source=f"checkpoint {path}")
        return model.eval()
    if expect is not None:
        cfg = expect
    elif is_spatial_name(preset):
        assert preset is not None
        cfg = foreign_spatial_config(sd, preset, keep_ratio)
    else:
        raise CheckpointError(f"{path} is not a dvit-edge checkpoint (no model config inside): name its architecture "
                              "with --model (e.g. --model convnext-t --keep-ratio 0.7 for an official DynamicCNN release)")
    return family_loader(cfg.family)(path, cfg).eval()


def _arch(cfg: SpatialConfig) -> dict[str, Any]:
    """What must agree between a file and a requested model: the architecture, less classes, pruning and ratio."""
    key = cfg.architecture_key()
    for k in ("num_classes", "pruning_loc", "img_size", "in_chans"):
        key.pop(k)
    return key
