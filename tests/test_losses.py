"""Each term of the DynamicViT objective against values worked out by hand on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import LossWeights
from pipeline.losses import distill_kl_loss, dynamicvit_loss, keep_ratio_loss, token_distill_loss
from pipeline.model import TrainOutput


def test_keep_ratio_loss_by_hand() -> None:
    # stage 1 targets 0.5: samples keep 3/4 and 1/4 -> (0.25^2 + 0.25^2)/2 = 0.0625
    # stage 2 targets 0.25: samples keep 1/4 and 0/4 -> (0 + 0.0625)/2 = 0.03125
    d1 = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    d2 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    got = keep_ratio_loss([d1, d2], [0.5, 0.25])
    assert got.item() == pytest.approx((0.0625 + 0.03125) / 2)


def test_distill_kl_by_hand() -> None:
    # student uniform over 2 classes, teacher p = (0.8, 0.2): KL(t||s) = 0.8 ln(1.6) + 0.2 ln(0.4)
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(0.8), math.log(0.2)]])
    assert distill_kl_loss(s, t).item() == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), rel=1e-6)
    # batchmean: a second identical sample leaves it unchanged
    assert distill_kl_loss(s.repeat(2, 1), t.repeat(2, 1)).item() == pytest.approx(distill_kl_loss(s, t).item())


def test_token_mse_counts_only_kept_tokens() -> None:
    s = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]]])
    t = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[1.0], [0.0], [1.0]]])
    # kept rows 0 and 2: squared errors (1, 0) and (0, 4) -> mean over 4 numbers = 1.25
    assert token_distill_loss(s, t, mask).item() == pytest.approx(1.25)
    assert token_distill_loss(s, t, torch.zeros_like(mask)).item() == 0.0


def test_token_kl_is_batchmean_over_the_kept_tokens_only() -> None:
    """LV-ViT's token distillation: KL(teacher || student) of each kept token's class distribution, averaged over
    the kept tokens (F.kl_div's batchmean over the rows it is given, as the official loss calls it)."""
    s = torch.zeros(1, 3, 2)  # uniform student
    t = torch.tensor([[[math.log(0.8), math.log(0.2)], [9.0, -9.0], [math.log(0.5), math.log(0.5)]]])
    mask = torch.tensor([[[1.0], [0.0], [1.0]]])
    kl_08 = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    assert token_distill_loss(s, t, mask, "kl").item() == pytest.approx((kl_08 + 0.0) / 2, rel=1e-6)
    assert token_distill_loss(s, t, torch.zeros_like(mask), "kl").item() == 0.0
    with pytest.raises(ValueError, match="'mse' or 'kl'"):
        token_distill_loss(s, t, mask, "l1")


def test_total_is_the_weighted_sum() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    out = TrainOutput(logits, torch.ones(2, 2, 3), torch.ones(2, 2, 1), [torch.tensor([[1.0, 0.0], [1.0, 1.0]])], logits)
    w = LossWeights(ce=1.0, distill_kl=0.5, distill_token=0.5, ratio=2.0)
    terms = dynamicvit_loss(out, labels, torch.zeros(2, 2), torch.zeros(2, 2, 3), [0.5], w)
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert terms.ce.item() == pytest.approx(ce, rel=1e-6)
    assert terms.distill_token.item() == pytest.approx(1.0)
    assert terms.ratio.item() == pytest.approx((0.0 + 0.25) / 2)
    expect = ce + 0.5 * terms.distill_kl.item() + 0.5 * 1.0 + 2.0 * 0.125
    assert terms.total.item() == pytest.approx(expect, rel=1e-6)
