"""Typed configuration passed down through every stage (never globals).

A ModelConfig fully determines the architecture, so it is stored in every checkpoint and manifest;
a later stage compares configs instead of trusting file names.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ConfigError

if TYPE_CHECKING:
    from .spatial.config import SpatialConfig


def default_pruning_loc(depth: int) -> tuple[int, ...]:
    """The paper prunes before blocks 3, 6 and 9 of 12: the same quarters of any depth."""
    locs = tuple(sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3)}))
    return tuple(loc for loc in locs if loc < depth)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # Block indices (0-based) before which tokens are pruned; () gives the dense teacher.
    pruning_loc: tuple[int, ...] = (3, 6, 9)
    keep_ratio: float = 0.7
    drop_path_rate: float = 0.0
    # "deit": timm's ViT (one-convolution patch embedding, LayerNorm eps 1e-6, class head only). "lvvit": LV-ViT
    # (Token Labeling; official models/dylvvit.py): four-convolution stem with BatchNorm ("4_2"), LayerNorm eps 1e-5,
    # residual branches divided by skip_lam, and an auxiliary token head joining the class head at inference.
    family: str = "deit"
    skip_lam: float = 1.0

    # The graph-set contract: stage graph i >= 1 takes the tokens `tokens_i` left by the previous pruning point and
    # returns `kept_indices_i`, indices into those tokens (nested: compose them for patch ids). The spatial families
    # (pipeline.spatial.config.SpatialConfig) say "features" and absolute positions instead.
    boundary = "tokens"
    nested_selection = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "pruning_loc", tuple(int(p) for p in self.pruning_loc))
        self.validate()

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def stage_ratios(self) -> list[float]:
        """rho, rho^2, rho^3, ... of the initial patch tokens, as the official code computes them."""
        return [self.keep_ratio ** (i + 1) for i in range(len(self.pruning_loc))]

    @property
    def keep_counts(self) -> list[int]:
        """Patch tokens kept after each pruning point: int(N * ratio), exactly the official rounding."""
        return [int(self.num_patches * r) for r in self.stage_ratios]

    @property
    def tokens_per_stage(self) -> list[int]:
        """Tokens (class token included) entering stage 0, 1, ...: the static shapes of the exported graphs."""
        return [self.num_patches + 1] + [k + 1 for k in self.keep_counts]

    @property
    def is_dense(self) -> bool:
        return not self.pruning_loc

    @property
    def token_distillation(self) -> str:
        """What the student's kept tokens are distilled on: the official losses use MSE on DeiT's final tokens and
        KL on LV-ViT's auxiliary token logits (main.py: DistillDiffPruningLoss_dynamic(mse_token=True|False))."""
        return "kl" if self.family == "lvvit" else "mse"

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family '{self.family}': one of {', '.join(FAMILIES)}")
        if self.family == "lvvit" and self.patch_size % 2:
            raise ConfigError(f"LV-ViT's stem halves the image before a patch_size/2 projection: patch_size "
                              f"{self.patch_size} must be even")
        if self.skip_lam <= 0:
            raise ConfigError(f"skip_lam {self.skip_lam} must be positive (LV-ViT: 2.0)")
        if self.img_size <= 0 or self.patch_size <= 0 or self.img_size % self.patch_size:
            raise ConfigError(
                f"img_size {self.img_size} is not a positive multiple of patch_size {self.patch_size}: "
                "choose sizes that divide evenly"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}: change one of them"
            )
        if self.embed_dim % 4:
            raise ConfigError(f"embed_dim {self.embed_dim} must be a multiple of 4 (the prediction module splits it)")
        if not (0.0 < self.keep_ratio <= 1.0):
            raise ConfigError(f"keep ratio {self.keep_ratio} is outside (0, 1]: pass e.g. --keep-ratio 0.7")
        locs = self.pruning_loc
        if list(locs) != sorted(set(locs)):
            raise ConfigError(f"pruning locations {list(locs)} must be strictly increasing, e.g. 3,6,9")
        bad = [p for p in locs if not (0 < p < self.depth)]
        if bad:
            raise ConfigError(
                f"pruning locations {bad} are beyond the model's depth {self.depth}: "
                f"use block indices between 1 and {self.depth - 1} (e.g. {','.join(map(str, default_pruning_loc(self.depth)))})"
            )
        for i, k in enumerate(self.keep_counts):
            if k < 1:
                raise ConfigError(
                    f"keep ratio {self.keep_ratio} keeps zero of {self.num_patches} tokens at pruning stage {i + 1} "
                    f"(int({self.num_patches} * {self.stage_ratios[i]:.4g}) = 0): raise the keep ratio or prune fewer times"
                )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def as_dense(self) -> ModelConfig:
        return self.replace(pruning_loc=(), keep_ratio=1.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pruning_loc"] = list(self.pruning_loc)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}: this file was written by another version")
        return cls(**d)

    def architecture_key(self) -> dict[str, Any]:
        """What must match for weights to be interchangeable (keep ratio and pruning points may differ)."""
        d = self.to_dict()
        for k in ("name", "keep_ratio", "drop_path_rate"):
            d.pop(k)
        return d


FAMILIES = ("deit", "lvvit")
FAMILY_NAMES = {"deit": "DeiT", "lvvit": "LV-ViT", "convnext": "ConvNeXt", "swin": "Swin"}
# What key names may say a foreign file is beside the families (spatial/swin.checkpoint_architecture).
LAYOUT_NAMES = {**FAMILY_NAMES, "swinv2": "Swin V2", "vit": "ViT/DeiT", "unknown": "unrecognised"}

# Presets. The DeiT ones are the paper's setting (ImageNet, 224x224, 196 tokens, pruning before blocks 3/6/9).
# fmnist_tiny is sized for the embedded default on a 2-core CPU: 28x28 grey images in 4x4 patches give a
# 7x7 grid of 49 tokens, pruned to 34, 24 and 16 at rho=0.7.
PRESETS: dict[str, ModelConfig] = {
    "deit_tiny_patch16_224": ModelConfig("deit_tiny_patch16_224", 224, 16, 3, 1000, 192, 12, 3),
    "deit_small_patch16_224": ModelConfig("deit_small_patch16_224", 224, 16, 3, 1000, 384, 12, 6),
    "deit_base_patch16_224": ModelConfig("deit_base_patch16_224", 224, 16, 3, 1000, 768, 12, 12),
    "fmnist_tiny": ModelConfig("fmnist_tiny", 28, 4, 1, 10, 64, 12, 4),
    # DeiT-256 exists only in DynamicViT: the official infer.py builds it as VisionTransformerDiffPruning(
    # patch_size=16, embed_dim=256, depth=12, num_heads=4, mlp_ratio=4, qkv_bias=True, pruning_loc=[3, 6, 9]).
    "deit-256": ModelConfig("deit-256", 224, 16, 3, 1000, 256, 12, 4),
    # LV-ViT as the official infer.py/main.py build it: LVViTDiffPruning(patch_size=16, embed_dim=384|512,
    # depth=16|20, num_heads=6|8, mlp_ratio=3., p_emb='4_2', skip_lam=2., return_dense=True) with qkv_bias False
    # (the class default), pruning before blocks 4/8/12 (S) and 5/10/15 (M).
    "lvvit-s": ModelConfig("lvvit-s", 224, 16, 3, 1000, 384, 16, 6, mlp_ratio=3.0, qkv_bias=False,
                           pruning_loc=(4, 8, 12), family="lvvit", skip_lam=2.0),
    "lvvit-m": ModelConfig("lvvit-m", 224, 16, 3, 1000, 512, 20, 8, mlp_ratio=3.0, qkv_bias=False,
                           pruning_loc=(5, 10, 15), family="lvvit", skip_lam=2.0),
}

# The official DynamicViT code's --model names (infer.py, main.py) and the presets they are. deit-s and deit-b are
# DeiT-S/DeiT-B (embed 384/768, 12 blocks, 6/12 heads, MLP ratio 4, pruning before blocks 3, 6, 9 with keep
# ratios rho, rho^2, rho^3): the timm presets under another name, so a config keeps the timm name.
OFFICIAL_NAMES: dict[str, str] = {
    "deit-256": "deit-256",
    "deit-s": "deit_small_patch16_224",
    "deit-b": "deit_base_patch16_224",
    "lvvit-s": "lvvit-s",
    "lvvit-m": "lvvit-m",
}
PRESETS.update({alias: PRESETS[name] for alias, name in OFFICIAL_NAMES.items() if alias != name})


def preset_names() -> str:
    """Every name --model takes, for help texts and errors: the official names first, then the presets."""
    official = [f"{a} (= {n})" if a != n else a for a, n in OFFICIAL_NAMES.items()]
    return ", ".join(official + [n for n in PRESETS if n not in OFFICIAL_NAMES])


def model_config(
    preset: str,
    *,
    keep_ratio: float | None = None,
    pruning_loc: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    dense: bool = False,
    img_size: int | None = None,
    in_chans: int | None = None,
) -> ModelConfig:
    """A preset with what the command line changes: any input size and channel count compose with any
    architecture (the patch grid follows; ModelConfig.validate says when a size does not divide into patches)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model '{preset}': choose one of {preset_names()}")
    cfg = PRESETS[preset]
    changes: dict[str, Any] = {}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if img_size is not None:
        changes["img_size"] = img_size
    if in_chans is not None:
        if in_chans < 1:
            raise ConfigError(f"--in-chans must be at least 1, got {in_chans}")
        changes["in_chans"] = in_chans
    if dense:
        changes.update(pruning_loc=(), keep_ratio=1.0)
    else:
        if keep_ratio is not None:
            changes["keep_ratio"] = keep_ratio
        if pruning_loc is not None:
            changes["pruning_loc"] = tuple(pruning_loc)
    return cfg.replace(**changes) if changes else cfg


@dataclass
class LossWeights:
    """The paper's objective: CE + 0.5 KL(teacher||student) + 0.5 token MSE + 2.0 keep-ratio loss (see losses.py)."""

    ce: float = 1.0
    distill_kl: float = 0.5
    distill_token: float = 0.5
    ratio: float = 2.0


@dataclass
class AugmentConfig:
    """Training augmentation and evaluation preprocessing.

    policy 'shift-flip' is the small-data default (pad-2 random crop and flip, vectorised in memory); 'timm' is
    the DeiT recipe built by timm's create_transform (RandomResizedCrop, flip, RandAugment, random erasing) and
    Mixup/CutMix; 'none' trains on the images as they are.
    """

    policy: str = "shift-flip"
    auto_augment: str | None = None  # timm policy string, e.g. rand-m9-mstd0.5-inc1
    color_jitter: float = 0.4  # timm ignores it when auto_augment is set, as DeiT does
    interpolation: str = "bicubic"
    re_prob: float = 0.0  # random erasing
    re_mode: str = "pixel"
    re_count: int = 1
    mixup: float = 0.0  # Mixup alpha; 0 disables
    cutmix: float = 0.0  # CutMix alpha; 0 disables
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    crop_pct: float = 0.875  # evaluation: resize to img_size / crop_pct, centre-crop img_size (streamed data)
    normalization: str = "dataset"  # 'dataset': the data's own mean/std; 'imagenet': timm's ImageNet constants

    @property
    def mixes(self) -> bool:
        return self.policy == "timm" and (self.mixup > 0 or self.cutmix > 0)

    def validate(self) -> None:
        if self.policy not in AUGMENT_POLICIES:
            raise ConfigError(f"unknown augmentation policy '{self.policy}': choose one of {', '.join(AUGMENT_POLICIES)}")
        if self.normalization not in ("dataset", "imagenet"):
            raise ConfigError(f"normalization '{self.normalization}' is neither 'dataset' nor 'imagenet'")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct {self.crop_pct} is outside (0, 1]: the DeiT evaluation crop is 0.875")
        if self.policy != "timm" and (self.mixup > 0 or self.cutmix > 0 or self.re_prob > 0 or self.auto_augment):
            raise ConfigError("RandAugment, random erasing and Mixup/CutMix come with --augment timm (the deit recipe)")


AUGMENT_POLICIES = ("none", "shift-flip", "timm")
AMP_MODES = ("auto", "bf16", "fp16", "off")
LOADERS = ("auto", "memory", "stream")


TOKEN_PRUNING = ("mask", "delete")


@dataclass
class TrainConfig:
    recipe: str = "small"  # where the defaults came from (pipeline.train.recipe); every field can be overridden
    epochs: int = 10
    batch_size: int = 128  # global batch: split evenly across DDP ranks and accumulation steps
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    backbone_lr_scale: float = 0.01  # paper: backbone at 1/100 of the prediction modules' rate
    clip_grad: float = 1.0  # 0 disables
    seed: int = 0
    label_smoothing: float = 0.0
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 disables
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimiser step in each process
    amp: str = "auto"  # auto: bf16 (fp16 where bf16 is missing) on CUDA, off on CPU
    loader: str = "auto"  # auto: in memory when the data is small and the augmentation vectorised, else streamed
    workers: int | None = None  # decoding processes per training process (streamed data); None: from the cores
    max_steps_per_epoch: int | None = None
    train_subset: int | None = None
    eval_subset: int | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    # How a token-pruning student trains (issue 19): "mask" keeps every token and masks the dropped ones out of
    # attention (the paper); "delete" removes them, as inference does. mask_epochs: with delete, the first epochs
    # mask (a warm-up for the prediction module).
    token_pruning: str = "mask"
    mask_epochs: int = 0

    @property
    def augment(self) -> bool:
        return self.aug.policy != "none"

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.accum_steps < 1:
            raise ConfigError(f"--accum-steps must be at least 1, got {self.accum_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay {self.ema_decay} is outside [0, 1): DeiT uses 0.9999, 0 disables it")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown --amp '{self.amp}': choose one of {', '.join(AMP_MODES)}")
        if self.loader not in LOADERS:
            raise ConfigError(f"unknown --loader '{self.loader}': choose one of {', '.join(LOADERS)}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.token_pruning not in TOKEN_PRUNING:
            raise ConfigError(f"unknown --token-pruning '{self.token_pruning}': choose one of {', '.join(TOKEN_PRUNING)}")
        if self.mask_epochs < 0 or (self.mask_epochs and self.token_pruning != "delete"):
            raise ConfigError(f"--mask-epochs {self.mask_epochs} sets the masked warm-up of --token-pruning delete: "
                              "pass --token-pruning delete, or drop it")
        self.aug.validate()

    def pruning_mode(self, epoch: int) -> str:
        """How the student prunes in `epoch` (0-based): mask throughout, or delete after mask_epochs."""
        return "mask" if self.token_pruning == "mask" or epoch < self.mask_epochs else "delete"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        loss = LossWeights(**d.pop("loss", {}))
        aug = AugmentConfig(**d.pop("aug", {}))
        if "augment" in d:  # written before augmentation policies existed
            aug.policy = "shift-flip" if d.pop("augment") else "none"
        return cls(**d, loss=loss, aug=aug)


if TYPE_CHECKING:
    # The config of any family: what a graph set, a checkpoint or a manifest may hold.
    AnyConfig: TypeAlias = ModelConfig | SpatialConfig


def config_from_dict(d: dict[str, Any]) -> ModelConfig | SpatialConfig:
    """The model config a checkpoint or manifest records, of whichever family: token pruning (DeiT, LV-ViT) or
    spatial sparsification (ConvNeXt, Swin)."""
    from .spatial.config import SPATIAL_FAMILIES, SpatialConfig

    if d.get("family") in SPATIAL_FAMILIES:
        return SpatialConfig.from_dict(d)
    return ModelConfig.from_dict(d)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
