"""`--recipe deit` is DeiT's recipe as timm builds it, with the DynamicViT paper's values; every value overridable."""
from __future__ import annotations

import pytest
import torch
from timm.data import Mixup
from timm.data.auto_augment import RandAugment
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torchvision import transforms as T

from pipeline.errors import ConfigError
from pipeline.train import augment
from pipeline.train.recipe import train_config

# The paper's setting for DynamicViT-DeiT-S, from github.com/raoyongming/DynamicViT: the README's deit-s command
# (--batch_size 128 on 8 GPUs, --epochs 30, --lr 1e-3, --warmup_epochs 5, --base_rate 0.7) and main.py's defaults
# (--aa rand-m9-mstd0.5-inc1, --smoothing 0.1, --reprob 0.25 --remode pixel --recount 1, --mixup 0.8 --cutmix 1.0
# --mixup_prob 1.0 --mixup_switch_prob 0.5 --mixup_mode batch, --train_interpolation bicubic, crop 224/256,
# --weight_decay 0.05, --min_lr 1e-6, --lr_scale 0.01, --model_ema_decay 0.9999, ratio_weight 2.0, distill 0.5).
PAPER = {"epochs": 30, "global_batch": 1024, "lr": 1e-3, "warmup_epochs": 5, "min_lr": 1e-6, "weight_decay": 0.05,
         "backbone_lr_scale": 0.01, "smoothing": 0.1, "reprob": 0.25, "mixup": 0.8, "cutmix": 1.0, "switch": 0.5,
         "rand_m": 9, "rand_n": 2, "rand_mstd": 0.5, "crop": 224 / 256, "ema": 0.9999, "ratio_w": 2.0, "kl_w": 0.5}


def test_deit_recipe_schedule_and_loss_are_the_papers() -> None:
    cfg, why = train_config("deit", {})
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (PAPER["epochs"], PAPER["global_batch"], PAPER["lr"])
    assert (cfg.warmup_epochs, cfg.min_lr, cfg.weight_decay) == (PAPER["warmup_epochs"], PAPER["min_lr"], PAPER["weight_decay"])
    assert cfg.backbone_lr_scale == PAPER["backbone_lr_scale"] and cfg.ema_decay == PAPER["ema"]
    assert (cfg.loss.ce, cfg.loss.distill_kl, cfg.loss.ratio) == (1.0, PAPER["kl_w"], PAPER["ratio_w"])
    assert cfg.clip_grad == 0  # the official run sets no --clip_grad
    assert "x global batch 1024 / 1024" in why


def test_deit_transforms_are_timms_with_the_papers_values() -> None:
    cfg, _ = train_config("deit", {})
    mean, std = augment.normalization(cfg.aug, (0.5,) * 3, (0.5,) * 3, 3)
    assert (mean, std) == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    t = augment.train_transform(cfg.aug, 224, mean, std).transforms
    crop = next(s for s in t if isinstance(s, RandomResizedCropAndInterpolation))
    assert crop.size == (224, 224) and crop.scale == (0.08, 1.0) and crop.interpolation == T.InterpolationMode.BICUBIC
    assert any(isinstance(s, T.RandomHorizontalFlip) and s.p == 0.5 for s in t)
    ra = next(s for s in t if isinstance(s, RandAugment))
    assert ra.num_layers == PAPER["rand_n"]
    assert {op.magnitude for op in ra.ops} == {PAPER["rand_m"]} and {op.magnitude_std for op in ra.ops} == {PAPER["rand_mstd"]}
    assert "PosterizeIncreasing" in {op.name for op in ra.ops}  # inc1: the increasing-magnitude op set
    assert not any(isinstance(s, T.ColorJitter) for s in t)  # timm drops colour jitter under RandAugment, as DeiT does
    er = next(s for s in t if isinstance(s, RandomErasing))
    assert (er.probability, er.mode, er.max_count) == (PAPER["reprob"], "pixel", 1)
    norm = next(s for s in t if isinstance(s, T.Normalize))
    assert tuple(norm.mean.tolist()) == pytest.approx(IMAGENET_DEFAULT_MEAN)

    e = augment.eval_transform(cfg.aug, 224, mean, std).transforms
    resize = next(s for s in e if isinstance(s, T.Resize))
    assert resize.size == int(224 / PAPER["crop"]) == 256 and resize.interpolation == T.InterpolationMode.BICUBIC
    assert next(s for s in e if isinstance(s, T.CenterCrop)).size == (224, 224)


def test_deit_mixup_and_loss_are_timms() -> None:
    cfg, _ = train_config("deit", {})
    m = augment.mixer(cfg.aug, 1000, cfg.label_smoothing)
    assert isinstance(m, Mixup)
    assert (m.mixup_alpha, m.cutmix_alpha, m.mix_prob, m.switch_prob) == (PAPER["mixup"], PAPER["cutmix"], 1.0, PAPER["switch"])
    assert (m.mode, m.label_smoothing, m.num_classes) == ("batch", PAPER["smoothing"], 1000)
    assert isinstance(augment.classification_loss(cfg.aug, cfg.label_smoothing), SoftTargetCrossEntropy)
    # Without Mixup the official code falls back to label-smoothing cross-entropy.
    nomix, _ = train_config("deit", {"mixup": 0.0, "cutmix": 0.0})
    assert augment.mixer(nomix.aug, 10, nomix.label_smoothing) is None
    loss = augment.classification_loss(nomix.aug, nomix.label_smoothing)
    assert isinstance(loss, LabelSmoothingCrossEntropy) and loss.smoothing == PAPER["smoothing"]


def test_mixed_targets_and_soft_loss_work_on_a_real_batch() -> None:
    cfg, _ = train_config("deit", {})
    m = augment.mixer(cfg.aug, 10, cfg.label_smoothing)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    xm, ym = m(x.clone(), y)
    assert ym.shape == (8, 10) and torch.allclose(ym.sum(1), torch.ones(8))
    assert not torch.equal(xm, x)
    loss = augment.classification_loss(cfg.aug, cfg.label_smoothing)(torch.randn(8, 10), ym)
    assert loss.ndim == 0 and float(loss) > 0


def test_learning_rate_scales_with_the_global_batch_unless_given() -> None:
    half, why = train_config("deit", {"batch_size": 512})
    assert half.lr == pytest.approx(PAPER["lr"] / 2) and "512 / 1024" in why
    fixed, why = train_config("deit", {"batch_size": 512, "lr": 3e-4})
    assert fixed.lr == 3e-4 and "--lr" in why
    small, _ = train_config("small", {"batch_size": 512})
    assert small.lr == 1e-3  # the small recipe does not scale


def test_every_value_is_overridable_and_leaving_timm_drops_its_parts() -> None:
    cfg, _ = train_config("deit", {"epochs": 3, "re_prob": 0.0, "w_ratio": 5.0, "ema_decay": 0.0, "crop_pct": 0.9})
    assert (cfg.epochs, cfg.aug.re_prob, cfg.loss.ratio, cfg.ema_decay, cfg.aug.crop_pct) == (3, 0.0, 5.0, 0.0, 0.9)
    plain, _ = train_config("deit", {"policy": "shift-flip"})
    assert plain.aug.policy == "shift-flip" and not plain.aug.mixes and plain.aug.auto_augment is None
    with pytest.raises(ConfigError, match="come with --augment timm"):
        train_config("small", {"mixup": 0.8})
    with pytest.raises(ConfigError, match="unknown recipe 'imagenet': choose one of small, deit"):
        train_config("imagenet", {})


def test_checkpoints_written_before_recipes_still_read() -> None:
    """The shipped teacher's train_config has `augment: True` and no recipe fields."""
    from pathlib import Path

    from pipeline.checkpoint import read_checkpoint
    from pipeline.config import TrainConfig

    saved = read_checkpoint(Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist_tiny_teacher.pt")["train_config"]
    assert saved["augment"] is True and "aug" not in saved
    cfg = TrainConfig.from_dict(saved)
    assert cfg.aug.policy == "shift-flip" and cfg.recipe == "small" and cfg.label_smoothing == 0.1


def test_randaugment_posterize_at_full_magnitude_keeps_running() -> None:
    """timm's PosterizeIncreasing keeps 0 bits at magnitude 10 (reached through the magnitude noise, mstd 0.5):
    the installed Pillow must turn the image black, as the paper's training did, not raise and end the run."""
    from PIL import Image

    cfg, _ = train_config("deit", {})
    ra = next(s for s in augment.train_transform(cfg.aug, 32, (0.5,) * 3, (0.25,) * 3).transforms if isinstance(s, RandAugment))
    op = next(o for o in ra.ops if o.name == "PosterizeIncreasing")
    args = op.level_fn(10, op.hparams)
    assert args == (0,)
    out = op.aug_fn(Image.new("RGB", (8, 8), (200, 150, 100)), *args, **op.kwargs)
    assert out.getextrema() == ((0, 0), (0, 0), (0, 0))
