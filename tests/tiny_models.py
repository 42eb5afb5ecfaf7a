"""Tiny DynamicViT models shared by the ONNX-side tests: small enough to export in a second, with weights
shaped like trained ones so that the graphs and keep decisions exercise what a real model does."""
from __future__ import annotations

import torch

from pipeline.config import ModelConfig
from pipeline.data import load_fashion_mnist
from pipeline.model import DynamicViT, select_tokens

TINY = ModelConfig("fmnist_tiny", 28, 4, 1, 10, 32, 4, 2, pruning_loc=(1, 2, 3), keep_ratio=0.7)


def trained_like(model: DynamicViT) -> DynamicViT:
    """Random weights shaped like trained ones: non-zero biases and LayerNorm affines (zeros would let the
    simplifier drop every bias Add), and prediction modules that separate tokens, their keep/drop logits centred
    on real images so that keep scores spread out instead of saturating (at the default init every keep score
    sits near log 0.5)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1.0, 0.1)
                mod.bias.normal_(0.0, 0.1)
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.1)
        for pred in model.score_predictor:
            for lin in pred.modules():
                if isinstance(lin, torch.nn.Linear):
                    torch.nn.init.normal_(lin.weight, std=2.0 / lin.in_features**0.5)
            torch.nn.init.normal_(pred.out_conv[4].weight, std=1.0)
        ds = load_fashion_mnist("train")
        x = model.embed(ds.normalize(ds.images[:64]))
        for s, (start, end) in enumerate(model.stage_bounds()):
            if s:
                pred = model.score_predictor[s - 1]
                log_probs = pred(x[:, 1:])
                pred.out_conv[4].bias[0] -= (log_probs[..., 0] - log_probs[..., 1]).median()
                x, _ = select_tokens(x, model.keep_scores(s, x), model.cfg.keep_counts[s - 1])
            x = model.run_blocks(x, start, end)
    return model.eval()
