"""DynamicViT semantics: the paper's prediction module, masked attention, static top-k inference."""
from __future__ import annotations

import pytest
import torch

from pipeline.config import ModelConfig, default_pruning_loc, model_config
from pipeline.errors import ConfigError
from pipeline.model import DynamicViT, PredictorLG, gumbel_hard_keep, select_tokens, softmax_with_policy

TINY = ModelConfig("tiny", img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=4,
                   num_heads=2, pruning_loc=(1, 2, 3), keep_ratio=0.7)


def _model(cfg: ModelConfig = TINY, seed: int = 0) -> DynamicViT:
    torch.manual_seed(seed)
    return DynamicViT(cfg).eval()


def test_predictor_shapes_and_log_probabilities() -> None:
    torch.manual_seed(0)
    pred = PredictorLG(32)
    out = pred(torch.randn(3, 49, 32), torch.ones(3, 49, 1))
    assert out.shape == (3, 49, 2)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3, 49))


def test_predictor_global_feature_pools_only_kept_tokens() -> None:
    torch.manual_seed(0)
    pred = PredictorLG(32).eval()
    x = torch.randn(1, 10, 32)
    policy = torch.ones(1, 10, 1)
    policy[0, 7:] = 0
    base = pred(x, policy)
    x2 = x.clone()
    x2[0, 7:] += 100.0 * torch.randn(3, 32)  # dropped tokens change: the kept tokens' scores must not
    after = pred(x2, policy)
    torch.testing.assert_close(after[0, :7], base[0, :7])
    x3 = x.clone()
    x3[0, 2] += 5.0 * torch.randn(32)  # a kept token changes (not by a constant: LayerNorm removes that): every kept token's score moves (through the pooled half)
    assert (pred(x3, policy)[0, 0] - base[0, 0]).abs().max() > 1e-6


def test_predictor_without_policy_equals_all_ones_policy() -> None:
    torch.manual_seed(0)
    pred = PredictorLG(32)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(pred(x), pred(x, torch.ones(2, 9, 1)))


def test_masked_softmax_equals_dense_softmax_when_nothing_is_dropped() -> None:
    torch.manual_seed(0)
    attn = torch.randn(2, 3, 17, 17) * 4
    got = softmax_with_policy(attn, torch.ones(2, 17, 1))
    torch.testing.assert_close(got, attn.softmax(-1), atol=1e-6, rtol=1e-5)


def test_masked_softmax_gives_dropped_keys_no_attention_but_keeps_self() -> None:
    torch.manual_seed(0)
    N = 6
    attn = torch.randn(1, 2, N, N)
    policy = torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.float32).view(1, N, 1)
    w = softmax_with_policy(attn, policy)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, N), atol=1e-5, rtol=0)
    for q in range(N):
        for k in range(N):
            if policy[0, k, 0] == 0 and k != q:
                assert w[0, :, q, k].max() < 1e-5
    # A dropped query attends to the kept keys and to itself.
    assert w[0, :, 2, 2].min() > 1e-3
    # Numerically stable for huge logits (the max is subtracted).
    big = softmax_with_policy(attn * 1e4, policy)
    assert torch.isfinite(big).all()


def test_keep_counts_follow_the_official_rounding() -> None:
    deit = model_config("deit_small_patch16_224", keep_ratio=0.7)
    # int(196 * 0.7**i): 137.2 -> 137, 96.04 -> 96, 67.228 -> 67
    assert deit.keep_counts == [int(196 * 0.7), int(196 * 0.7**2), int(196 * 0.7**3)] == [137, 96, 67]
    assert model_config("fmnist_tiny").keep_counts == [34, 24, 16]
    assert default_pruning_loc(12) == (3, 6, 9)


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.9, 1.0])
def test_inference_keeps_exactly_int_n_ratio_tokens_and_the_class_token(ratio: float) -> None:
    cfg = TINY.replace(keep_ratio=ratio)
    m = _model(cfg)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        out = m.forward_inference(x)
    assert out.stage_inputs[0].shape == x.shape
    # stage graph i >= 1 receives the tokens stage i-1 left: N+1, then k_1+1, ... (its own selection follows)
    assert [t.shape[1] for t in out.stage_inputs[1:]] == cfg.tokens_per_stage[:-1]
    assert [i.shape for i in out.kept_indices] == [(3, k) for k in cfg.keep_counts]
    with torch.no_grad():
        tokens = m.run_blocks(m.embed(x), 0, cfg.pruning_loc[0])
        kept, idx = select_tokens(tokens, m.keep_scores(1, tokens), cfg.keep_counts[0])
        scores = m.keep_scores(1, tokens)
    torch.testing.assert_close(kept[:, 0], tokens[:, 0])  # class token first, untouched
    sel = torch.gather(scores, 1, idx)
    assert (sel[:, :-1] >= sel[:, 1:]).all()  # descending score order
    # every dropped token scores no higher than the lowest kept one
    dropped = torch.ones_like(scores, dtype=torch.bool).scatter_(1, idx, False)
    assert (scores.masked_fill(~dropped, -float("inf")).max(1).values <= sel[:, -1]).all()
    for b in range(3):
        assert len(set(out.kept_patch_ids[-1][b].tolist())) == cfg.keep_counts[-1]


def test_batch_results_equal_single_image_results() -> None:
    m = _model()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        batched = m.forward_inference(x)
        for b in range(8):
            single = m.forward_inference(x[b : b + 1])
            torch.testing.assert_close(single.logits[0], batched.logits[b], atol=1e-5, rtol=1e-5)
            for s, t in zip(single.kept_patch_ids, batched.kept_patch_ids):
                assert torch.equal(s[0], t[b])


def test_gradients_reach_prediction_modules_through_gumbel_softmax() -> None:
    m = _model().train()
    out = m(torch.randn(4, 1, 28, 28))
    # A loss that depends on the predictors only through the hard decisions and the masked attention.
    (out.logits.sum() + sum(d.sum() for d in out.decisions)).backward()
    for i, pred in enumerate(m.score_predictor):
        g = sum(p.grad.abs().sum() for p in pred.parameters() if p.grad is not None)
        assert g > 0, f"prediction module {i} received no gradient"


def test_training_decisions_are_hard_and_nested() -> None:
    m = _model().train()
    out = m(torch.randn(4, 1, 28, 28))
    prev = torch.ones_like(out.decisions[0])
    for d in out.decisions:
        assert set(d.unique().tolist()) <= {0.0, 1.0}
        assert (d <= prev).all()  # a token dropped once stays dropped
        prev = d
    assert out.tokens.shape == (4, 49, 32)  # nothing removed while training


def test_gumbel_hard_keep_with_given_noise_is_deterministic() -> None:
    logp = torch.log_softmax(torch.randn(2, 5, 2), -1)
    noise = torch.zeros(2, 5, 2)
    keep = gumbel_hard_keep(logp, noise)
    assert torch.equal(keep[..., 0], (logp[..., 0] > logp[..., 1]).float())


def test_dense_teacher_matches_timm_vision_transformer() -> None:
    """Same parameter names and the same computation as timm's ViT: a timm state dict loads as is."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=4,
                            in_chans=1, depth=2).eval()
    cfg = ModelConfig("t", img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=192, depth=2,
                      num_heads=3, pruning_loc=(), keep_ratio=1.0)
    ours = DynamicViT(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_inference(x).logits, ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keep_ratio": 0.0}, "outside (0, 1]"),
        ({"keep_ratio": 1.5}, "outside (0, 1]"),
        ({"pruning_loc": (1, 2, 7)}, "beyond the model's depth"),
        ({"pruning_loc": (2, 1)}, "strictly increasing"),
        ({"keep_ratio": 0.01}, "keeps zero"),
        ({"num_heads": 5}, "not divisible"),
    ],
)
def test_bad_config_is_one_clear_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        TINY.replace(**change)


def test_keep_margin_ranks_like_the_keep_log_probability_without_saturated_ties() -> None:
    torch.manual_seed(0)
    pred = PredictorLG(32).eval()
    with torch.no_grad():
        pred.out_conv[4].weight.mul_(50.0)  # trained-like spread of margins
        pred.out_conv[4].bias.copy_(torch.tensor([40.0, 0.0]))  # a confident predictor: keep >> drop
        x = torch.randn(2, 20, 32)
        logp_keep = pred(x)[:, :, 0]
        margin = pred.keep_margin(x)
    assert (logp_keep == 0.0).all()  # log-softmax saturates: every token ties at exactly 0.0
    assert len(margin[0].unique()) == 20  # the margin still orders them
    # Unsaturated, the two scores give the same order, and log p(keep) = -softplus(-margin).
    with torch.no_grad():
        pred.out_conv[4].bias.zero_()
        logp_keep, margin = pred(x)[:, :, 0], pred.keep_margin(x)
    torch.testing.assert_close(logp_keep, -torch.nn.functional.softplus(-margin), atol=1e-6, rtol=1e-5)
    assert torch.equal(logp_keep.argsort(dim=1, descending=True), margin.argsort(dim=1, descending=True))


LV_TINY = model_config("lvvit-s").replace(name="lv-tiny", img_size=32, num_classes=7, embed_dim=32, depth=4,
                                          num_heads=2, pruning_loc=(1, 2, 3))


def test_lvvit_stem_keeps_the_patch_grid_and_the_official_names() -> None:
    for img, patch in ((32, 8), (64, 16), (96, 16)):
        cfg = LV_TINY.replace(img_size=img, patch_size=patch)
        m = _model(cfg)
        assert m.patch_embed(torch.randn(2, 3, img, img)).shape == (2, (img // patch) ** 2, 32)
        assert m.patch_embed.proj.kernel_size == (patch // 2, patch // 2)
    keys = set(_model(LV_TINY).state_dict())
    assert {"patch_embed.conv1.weight", "patch_embed.bn3.running_var", "aux_head.weight"} <= keys
    assert "blocks.0.attn.qkv.bias" not in keys and "patch_embed.conv1.bias" not in keys
    assert _model(LV_TINY).blocks[0].norm1.eps == 1e-5 and _model(TINY).blocks[0].norm1.eps == 1e-6
    with pytest.raises(ConfigError, match="patch_size 7 must be even"):
        LV_TINY.replace(patch_size=7, img_size=28)


def test_lvvit_residuals_are_divided_by_skip_lam() -> None:
    blk = _model(LV_TINY).blocks[0]
    assert blk.skip_lam == 2.0
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        h = x + blk.attn(blk.norm1(x)) / 2.0
        want = h + blk.mlp(blk.norm2(h)) / 2.0
        torch.testing.assert_close(blk(x), want)


def test_lvvit_inference_adds_half_the_aux_maximum_over_the_kept_tokens_only() -> None:
    m = _model(LV_TINY, seed=3)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = m.forward_inference(x)
        # the last stage's tokens: rerun the stages on the kept tokens and take the heads by hand
        t = m.embed(x)
        for s, (start, end) in enumerate(m.stage_bounds()):
            if s > 0:
                idx = out.kept_indices[s - 1]
                rows = torch.cat([torch.zeros_like(idx[:, :1]), idx + 1], dim=1)
                t = torch.gather(t, 1, rows.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            t = m.run_blocks(t, start, end)
        n = m.norm(t)
        assert n.shape[1] == LV_TINY.keep_counts[-1] + 1
        want = m.head(n[:, 0]) + 0.5 * m.aux_head(n[:, 1:]).amax(dim=1)
    torch.testing.assert_close(out.logits, want)
    assert not torch.allclose(out.logits, m.head(n[:, 0]))  # the auxiliary term is there


def test_lvvit_training_distils_aux_logits_and_a_dense_model_trains_on_the_inference_rule() -> None:
    m = _model(LV_TINY)  # eval: BatchNorm uses its running statistics in both passes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        o = m.forward_train(x)
        assert o.tokens.shape == (2, LV_TINY.num_patches, 7) and o.logits.shape == (2, 7)
        dense = _model(LV_TINY.as_dense())
        d = dense.forward_train(x)
        torch.testing.assert_close(d.dense_prediction, dense.forward_inference(x).logits)
        t_logits, t_tokens = dense.forward_teacher(x)
        torch.testing.assert_close(t_logits, d.logits)
        torch.testing.assert_close(t_tokens, d.tokens)
    assert LV_TINY.token_distillation == "kl" and TINY.token_distillation == "mse"
    deit = _model(TINY).forward_train(torch.randn(2, 1, 28, 28))
    assert deit.tokens.shape == (2, TINY.num_patches, 32) and torch.equal(deit.dense_prediction, deit.logits)
