"""Distillation per family (issue 17): an LV-ViT student learns from an LV-ViT teacher with the official LV-ViT
loss (token distillation by KL on the auxiliary head's per-token class probabilities), on real Fashion-MNIST images.

A reduced LV-ViT (the real stem, skip_lam, auxiliary head; 4 blocks, 32 channels, 28x28 grey images in 4x4 patches)
keeps the run to seconds on 2 cores."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import load_model, read_checkpoint
from pipeline.config import TrainConfig, model_config
from pipeline.losses import token_distill_loss
from pipeline.model import DynamicViT
from pipeline.train import train

LV = model_config("lvvit-s").replace(name="lvvit-fmnist", img_size=28, patch_size=4, in_chans=1, num_classes=10,
                                     embed_dim=32, depth=4, num_heads=2, pruning_loc=(1, 2, 3))
QUICK = {"batch_size": 32, "max_steps_per_epoch": 4, "train_subset": 256, "eval_subset": 64, "lr": 2e-3,
         "warmup_epochs": 0.0}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lv-teacher")
    train(LV.as_dense(), TrainConfig(epochs=1, **QUICK), out, progress=False)
    return out / "model.pt"


def test_dense_lvvit_teacher_trains_every_head(teacher: Path) -> None:
    """The dense model's loss is cross-entropy on its inference rule (class head + 0.5 max of the auxiliary head),
    so the auxiliary head learns too: its weights moved from their initial values."""
    model = load_model(teacher)
    assert model.cfg.family == "lvvit" and model.cfg.is_dense and model.aux_head is not None
    torch.manual_seed(0)
    fresh = DynamicViT(LV.as_dense())  # the training's own seed-0 initialisation
    assert not torch.equal(model.aux_head.weight, fresh.aux_head.weight)
    assert not torch.equal(model.patch_embed.bn1.running_mean, torch.zeros(64))  # the stem's BatchNorm trained


def test_lvvit_student_distils_tokens_by_kl(tmp_path: Path, teacher: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop hands the family's token distillation to the loss: every step of an LV-ViT student computes its
    token term by KL over [B, N, classes] auxiliary logits (the real loss runs; the wrapper only records)."""
    from pipeline.train import loop

    seen: list[tuple[str, tuple[int, ...], float]] = []
    real = loop.dynamicvit_loss

    def recording(out, labels, t_logits, t_tokens, ratios, weights, **kw):  # type: ignore[no-untyped-def]
        terms = real(out, labels, t_logits, t_tokens, ratios, weights, **kw)
        by_hand = token_distill_loss(out.tokens, t_tokens, out.keep_mask, "kl")
        seen.append((kw.get("token_kind", "mse"), tuple(out.tokens.shape), float((terms.distill_token - by_hand).detach())))
        return terms

    monkeypatch.setattr(loop, "dynamicvit_loss", recording)
    res = train(LV, TrainConfig(epochs=1, **QUICK), tmp_path / "s", teacher_path=str(teacher), progress=False)
    assert len(seen) == QUICK["max_steps_per_epoch"]
    for kind, shape, diff in seen:
        assert kind == "kl" and shape == (32, LV.num_patches, 10) and diff == 0.0
    first = res["history"][0]["first_step"]
    assert all(math.isfinite(v) for v in first.values()), first
    student = load_model(tmp_path / "s" / "model.pt")
    assert student.cfg == LV and student.cfg.token_distillation == "kl"
    saved = read_checkpoint(tmp_path / "s" / "model.pt")["model"]
    assert "aux_head.weight" in saved and "patch_embed.conv1.weight" in saved
