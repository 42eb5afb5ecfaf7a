"""DynamicSwin (issue 18): the official AdaSwinTransformer / SwinTransformer_Teacher keys, timm's Swin names, the
inference split at each pruning location, training with given Gumbel noise, a stage graph that exports, and the
one-line refusal of another architecture's file.

The official key layout is written out here from a reading of raoyongming/DynamicViT models/dyswin.py (commit
1322e62), not from our model: every block has norm1, attn.{relative_position_bias_table, relative_position_index,
qkv, proj}, norm2, mlp.{fc1, fc2}; shifted blocks (odd index, map wider than the window) a persistent attn_mask;
the third stage's blocks from the first pruning location on a fastmlp.fc1.{0: LayerNorm, 1: Linear}; its
score_predictor.k.{in_conv.{0,1}, out_conv.{0,2,4}}; every stage but the last a downsample.{norm, reduction}.
The buffers are computed here as the official code does (a region label per slice of the rolled map).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from pipeline.errors import CheckpointError, ConfigError
from pipeline.spatial.config import SpatialConfig, spatial_config
from pipeline.spatial.swin import DynamicSwin, load_dynamic_swin, swin_from_timm

# img 64 and window 2: maps 16, 8, 4, 2; the third stage's 4x4 map divides into 2x2 windows (shift 1), the
# fourth's 2x2 map is one window (no shift), as the 7x7 one of swin-t at 224.
REDUCED = SpatialConfig("swin-reduced", "swin", (2, 2, 4, 2), (16, 32, 64, 128), (1, 2, 4, 8), window_size=2,
                        img_size=64, num_classes=10)


# ---- the official layout, from models/dyswin.py ----
def official_swin_shapes(embed: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int, img: int,
                         classes: int, pruning_loc: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (embed, 3, 4, 4), "patch_embed.proj.bias": (embed,),
        "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,),
    }
    for i, depth in enumerate(depths):
        dim, res = embed * 2**i, img // 4 // 2**i
        w = min(res, window)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            for n in ("norm1", "norm2"):
                s[p + n + ".weight"] = s[p + n + ".bias"] = (dim,)
            s[p + "attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, heads[i])
            s[p + "attn.relative_position_index"] = (w * w, w * w)
            s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
            s[p + "attn.proj.weight"], s[p + "attn.proj.bias"] = (dim, dim), (dim,)
            s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
            s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
            if j % 2 == 1 and res > window:
                s[p + "attn_mask"] = ((res // w) ** 2, w * w, w * w)
            if i == 2 and pruning_loc and j >= pruning_loc[0]:
                s[p + "fastmlp.fc1.0.weight"] = s[p + "fastmlp.fc1.0.bias"] = (dim,)
                s[p + "fastmlp.fc1.1.weight"], s[p + "fastmlp.fc1.1.bias"] = (dim, dim), (dim,)
        if i < 3:
            s[f"layers.{i}.downsample.norm.weight"] = s[f"layers.{i}.downsample.norm.bias"] = (4 * dim,)
            s[f"layers.{i}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
        if i == 2:
            for k in range(len(pruning_loc)):
                p = f"layers.2.score_predictor.{k}."
                s[p + "in_conv.0.weight"] = s[p + "in_conv.0.bias"] = (dim,)
                s[p + "in_conv.1.weight"], s[p + "in_conv.1.bias"] = (dim, dim), (dim,)
                s[p + "out_conv.0.weight"], s[p + "out_conv.0.bias"] = (dim // 2, dim), (dim // 2,)
                s[p + "out_conv.2.weight"], s[p + "out_conv.2.bias"] = (dim // 4, dim // 2), (dim // 4,)
                s[p + "out_conv.4.weight"], s[p + "out_conv.4.bias"] = (2, dim // 4), (2,)
    top = embed * 8
    s["norm.weight"] = s["norm.bias"] = (top,)
    s["head.weight"], s["head.bias"] = (classes, top), (classes,)
    return s


def shapes_of(cfg: SpatialConfig) -> dict[str, tuple[int, ...]]:
    return official_swin_shapes(cfg.dims[0], cfg.depths, cfg.num_heads, cfg.window_size, cfg.img_size,
                                cfg.num_classes, cfg.pruning_loc)


def official_index(w: int) -> Tensor:
    """relative_position_index, pair by pair."""
    pos = [(y, x) for y in range(w) for x in range(w)]
    return torch.tensor([[(a[0] - b[0] + w - 1) * (2 * w - 1) + (a[1] - b[1] + w - 1) for b in pos] for a in pos])


def official_mask(res: int, w: int) -> Tensor:
    """attn_mask as dyswin.py builds it: the rolled map's nine slices labelled 0..8, windows compared pairwise."""
    shift = w // 2
    img = torch.zeros(res, res)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    for n, (h, v) in enumerate((h, v) for h in cuts for v in cuts):
        img[h, v] = n
    wins = img.reshape(res // w, w, res // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
    diff = wins.unsqueeze(1) - wins.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def official_release(cfg: SpatialConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random weights in the official layout (what torch.save({'model': model.state_dict()}) writes), buffers
    computed the official way."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    for k, shape in shapes_of(cfg).items():
        if k.endswith("relative_position_index"):
            sd[k] = official_index(round(shape[0] ** 0.5))
        elif k.endswith("attn_mask"):
            i = int(k.split(".")[1])
            sd[k] = official_mask(cfg.img_size // 4 // 2**i, cfg.window_size)
        else:
            sd[k] = torch.randn(shape, generator=g) * (0.1 if len(shape) > 1 else 0.5)
    return sd


def save(tmp_path: Path, name: str, sd: dict[str, Tensor], wrap: str | None = "model") -> Path:
    path = tmp_path / name
    torch.save({wrap: sd} if wrap else sd, path)
    return path


# ---- keys and loading ----
@pytest.mark.parametrize("cfg", [REDUCED, REDUCED.as_dense(), spatial_config("swin-t"),
                                 spatial_config("swin-t", dense=True)], ids=["reduced", "reduced-dense", "swin-t",
                                                                             "swin-t-dense"])
def test_state_dict_is_the_official_layout(cfg: SpatialConfig) -> None:
    ours = {k: tuple(v.shape) for k, v in DynamicSwin(cfg).state_dict().items()}
    assert ours == shapes_of(cfg)


def test_buffers_equal_the_official_ones() -> None:
    sd = DynamicSwin(spatial_config("swin-t")).state_dict()
    assert torch.equal(sd["layers.0.blocks.0.attn.relative_position_index"], official_index(7))
    for i, res in enumerate((56, 28, 14)):
        assert torch.equal(sd[f"layers.{i}.blocks.1.attn_mask"], official_mask(res, 7))
    assert "layers.3.blocks.1.attn_mask" not in sd  # 7x7 map: one window, no shift


def test_official_release_loads_with_every_key_mapped(tmp_path: Path) -> None:
    sd = official_release(REDUCED)
    model = load_dynamic_swin(save(tmp_path, "dyswin.pth", sd), REDUCED)
    own = model.state_dict()
    assert own.keys() == sd.keys()
    assert all(torch.equal(own[k], sd[k].to(own[k].dtype)) for k in sd)


def test_microsoft_teacher_loads_as_the_dense_model_and_may_start_a_student(tmp_path: Path) -> None:
    dense = {k: v for k, v in official_release(REDUCED).items() if "score_predictor" not in k and "fastmlp" not in k}
    path = save(tmp_path, "swin_tiny.pth", dense)
    teacher = load_dynamic_swin(path, REDUCED.as_dense())
    assert teacher.state_dict().keys() == dense.keys()
    with pytest.raises(CheckpointError, match="dense.*pruning before blocks"):
        load_dynamic_swin(path, REDUCED)
    student = load_dynamic_swin(path, REDUCED, from_dense=True)
    assert torch.equal(student.state_dict()["layers.2.blocks.3.mlp.fc2.weight"], dense["layers.2.blocks.3.mlp.fc2.weight"])


def timm_swin(cfg: SpatialConfig) -> nn.Module:
    import timm

    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=cfg.img_size,
                             window_size=cfg.window_size, embed_dim=cfg.dims[0], depths=cfg.depths,
                             num_heads=cfg.num_heads, num_classes=cfg.num_classes).eval()


def test_timm_names_map_onto_the_official_ones_at_full_size() -> None:
    import timm

    tsd = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).state_dict()
    mapped = swin_from_timm(tsd)
    ours = DynamicSwin(spatial_config("swin-t", dense=True)).state_dict()
    buffers = {k for k in ours if k.endswith(("relative_position_index", "attn_mask"))}
    assert mapped.keys() == ours.keys() - buffers
    assert all(mapped[k].shape == ours[k].shape for k in mapped)


def test_timm_file_loads_and_the_dense_model_equals_timm(tmp_path: Path) -> None:
    cfg = REDUCED.as_dense()
    ref = timm_swin(cfg)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = load_dynamic_swin(save(tmp_path, "timm.pth", ref.state_dict(), wrap=None), cfg).eval()
    images = torch.randn(3, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        want = ref(images)
        logits, _ = model.forward_teacher(images)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(images), want, atol=1e-5, rtol=1e-5)


def test_other_architectures_are_refused_in_one_line(tmp_path: Path) -> None:
    convnext = {"downsample_layers.0.0.weight": torch.zeros(96, 3, 4, 4), "stages.0.0.dwconv.weight":
                torch.zeros(96, 1, 7, 7), "stages.0.0.gamma": torch.zeros(96), "head.weight": torch.zeros(1000, 768)}
    with pytest.raises(CheckpointError, match=r"ConvNeXt checkpoint, not a Swin one for swin-t") as e:
        load_dynamic_swin(save(tmp_path, "convnext.pth", convnext), spatial_config("swin-t"))
    assert "\n" not in str(e.value)
    small = {k: v for k, v in official_release(REDUCED).items()}
    other = REDUCED.replace(name="wider", dims=(32, 64, 128, 256))
    with pytest.raises(CheckpointError, match=r"embed_dim 16, depths \[2, 2, 4, 2\], 3 pruning locations, not wider "
                                              r"\(embed_dim 32") as e:
        load_dynamic_swin(save(tmp_path, "small.pth", small), other)
    assert "\n" not in str(e.value)


def test_configuration_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="DynamicSwin needs a swin one"):
        DynamicSwin(spatial_config("convnext-t"))
    with pytest.raises(ConfigError, match="does not divide into 3x3 windows"):
        DynamicSwin(REDUCED.replace(window_size=3))


# ---- inference ----
def loaded(cfg: SpatialConfig = REDUCED, seed: int = 0) -> DynamicSwin:
    model = DynamicSwin(cfg).eval()
    model.load_state_dict(official_release(cfg, seed))
    return model


def test_each_location_puts_exactly_keep_counts_positions_on_the_slow_path() -> None:
    model = loaded()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_inference(images)
        assert [k.shape[1] for k in out.kept_positions] == REDUCED.keep_counts == [11, 7, 4]
        for s, x in enumerate(out.stage_inputs[1:], start=1):
            part = model.select_positions(s, x)
            assert torch.equal(part.slow, out.kept_positions[s - 1])
            assert torch.equal(part.order.sort(dim=1).values, torch.arange(16).expand(3, -1))
            scores = model.keep_scores(s, x)
            assert (scores.gather(1, part.slow).min(1).values >= scores.gather(1, part.fast).max(1).values).all()
            # The block at the location: slow positions take the MLP, the others the fast path.
            blk = model.sparse_stage.block(REDUCED.pruning_loc[s - 1])
            got, a = blk(x, part), blk.attend(x)
            slow_ref, fast_ref = a + blk.mlp(blk.norm2(a)), a + blk.fast(a)
            for b in range(3):
                on_slow = torch.isclose(got[b], slow_ref[b], atol=1e-6).all(dim=1)
                on_fast = torch.isclose(got[b], fast_ref[b], atol=1e-6).all(dim=1)
                assert on_slow[part.slow[b]].all() and on_fast[part.fast[b]].all()
                assert int(on_slow.sum()) == REDUCED.keep_counts[s - 1]


def test_ties_go_to_the_lower_position() -> None:
    model = loaded()
    x = torch.randn(1, 1, 64).expand(2, 16, 64)  # every position alike: all scores tie
    part = model.select_positions(1, x)
    assert part.slow.tolist() == [list(range(11))] * 2


def test_batch_results_equal_single_image_results() -> None:
    model = loaded()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        batch = model.forward_inference(images)
        for b in range(3):
            one = model.forward_inference(images[b : b + 1])
            torch.testing.assert_close(one.logits, batch.logits[b : b + 1], atol=1e-5, rtol=1e-5)
            for s in range(3):
                assert set(one.kept_positions[s][0].tolist()) == set(batch.kept_positions[s][b].tolist())
    assert len({tuple(sorted(k.tolist())) for k in batch.kept_positions[0]}) > 1  # the images differ in what they keep


def test_dense_model_ignores_the_split() -> None:
    sparse = loaded()
    dense = DynamicSwin(REDUCED.as_dense()).eval()
    dense.load_state_dict({k: v for k, v in sparse.state_dict().items() if k in dense.state_dict()})
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dense(images), sparse.forward_teacher(images)[0])
        assert not torch.allclose(dense(images), sparse(images), atol=1e-3)


# ---- training ----
def test_training_mixes_both_paths_and_gradients_reach_the_predictors() -> None:
    model = loaded().train()
    images = torch.randn(4, 3, 64, 64)
    noise = [-torch.empty(4, 16, 2).exponential_().log() for _ in range(3)]
    out = model(images, gumbel_noise=noise)
    assert out.tokens.shape == (4, 4, 128) and [d.shape for d in out.decisions] == [(4, 16, 1)] * 3
    assert all(0 < float(d.detach().mean()) < 1 and set(d.unique().tolist()) <= {0.0, 1.0} for d in out.decisions)
    ratio = sum(((d.mean(dim=1) - r) ** 2).mean() for d, r in zip(out.decisions, REDUCED.stage_ratios, strict=True))
    (out.logits.logsumexp(-1).mean() + out.tokens.pow(2).mean() + ratio).backward()
    for k in range(3):
        grads = [p.grad for p in model.sparse_stage.predictor(k).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), f"predictor {k} got no gradient"
    again = model(images, gumbel_noise=noise)
    torch.testing.assert_close(again.logits, out.logits)
    other = model(images, gumbel_noise=[n.flip(1) for n in noise])
    assert any(not torch.equal(a, b) for a, b in zip(other.decisions, out.decisions, strict=True))


def test_training_with_all_positions_slow_is_the_dense_model() -> None:
    model = loaded().train()
    images = torch.randn(2, 3, 64, 64)
    keep = torch.tensor([1e4, -1e4]).expand(2, 16, 2)  # Gumbel noise that forces every decision to 1
    out = model(images, gumbel_noise=[keep] * 3)
    assert all(bool((d == 1).all()) for d in out.decisions)
    model.eval()
    with torch.no_grad():
        logits, featmap = model.forward_teacher(images)
    torch.testing.assert_close(out.logits.detach(), logits)
    torch.testing.assert_close(out.tokens.detach(), featmap)


# ---- a stage graph exports ----
class LocationStage(nn.Module):
    """What a stage graph s >= 1 computes: rank at the location, run its blocks with that split."""

    def __init__(self, model: DynamicSwin, s: int) -> None:
        super().__init__()
        self.model, self.s = model, s

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        part = self.model.select_positions(self.s, x)
        return self.model.run_blocks(x, *self.model.stage_bounds()[self.s], part), part.slow


def test_a_pruning_stage_exports_with_topk_gather_scatter(tmp_path: Path) -> None:
    import warnings

    import onnx
    import onnxruntime as ort

    model = loaded()
    with torch.no_grad():
        x = model.forward_inference(torch.randn(3, 3, 64, 64)).stage_inputs[3]
    path = tmp_path / "stage3.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LocationStage(model, 3), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["map_3"], output_names=["map_out", "kept_positions_3"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"TopK", "GatherElements", "ScatterElements"} <= ops and "ScatterND" not in ops
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"map_3": x.numpy()})
    with torch.no_grad():
        want, kept = LocationStage(model, 3)(x)
    np.testing.assert_allclose(got[0], want.numpy(), atol=1e-5, rtol=1e-5)
    assert [set(r) for r in got[1].tolist()] == [set(r) for r in kept.tolist()]


def test_training_block_keeps_two_streams_as_the_official_code() -> None:
    """AdaSwinTransformerBlock.forward in training: x = x1*m + x2*(1-m), attention, then the MLP reads the new map
    where m = 1 and the previous slow stream elsewhere, the fast path the reverse. A position whose decision flips
    at a later location therefore resumes its stale stream; a single mixed stream would not."""
    blk = loaded().sparse_stage.block(2)
    x1, x2 = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    mask = (torch.rand(2, 16, 1) > 0.5).float()
    with torch.no_grad():
        slow, fast = blk.forward_mixed(x1, x2, mask)
        a = blk.attend(x1 * mask + x2 * (1 - mask))
        torch.testing.assert_close(slow, a + blk.mlp(blk.norm2(a * mask + x1 * (1 - mask))))
        torch.testing.assert_close(fast, a + blk.fast(a * (1 - mask) + x2 * mask))
        assert not torch.allclose(slow, a + blk.mlp(blk.norm2(a)), atol=1e-4)
