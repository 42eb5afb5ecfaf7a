"""Training recipes: named sets of TrainConfig defaults that `--recipe` selects and any flag overrides.

'deit' is DynamicViT-DeiT-S as the official code trains it (github.com/raoyongming/DynamicViT, README command
for deit-s and main.py defaults): 30 epochs, AdamW, lr 1e-3 at a global batch of 1024 (128 per GPU x 8),
5 warm-up epochs, cosine to 1e-6, weight decay 0.05, backbone at 0.01 of the prediction modules' rate,
loss weights CE 1, KL 0.5, token MSE 0.5, keep ratio 2.0, no gradient clipping, EMA 0.9999; DeiT's data
recipe through timm: RandomResizedCrop with bicubic resize, flip, RandAugment rand-m9-mstd0.5-inc1, random
erasing 0.25 (pixel), Mixup 0.8 / CutMix 1.0 with label smoothing 0.1, evaluation at the 0.875 crop,
ImageNet mean/std. The learning rate scales linearly with the global batch (lr x batch / 1024) unless --lr
is given. The official README trains deit-256, deit-s, lvvit-s and lvvit-m with exactly these settings, and deit-b
with --drop_path 0.2 --ratio_weight 5.0 (MODEL_SETTINGS); LV-ViT's token distillation is KL instead of MSE,
which its ModelConfig says (token_distillation), not the recipe.

'small' is what trains the embedded default well on 2 CPU cores: pad-and-shift crop and flip in memory.

The spatially sparsified models (--model convnext-*/swin-*, T-PAMI DynamicViT) take, in every recipe, their own
objective's weights (official main.py's ConvNextDistillDiffPruningLoss: CE 1, keep ratio 10, KL 0.5, feature-map MSE
0.5) and the README's backbone rate (--lr_scale 0.2) instead of DeiT's; with 'deit' also the README's schedule for
them: 120 epochs, main.py's 20 warm-up epochs, drop path 0.2 (0.5 for -b). Their lr, 4e-3 at a global batch of
4096, is DeiT's 1e-3 at 1024, and their data recipe (timm RandAugment, random erasing, Mixup/CutMix, smoothing 0.1,
EMA 0.9999) is DeiT's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import AugmentConfig, LossWeights, TrainConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    config: TrainConfig
    lr_ref_batch: int | None = None  # lr is given for this global batch and scales linearly; None: no scaling


DEIT = Recipe(
    "deit",
    "DynamicViT-DeiT-S on ImageNet: 30 epochs, AdamW, lr 1e-3 x batch/1024, timm RandAugment, Mixup/CutMix, EMA",
    TrainConfig(
        recipe="deit", epochs=30, batch_size=1024, lr=1e-3, min_lr=1e-6, warmup_epochs=5, weight_decay=0.05,
        backbone_lr_scale=0.01, clip_grad=0.0, label_smoothing=0.1, ema_decay=0.9999,
        aug=AugmentConfig(
            policy="timm", auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, interpolation="bicubic",
            re_prob=0.25, re_mode="pixel", re_count=1, mixup=0.8, cutmix=1.0, mixup_prob=1.0,
            mixup_switch_prob=0.5, mixup_mode="batch", crop_pct=0.875, normalization="imagenet",
        ),
        loss=LossWeights(ce=1.0, distill_kl=0.5, distill_token=0.5, ratio=2.0),
    ),
    lr_ref_batch=1024,
)

SMALL = Recipe(
    "small",
    "small data on few cores: pad-and-shift crop and flip in memory, no Mixup, no EMA",
    TrainConfig(recipe="small"),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (SMALL, DEIT)}


@dataclass(frozen=True)
class ModelSettings:
    """What a recipe changes for one model of the official zoo: its keep-ratio loss weight, drop-path rate and
    (ConvNeXt, Swin) schedule."""

    ratio_weight: float | None = None
    drop_path_rate: float | None = None
    epochs: int | None = None
    warmup_epochs: float | None = None


def _spatial_imagenet(drop_path: float) -> ModelSettings:
    """The README's convnext-*/swin-* command: --epochs 120 --drop_path 0.2|0.5, main.py's --warmup_epochs 20."""
    return ModelSettings(drop_path_rate=drop_path, epochs=120, warmup_epochs=20.0)


# Per model, from the official README's training commands (raoyongming/DynamicViT at 1322e62): among the token-pruning
# models only deit-b differs; the ConvNeXt and Swin ones have a schedule of their own.
MODEL_SETTINGS: dict[str, dict[str, ModelSettings]] = {
    "deit": {
        "deit-b": ModelSettings(ratio_weight=5.0, drop_path_rate=0.2),
        "deit_base_patch16_224": ModelSettings(ratio_weight=5.0, drop_path_rate=0.2),
        **{f"{family}-{size}": _spatial_imagenet(0.5 if size == "b" else 0.2)
           for family in ("convnext", "swin") for size in ("t", "s", "b")},
    },
}
SPATIAL_BACKBONE_LR_SCALE = 0.2  # README: --lr_scale 0.2 for every convnext-* and swin-* run


def model_settings(recipe: str, model: str) -> ModelSettings:
    """The recipe's settings for `model` (none where the recipe has no special case for it)."""
    return MODEL_SETTINGS.get(recipe, {}).get(model, ModelSettings())


def family_defaults(config: TrainConfig, model: str | None) -> TrainConfig:
    """A recipe's TrainConfig with the family's own settings for `model`: the spatial models' objective weights and
    backbone rate (the token-pruning models take the recipe's as it is)."""
    from ..spatial.config import SPATIAL_PRESETS

    if model not in SPATIAL_PRESETS:
        return config
    from ..spatial.losses import SPATIAL_LOSS_WEIGHTS

    return dataclasses.replace(config, loss=dataclasses.replace(SPATIAL_LOSS_WEIGHTS),
                               backbone_lr_scale=SPATIAL_BACKBONE_LR_SCALE)


def spatial_note(cfg: TrainConfig) -> str:
    """The log's words on a spatial model's objective and rates, as they stand after the flags."""
    w = cfg.loss
    return (f"spatial sparsification: loss CE {w.ce:g} + keep ratio {w.ratio:g} + KL {w.distill_kl:g} + feature-map "
            f"MSE {w.distill_token:g}, student backbone at {cfg.backbone_lr_scale:g} x lr (official DynamicCNN/Swin)")


AUG_FIELDS = {f.name for f in dataclasses.fields(AugmentConfig)}
TIMM_ONLY = ("auto_augment", "re_prob", "mixup", "cutmix")
LOSS_FIELDS = {"w_ce": "ce", "w_distill": "distill_kl", "w_token": "distill_token", "w_ratio": "ratio"}


def train_config(recipe: str, overrides: dict[str, Any], model: str | None = None) -> tuple[TrainConfig, str]:
    """The recipe's TrainConfig with every non-None override applied, and a line saying how lr was chosen.

    Override keys are TrainConfig fields, AugmentConfig fields, or w_ce/w_distill/w_token/w_ratio. `model` (the
    --model name) picks the recipe's settings for that model (family_defaults, model_settings) below the overrides.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}': choose one of {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    base = family_defaults(r.config, model)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(TrainConfig)} - AUG_FIELDS - set(LOSS_FIELDS)
    if unknown:
        raise ConfigError(f"unknown training settings {sorted(unknown)}")
    aug = dataclasses.replace(base.aug, **{k: v for k, v in given.items() if k in AUG_FIELDS})
    if aug.policy != "timm":  # leaving timm's policy drops its parts, unless asked for by name (validate then says no)
        plain = AugmentConfig()
        aug = dataclasses.replace(aug, **{k: getattr(plain, k) for k in TIMM_ONLY if k not in given})
    loss = base.loss
    special = model_settings(recipe, model) if model is not None else ModelSettings()
    if special.ratio_weight is not None:
        loss = dataclasses.replace(loss, ratio=special.ratio_weight)
    loss = dataclasses.replace(loss, **{LOSS_FIELDS[k]: v for k, v in given.items() if k in LOSS_FIELDS})
    schedule = {k: v for k, v in (("epochs", special.epochs), ("warmup_epochs", special.warmup_epochs)) if v is not None}
    top = {k: v for k, v in given.items() if k not in AUG_FIELDS and k not in LOSS_FIELDS}
    cfg = dataclasses.replace(base, **{**schedule, **top}, aug=aug, loss=loss)
    if "lr" in given or r.lr_ref_batch is None:
        why = f"lr {cfg.lr:g}" + (" (--lr)" if "lr" in given else f" (recipe {r.name})")
    else:
        cfg = dataclasses.replace(cfg, lr=r.config.lr * cfg.batch_size / r.lr_ref_batch)
        why = f"lr {cfg.lr:.3g} = {r.config.lr:g} x global batch {cfg.batch_size} / {r.lr_ref_batch} (recipe {r.name})"
    cfg.validate()
    return cfg, why
