"""The official DynamicViT zoo as the tests see it (issue 17): the official state-dict layouts, random weights in them,
reduced configurations, and the export-against-PyTorch check, shared by tests/test_model_zoo_deit.py and
tests/test_model_zoo_lvvit.py.

The key layouts are written out here from a reading of raoyongming/DynamicViT (commit
1322e626d1e9eca18cc150569908fb4af29e15f7) models/dyvit.py and models/dylvvit.py, not from our model, so that a
renamed or reshaped parameter in pipeline/model.py shows up as a key that does not map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.checkpoint import load_model
from pipeline.config import PRESETS, ModelConfig, model_config
from pipeline.export import export
from pipeline.graphset import GraphSet
from pipeline.runners.chain import StageChain
from pipeline.runners.pytorch import PyTorchRunner

OFFICIAL_COMMIT = "1322e626d1e9eca18cc150569908fb4af29e15f7"


def _predictor_shapes(E: int, pruning_points: int) -> dict[str, tuple[int, ...]]:
    """score_predictor = ModuleList of PredictorLG(E), one per pruning location (the same class in dyvit.py and
    dylvvit.py): in_conv = Sequential(LayerNorm(E), Linear(E, E), GELU) -> in_conv.0, in_conv.1; out_conv =
    Sequential(Linear(E, E/2), GELU, Linear(E/2, E/4), GELU, Linear(E/4, 2), LogSoftmax) -> out_conv.0, .2, .4"""
    shapes: dict[str, tuple[int, ...]] = {}
    for j in range(pruning_points):
        p = f"score_predictor.{j}."
        shapes.update({
            p + "in_conv.0.weight": (E,), p + "in_conv.0.bias": (E,),
            p + "in_conv.1.weight": (E, E), p + "in_conv.1.bias": (E,),
            p + "out_conv.0.weight": (E // 2, E), p + "out_conv.0.bias": (E // 2,),
            p + "out_conv.2.weight": (E // 4, E // 2), p + "out_conv.2.bias": (E // 4,),
            p + "out_conv.4.weight": (2, E // 4), p + "out_conv.4.bias": (2,),
        })
    return shapes


def _block_shapes(i: int, E: int, hidden: int, qkv_bias: bool) -> dict[str, tuple[int, ...]]:
    b = f"blocks.{i}."
    qkv: dict[str, tuple[int, ...]] = {b + "attn.qkv.weight": (3 * E, E)}
    if qkv_bias:
        qkv[b + "attn.qkv.bias"] = (3 * E,)
    return {
        b + "norm1.weight": (E,), b + "norm1.bias": (E,),
        **qkv,
        b + "attn.proj.weight": (E, E), b + "attn.proj.bias": (E,),
        b + "norm2.weight": (E,), b + "norm2.bias": (E,),
        b + "mlp.fc1.weight": (hidden, E), b + "mlp.fc1.bias": (hidden,),
        b + "mlp.fc2.weight": (E, hidden), b + "mlp.fc2.bias": (E,),
    }


def official_state_dict_shapes(embed: int, depth: int, patch: int, in_chans: int, img: int, classes: int,
                               mlp_ratio: float, pruning_points: int) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of the official VisionTransformerDiffPruning (models/dyvit.py):

    - patch_embed = PatchEmbed: proj = Conv2d(in_chans, embed_dim, patch, patch)  -> patch_embed.proj.{weight,bias}
    - cls_token [1, 1, E]; pos_embed [1, num_patches + 1, E]  (pos_drop: Dropout, no parameters)
    - blocks = ModuleList of Block: norm1 = LayerNorm(E, eps=1e-6); attn = Attention: qkv = Linear(E, 3E,
      bias=qkv_bias=True), proj = Linear(E, E) (attn_drop/proj_drop: Dropout); drop_path: DropPath/Identity;
      norm2 = LayerNorm; mlp = Mlp: fc1 = Linear(E, E*mlp_ratio), act = GELU, fc2 = Linear(E*mlp_ratio, E)
    - norm = LayerNorm(E); pre_logits = nn.Identity() (representation_size=None): no parameters;
      head = Linear(E, num_classes)
    - score_predictor: see _predictor_shapes
    No buffers are registered anywhere, so these are all of its state_dict() keys.
    """
    E, hidden, tokens = embed, int(embed * mlp_ratio), (img // patch) ** 2 + 1
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, E),
        "pos_embed": (1, tokens, E),
        "patch_embed.proj.weight": (E, in_chans, patch, patch),
        "patch_embed.proj.bias": (E,),
    }
    for i in range(depth):
        shapes.update(_block_shapes(i, E, hidden, qkv_bias=True))
    shapes.update({"norm.weight": (E,), "norm.bias": (E,), "head.weight": (classes, E), "head.bias": (classes,)})
    shapes.update(_predictor_shapes(E, pruning_points))
    return shapes


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def official_lvvit_state_dict_shapes(embed: int, depth: int, patch: int, in_chans: int, img: int, classes: int,
                                     mlp_ratio: float, pruning_points: int) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of the official LVViTDiffPruning (models/dylvvit.py) as infer.py and main.py
    build it (p_emb='4_2', return_dense=True, qkv_bias left at its default False, head_dim None, order None):

    - cls_token [1, 1, E]; pos_embed [1, num_patches + 1, E], num_patches = (img // patch)^2
    - patch_embed = PatchEmbed4_2: conv1 = Conv2d(in_chans, 64, 7, stride 2, padding 3, bias=False), bn1 =
      BatchNorm2d(64), relu (no parameters), conv2 = Conv2d(64, 64, 3, padding 1, bias=False), bn2, conv3 = Conv2d(64,
      64, 3, padding 1, bias=False), bn3, proj = Conv2d(64, E, patch // 2, stride patch // 2) with its bias. Each
      BatchNorm2d holds weight, bias and the buffers running_mean, running_var, num_batches_tracked (a 0-d int64).
    - blocks = ModuleList of Block(skip_lam=2): norm1 = LayerNorm(E) (nn.LayerNorm's eps 1e-5); attn = Attention:
      qkv = Linear(E, head_dim * num_heads * 3 = 3E, bias=False), proj = Linear(3E/3, E) with bias; norm2; mlp =
      Mlp(group=1): fc1 = Linear(E, int(E * mlp_ratio)), fc2 back to E
    - norm = LayerNorm(E); head = Linear(E, num_classes)
    - score_predictor: PredictorLG per pruning location (see _predictor_shapes)
    - aux_head = Linear(E, num_classes) (return_dense=True); mix_token adds only a float attribute (beta)
    The official dense teacher LVViT_Teacher (and Token Labeling's LV-ViT, whose release files it loads) has the
    same keys without score_predictor.
    """
    E, hidden, tokens, w, half = embed, int(embed * mlp_ratio), (img // patch) ** 2 + 1, 64, patch // 2
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, E), "pos_embed": (1, tokens, E)}
    for i, (cin, k) in enumerate(((in_chans, 7), (w, 3), (w, 3)), start=1):
        shapes[f"patch_embed.conv{i}.weight"] = (w, cin, k, k)
        shapes.update({f"patch_embed.bn{i}.{p}": (w,) for p in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"patch_embed.bn{i}.num_batches_tracked"] = ()
    shapes.update({"patch_embed.proj.weight": (E, w, half, half), "patch_embed.proj.bias": (E,)})
    for i in range(depth):
        shapes.update(_block_shapes(i, E, hidden, qkv_bias=False))
    shapes.update({"norm.weight": (E,), "norm.bias": (E,), "head.weight": (classes, E), "head.bias": (classes,)})
    shapes.update(_predictor_shapes(E, pruning_points))
    shapes.update({"aux_head.weight": (classes, E), "aux_head.bias": (classes,)})
    return shapes


def official_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The official keys and shapes of `cfg`'s family."""
    fn = official_lvvit_state_dict_shapes if cfg.family == "lvvit" else official_state_dict_shapes
    return fn(cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.in_chans, cfg.img_size, cfg.num_classes, cfg.mlp_ratio,
              len(cfg.pruning_loc))


def official_release(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official keys and shapes for `cfg`, drawn like trained ones: LayerNorm and BatchNorm
    affines near 1/0, BatchNorm statistics away from their init (mean 0, var 1), non-zero biases, and prediction
    modules wide enough that keep scores spread out (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in official_shapes(cfg).items():
        if k.endswith("num_batches_tracked"):
            t = torch.tensor(1000 + seed, dtype=torch.long)  # what a trained BatchNorm holds: a 0-d int64 count
        elif k.endswith("running_mean"):
            t = 0.2 * torch.randn(shape, generator=g)
        elif k.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif ".norm" in k or k.startswith("norm.") or "in_conv.0." in k or ".bn" in k:
            t = (1.0 if k.endswith("weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif k in ("cls_token", "pos_embed"):
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 2.0 if k.startswith("score_predictor.") else 1.0
            t = gain * torch.randn(shape, generator=g) / fan_in**0.5
        sd[k] = t
    return sd


def dense_of(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dense teacher's state dict: the same keys without the prediction modules."""
    return {k: v for k, v in sd.items() if not k.startswith("score_predictor.")}


def reduced(name: str) -> ModelConfig:
    """The official configuration with 4 blocks (pruning before blocks 1, 2, 3) on 64x64 images in 16x16 patches:
    the real heads, MLP ratio, qkv bias, family (stem, skip_lam, aux head) and keep-ratio schedule, 16 patch tokens
    kept as 11, 7, 5 at rho 0.7; the real width up to 384 (deit-b's 12 heads at 32 channels each, lvvit-m's 8 at 48,
    to keep the export to a few seconds)."""
    cfg = model_config(name)
    return cfg.replace(img_size=64, depth=4, pruning_loc=(1, 2, 3), embed_dim=min(cfg.embed_dim, 384))


def preset_for(cfg: ModelConfig, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The --model name resolving to `cfg`: `name` for a full official configuration; a reduced one is registered as
    the preset '<name>-reduced' for the test's duration, so --model resolves it as usual."""
    if PRESETS[name] == cfg:
        return name
    preset = f"{name}-reduced"
    monkeypatch.setitem(PRESETS, preset, cfg)
    return preset


def check_export(cfg: ModelConfig, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Random official weights for `cfg` (or `state`) saved as {'model': sd}, loaded with every key mapped, exported;
    the export's own verification and an independent ONNX Runtime run of the fused graph and the stage chain against
    PyTorch: logits within 1e-4 of the logit scale, every image's kept sets identical."""
    path = tmp_path / "official.pth"
    sd = official_release(cfg, seed=1) if state is None else state
    torch.save({"model": sd}, path)
    preset = preset_for(cfg, name, monkeypatch)
    model = load_model(path, preset=preset)
    own = model.state_dict()
    assert set(own) == set(sd), (sorted(set(own) - set(sd))[:4], sorted(set(sd) - set(own))[:4])
    out = tmp_path / "graphs"
    export(path, out, model_preset=preset, batch_sizes="2", verify_images=4, progress=False)
    gs = GraphSet.load(out)
    assert gs.config.architecture_key() == cfg.architecture_key() and gs.config.keep_counts == cfg.keep_counts
    graphs = gs.batch(2)
    assert len(graphs.stages) == len(cfg.pruning_loc) + 1
    # what the export's own verification recorded: logits within 1e-4, every image's kept set identical
    assert "logits" in graphs.fused.info["verification"]["max_abs_err"]
    for entry in graphs.entries():
        rec = entry.info["verification"]
        assert rec["images"] >= 4
        assert all(err < 1e-4 for k, err in rec["max_abs_err"].items() if k == "logits"), (entry.file, rec)
        if rec["kept_indices"] is not None:
            assert rec["kept_indices"]["near_tie_boundary"] == 0, (entry.file, rec)
    # and independently: fresh images through ONNX Runtime, fused and stage chain, against PyTorch
    images = torch.randn(4, cfg.in_chans, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(7))
    feeds = {"images": images.numpy()}
    want = PyTorchRunner(model).infer(feeds)
    scale = max(1.0, float(np.abs(want["logits"]).max()))
    fused = OnnxRuntimeRunner(graphs.fused.path, "fused")
    chain = StageChain([OnnxRuntimeRunner(s.path, s.name) for s in graphs.stages])
    for runner in (fused, chain):
        parts = [runner.infer({"images": feeds["images"][lo : lo + 2]}) for lo in range(0, 4, 2)]  # static batch 2
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        err = float(np.abs(res["logits"] - want["logits"]).max())
        assert err <= 1e-4 * scale, f"{runner.name}: logits differ by {err:.3g} (scale {scale:.3g})"
        kept = [k for k in want if k.startswith("kept_indices")]
        assert kept and all(k in res for k in kept), (runner.name, sorted(res))
        for k in kept:
            for b in range(4):
                assert set(res[k][b].tolist()) == set(want[k][b].tolist()), (runner.name, k, b)
