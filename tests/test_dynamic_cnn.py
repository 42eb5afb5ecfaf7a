"""DynamicCNN (issue 18): the official AdaConvNeXt's names and shapes, loading official, Facebook and timm files,
the eval pass's slow/fast split, the training pass's Gumbel mixing, and the official distillation loss.

The expected keys are written out from reading the official models/dyconvnext.py, not from our model."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import CheckpointError, ConfigError
from pipeline.spatial.config import SpatialConfig, spatial_config
from pipeline.spatial.convnext import AdaBlock, DynamicCNN, convnext_from_timm, load_dynamic_cnn
from pipeline.spatial.losses import SPATIAL_LOSS_WEIGHTS, spatial_distill_loss
from pipeline.spatial.sparse import Partition, rank_positions

SMALL = SpatialConfig("cnn-small-test", "convnext", (1, 1, 4, 1), (16, 32, 64, 128), img_size=64, num_classes=10)


def official_shapes(depths, dims, pruning_loc, classes, in_chans=3):
    """AdaConvNeXt's state dict (ConvNeXt_Teacher's with pruning_loc empty), as models/dyconvnext.py builds it."""
    s = {
        "downsample_layers.0.0.weight": (dims[0], in_chans, 4, 4), "downsample_layers.0.0.bias": (dims[0],),
        "downsample_layers.0.1.weight": (dims[0],), "downsample_layers.0.1.bias": (dims[0],),
    }
    for i in range(1, 4):
        s[f"downsample_layers.{i}.0.weight"] = s[f"downsample_layers.{i}.0.bias"] = (dims[i - 1],)
        s[f"downsample_layers.{i}.1.weight"] = (dims[i], dims[i - 1], 2, 2)
        s[f"downsample_layers.{i}.1.bias"] = (dims[i],)
    for i, (depth, d) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f"stages.{i}.{j}."
            s.update({p + "gamma": (d,), p + "dwconv.weight": (d, 1, 7, 7), p + "dwconv.bias": (d,),
                      p + "norm.weight": (d,), p + "norm.bias": (d,), p + "pwconv1.weight": (4 * d, d),
                      p + "pwconv1.bias": (4 * d,), p + "pwconv2.weight": (d, 4 * d), p + "pwconv2.bias": (d,)})
            if i == 2 and pruning_loc and j >= pruning_loc[0]:
                s.update({p + "fast_path.0.weight": (d,), p + "fast_path.0.bias": (d,),
                          p + "fast_path.1.weight": (d, d), p + "fast_path.1.bias": (d,), p + "fast_path_gamma": (d,)})
    s.update({"norm.weight": (dims[3],), "norm.bias": (dims[3],), "head.weight": (classes, dims[3]),
              "head.bias": (classes,)})
    d = dims[2]
    for k in range(len(pruning_loc)):
        p = f"score_predictor.{k}."
        s.update({p + "in_conv.0.weight": (d,), p + "in_conv.0.bias": (d,), p + "in_conv.1.weight": (d, d, 1, 1),
                  p + "in_conv.1.bias": (d,), p + "out_conv.0.weight": (d // 2, d, 1, 1), p + "out_conv.0.bias": (d // 2,),
                  p + "out_conv.2.weight": (d // 4, d // 2, 1, 1), p + "out_conv.2.bias": (d // 4,),
                  p + "out_conv.4.weight": (2, d // 4, 1, 1), p + "out_conv.4.bias": (2,)})
    return s


def shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, predictor_gain: float = 8.0) -> nn.Module:
    """Weights like trained ones: unit-gain matrices, layer scales 0.1-0.6 (not the 1e-6 init, which would hide
    every residual branch), norms near 1/0, small biases, predictors' last layer at a gain that spreads scores."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
        elif p.ndim == 1 and name.endswith("weight"):  # every 1-D weight is a norm's
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            gain = predictor_gain if ".out_conv.4." in name else 1.0
            p.copy_(torch.randn(p.shape, generator=g) * gain / p[0].numel() ** 0.5)
    return model


def images(n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- names and shapes ----
def test_small_model_has_the_official_names_and_shapes():
    assert shapes_of(DynamicCNN(SMALL)) == official_shapes((1, 1, 4, 1), (16, 32, 64, 128), (1, 2, 3), 10)


def test_small_teacher_has_the_official_names_and_shapes():
    assert shapes_of(DynamicCNN(SMALL.as_dense())) == official_shapes((1, 1, 4, 1), (16, 32, 64, 128), (), 10)


def test_convnext_t_state_dict_is_the_official_one():
    cfg = spatial_config("convnext-t")
    want = official_shapes((3, 3, 9, 3), (96, 192, 384, 768), (1, 2, 3), 1000)
    assert len(want) == 252  # 182 of ConvNeXt-T, 8 adaptive blocks x 5, 3 predictors x 10
    assert shapes_of(DynamicCNN(cfg)) == want
    assert shapes_of(DynamicCNN(cfg.as_dense())) == official_shapes((3, 3, 9, 3), (96, 192, 384, 768), (), 1000)


def test_convnext_s_adaptive_blocks_start_at_its_first_location():
    shapes = shapes_of(DynamicCNN(spatial_config("convnext-s", num_classes=5)))
    assert shapes == official_shapes((3, 3, 27, 3), (96, 192, 384, 768), (3, 6, 9), 5)
    assert "stages.2.2.fast_path_gamma" not in shapes and "stages.2.3.fast_path_gamma" in shapes


def test_timm_convnext_tiny_maps_onto_the_facebook_teacher():
    sd = timm.create_model("convnext_tiny", pretrained=False).state_dict()
    mapped = convnext_from_timm(sd)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == official_shapes((3, 3, 9, 3), (96, 192, 384, 768), (), 1000)
    assert mapped["stages.2.4.pwconv1.weight"] is sd["stages.2.blocks.4.mlp.fc1.weight"]
    assert mapped["downsample_layers.3.1.weight"] is sd["stages.3.downsample.1.weight"]
    assert mapped["norm.weight"] is sd["head.norm.weight"] and mapped["head.weight"] is sd["head.fc.weight"]


# ---- loading ----
def save_official(path, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    torch.save({"model": sd}, path)
    return sd


def test_official_release_loads_with_every_key_mapped(tmp_path):
    sd = save_official(tmp_path / "release.pth", official_shapes((1, 1, 4, 1), (16, 32, 64, 128), (1, 2, 3), 10))
    model = load_dynamic_cnn(tmp_path / "release.pth", SMALL)
    own = model.state_dict()
    assert set(own) == set(sd)
    assert all(torch.equal(own[k], v) for k, v in sd.items())
    assert not model.training


def test_teacher_file_initialises_a_student_only_when_asked(tmp_path):
    sd = save_official(tmp_path / "teacher.pth", official_shapes((1, 1, 4, 1), (16, 32, 64, 128), (), 10))
    with pytest.raises(CheckpointError, match="dense"):
        load_dynamic_cnn(tmp_path / "teacher.pth", SMALL)
    model = load_dynamic_cnn(tmp_path / "teacher.pth", SMALL, from_dense=True)
    assert torch.equal(model.state_dict()["stages.2.3.pwconv2.weight"], sd["stages.2.3.pwconv2.weight"])


def small_timm(seed=0):
    m = timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 4, 1), dims=(16, 32, 64, 128), num_classes=10)
    return randomize_(m, seed).eval()


def test_dense_model_equals_timm_convnext_on_the_same_weights(tmp_path):
    ref = small_timm()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = load_dynamic_cnn(tmp_path / "timm.pth", SMALL.as_dense())
    x = images(3)
    with torch.no_grad():
        want = ref(x)
        feats = ref.forward_features(x)
        logits, featmap = ours.forward_teacher(x)
        eval_logits = ours(x)
        want_map = F.layer_norm(feats.permute(0, 2, 3, 1), (128,), ref.head.norm.weight, ref.head.norm.bias, 1e-6)
    scale = float(want.abs().max())
    assert scale > 0.5
    assert float((logits - want).abs().max()) <= 1e-5 * scale
    assert torch.equal(logits, eval_logits)
    assert featmap.shape == (3, 2, 2, 128)
    assert float((featmap - want_map).abs().max()) <= 1e-4


def test_other_architectures_are_refused_in_one_line(tmp_path):
    swin = {"patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
            "layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(169, 3), "head.weight": torch.zeros(10, 768)}
    vit = {"cls_token": torch.zeros(1, 1, 192), "blocks.0.norm1.weight": torch.zeros(192), "head.weight": torch.zeros(10, 192)}
    deeper = {k: torch.zeros(s) for k, s in official_shapes((1, 1, 6, 1), (16, 32, 64, 128), (1, 2, 3), 10).items()}
    for name, sd, words in [("swin", swin, "a Swin"), ("vit", vit, "a ViT"), ("deeper", deeper, "depths [1, 1, 6, 1]")]:
        torch.save({"model": sd}, tmp_path / f"{name}.pth")
        with pytest.raises(CheckpointError) as e:
            load_dynamic_cnn(tmp_path / f"{name}.pth", SMALL)
        msg = str(e.value)
        assert "\n" not in msg and words in msg and "cnn-small-test (dims [16, 32, 64, 128], depths [1, 1, 4, 1]" in msg


def test_a_swin_configuration_is_refused():
    with pytest.raises(ConfigError, match="convnext"):
        DynamicCNN(spatial_config("swin-t"))


# ---- eval: the slow/fast split ----
def test_eval_puts_exactly_keep_counts_positions_on_the_slow_path():
    model = randomize_(DynamicCNN(SMALL)).eval()
    seen: list[tuple[int, str, int]] = []
    for j, blk in enumerate(model.third_stage()):
        if isinstance(blk, AdaBlock):
            blk.pwconv1.register_forward_hook(lambda m, i, o, j=j: seen.append((j, "slow", i[0].shape[1])))
            blk.fast_path.register_forward_hook(lambda m, i, o, j=j: seen.append((j, "fast", i[0].shape[1])))
    with torch.no_grad():
        out = model.forward_inference(images(2))
    N, (k1, k2, k3) = SMALL.positions, SMALL.keep_counts
    assert (N, k1, k2, k3) == (16, 11, 7, 4)
    assert seen == [(1, "slow", k1), (1, "fast", N - k1), (2, "slow", k2), (2, "fast", N - k2),
                    (3, "slow", k3), (3, "fast", N - k3)]
    assert [tuple(p.shape) for p in out.kept_positions] == [(2, k1), (2, k2), (2, k3)]
    assert all(len(set(row.tolist())) == row.numel() for p in out.kept_positions for row in p)


def test_kept_positions_are_the_official_top_log_p_keep():
    model = randomize_(DynamicCNN(SMALL)).eval()
    with torch.no_grad():
        out = model.forward_inference(images(3))
        for s, kept in enumerate(out.kept_positions, start=1):
            logp = model.predictor(s)(out.stage_inputs[s])[:, 0].flatten(1)  # the official eval score
            k = SMALL.keep_counts[s - 1]
            for b in range(3):
                ranked = sorted(range(SMALL.positions), key=lambda p: -float(logp[b, p]))
                assert float(logp[b, ranked[k - 1]]) > float(logp[b, ranked[k]])  # no tie at the boundary
                assert set(kept[b].tolist()) == set(ranked[:k])


def test_ties_go_to_the_lower_position():
    model = randomize_(DynamicCNN(SMALL)).eval()
    with torch.no_grad():
        for pred in model.score_predictor:
            pred.out_conv[4].weight.zero_()
            pred.out_conv[4].bias.zero_()
        out = model.forward_inference(images(2))
    for kept, k in zip(out.kept_positions, SMALL.keep_counts):
        assert torch.equal(kept, torch.arange(k).expand(2, k))
    part = rank_positions(torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]), 2)
    assert part.slow.tolist() == [[1, 2]] and part.fast.tolist() == [[4, 0, 3]]
    # a full-size map of equal scores (an unstable sort does not keep index order at this size)
    part = rank_positions(torch.zeros(2, 196), 137)
    assert torch.equal(part.order, torch.arange(196).expand(2, 196))


def test_sparse_block_takes_each_position_through_its_path():
    blk = randomize_(AdaBlock(8), seed=3).eval()
    x = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(4))
    order = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(5 + b)) for b in range(2)])
    part = Partition(order[:, :4], order[:, 4:])
    with torch.no_grad():
        got = blk.forward_sparse(x, part)
        y = blk.dwconv(x).permute(0, 2, 3, 1)
        slow, fast = blk.forward_ffn(y), blk.forward_fast(y)
    is_slow = torch.zeros(2, 9, dtype=torch.bool)
    is_slow[torch.arange(2)[:, None], part.slow] = True
    want = x + torch.where(is_slow.view(2, 3, 3, 1), slow, fast).permute(0, 3, 1, 2)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(slow, fast, atol=1e-2)


def test_all_positions_on_the_slow_path_is_the_dense_model():
    cfg = SMALL.replace(pruning_loc=(1,), keep_ratio=1.0)
    model = randomize_(DynamicCNN(cfg)).eval()
    with torch.no_grad():
        sparse = model(images(2))
        dense, _ = model.forward_teacher(images(2))
    assert cfg.keep_counts == [cfg.positions]
    assert torch.allclose(sparse, dense, atol=1e-5)


def test_batch_equals_single_images():
    model = randomize_(DynamicCNN(SMALL)).eval()
    x = images(4)
    with torch.no_grad():
        batch = model.forward_inference(x)
        singles = [model.forward_inference(x[i : i + 1]) for i in range(4)]
    assert torch.allclose(batch.logits, torch.cat([s.logits for s in singles]), atol=1e-5)
    for s, kept in enumerate(batch.kept_positions):
        assert torch.equal(kept, torch.cat([single.kept_positions[s] for single in singles]))


# ---- training ----
def location_noise(B: int, keep: bool, cfg: SpatialConfig = SMALL) -> list[torch.Tensor]:
    """Gumbel noise that forces every decision: +100 on the keep (or the drop) channel."""
    g = cfg.sparse_grid
    n = torch.zeros(B, 2, g, g)
    n[:, 0 if keep else 1] = 100.0
    return [n.clone() for _ in cfg.pruning_loc]


def test_training_with_every_position_kept_is_the_dense_model():
    model = randomize_(DynamicCNN(SMALL)).train()
    x = images(2)
    out = model(x, gumbel_noise=location_noise(2, keep=True))
    with torch.no_grad():
        dense, featmap = model.forward_teacher(x)
    assert all(torch.equal(d, torch.ones(2, SMALL.positions)) for d in out.decisions)
    assert torch.allclose(out.logits, dense, atol=1e-5) and torch.allclose(out.featmap, featmap, atol=1e-5)
    dropped = model(x, gumbel_noise=location_noise(2, keep=False))
    assert all(float(d.detach().abs().max()) == 0.0 for d in dropped.decisions)
    assert not torch.allclose(dropped.logits, dense, atol=1e-2)


def official_training_forward(model: DynamicCNN, x: torch.Tensor, noise: list[torch.Tensor]):
    """The official AdaConvNeXt training pass, transcribed from models/dyconvnext.py on our submodules: the
    predictor scores the streams mixed by the previous decision; each adaptive block convolves the map mixed by the
    current decision, the slow stream takes the result where the decision keeps and its own input elsewhere, the
    fast stream the reverse."""
    blocks, loc = model.third_stage(), SMALL.pruning_loc
    h = model.stem(x)
    for blk in blocks[: loc[0]]:
        h = blk(h)
    slow_in, fast_in, mask, masks = h, h, None, []
    for j in range(loc[0], len(blocks)):
        if j in loc:
            s = loc.index(j)
            seen = slow_in if mask is None else slow_in * mask + fast_in * (1 - mask)
            log_p = model.predictor(s + 1)(seen)
            soft = (log_p + noise[s]).softmax(dim=1)
            hard = (soft[:, :1] > soft[:, 1:]).float()
            mask = hard - soft[:, :1].detach() + soft[:, :1]
            masks.append(mask)
        blk = blocks[j]
        conv = blk.dwconv(slow_in * mask + fast_in * (1 - mask))
        a = (conv * mask + slow_in * (1 - mask)).permute(0, 2, 3, 1)
        b = (conv * (1 - mask) + fast_in * mask).permute(0, 2, 3, 1)
        slow_in = slow_in + blk.forward_ffn(a).permute(0, 3, 1, 2)
        fast_in = fast_in + blk.forward_fast(b).permute(0, 3, 1, 2)
    h = model.tail(slow_in * mask + fast_in * (1 - mask))
    return model.head(model.norm(h.mean(dim=(-2, -1)))), masks


def test_training_pass_is_the_official_mixing_when_decisions_change():
    model = randomize_(DynamicCNN(SMALL)).train()
    x = images(2)
    g = torch.Generator().manual_seed(11)
    noise = [-torch.empty(2, 2, 4, 4).exponential_(generator=g).log() for _ in range(3)]
    out = model(x, gumbel_noise=noise)
    with torch.no_grad():
        want, masks = official_training_forward(model, x, noise)
    d1, d2 = out.decisions[0] > 0.5, out.decisions[1] > 0.5
    assert bool((d1 & ~d2).any()) and bool((~d1 & d2).any())  # positions change path between locations
    assert all(torch.equal(d, m.flatten(1)) for d, m in zip(out.decisions, masks))
    assert torch.allclose(out.logits, want, atol=1e-5)


def test_given_noise_reproduces_and_drawn_noise_varies():
    model = randomize_(DynamicCNN(SMALL)).train()
    x = images(2)
    g = torch.Generator().manual_seed(7)
    noise = [-torch.empty(2, 2, 4, 4).exponential_(generator=g).log() for _ in range(3)]
    a, b = model(x, gumbel_noise=noise), model(x, gumbel_noise=[n.clone() for n in noise])
    assert torch.equal(a.logits, b.logits) and all(torch.equal(p, q) for p, q in zip(a.decisions, b.decisions))
    torch.manual_seed(0)
    c = model(x)
    assert any(not torch.equal(p, q) for p, q in zip(a.decisions, c.decisions))


def test_gradients_reach_every_predictor_and_fast_path_through_the_logits():
    model = randomize_(DynamicCNN(SMALL)).train()
    torch.manual_seed(0)
    out = model(images(2))
    assert all(0 < float(d.detach().mean()) < 1 for d in out.decisions)  # both paths in use at every location
    out.logits.square().sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("score_predictor.") or ".fast_path" in name:
            assert p.grad is not None and float(p.grad.abs().max()) > 0, name


# ---- the official loss ----
def test_loss_weights_are_the_official_convnext_ones():
    w = SPATIAL_LOSS_WEIGHTS
    assert (w.ce, w.ratio, w.distill_kl, w.distill_token) == (1.0, 10.0, 0.5, 0.5)


def test_loss_terms_by_hand():
    B, K = 2, 4
    logits = torch.zeros(B, K)
    decisions = [torch.ones(B, 16), torch.zeros(B, 16, 1)]
    featmap = torch.zeros(B, 2, 2, 8)
    terms = spatial_distill_loss(logits, featmap, decisions, torch.tensor([0, 3]), torch.zeros(B, K),
                                 featmap + 2.0, [0.7, 0.5])
    ratio = ((1 - 0.7) ** 2 + (0 - 0.5) ** 2) / 2
    assert math.isclose(float(terms.ce), math.log(K), rel_tol=1e-6)
    assert math.isclose(float(terms.ratio), ratio, rel_tol=1e-6)
    assert float(terms.distill_kl) == 0.0 and math.isclose(float(terms.distill_token), 4.0)
    assert math.isclose(float(terms.total), math.log(K) + 10 * ratio + 0.5 * 4.0, rel_tol=1e-6)


def test_loss_of_a_student_and_its_teacher_reaches_the_predictors():
    model = randomize_(DynamicCNN(SMALL)).train()
    teacher = randomize_(DynamicCNN(SMALL.as_dense()), seed=1).eval()
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        t_logits, t_map = teacher.forward_teacher(x)
    torch.manual_seed(0)
    out = model(x)
    terms = spatial_distill_loss(out.logits, out.featmap, out.decisions, y, t_logits, t_map, SMALL.stage_ratios)
    terms.total.backward()
    assert all(p.grad is not None for p in model.predictor_parameters())
    f = terms.as_floats()
    assert f["distill_kl"] > 0 and f["distill_token"] > 0 and f["ratio"] > 0
