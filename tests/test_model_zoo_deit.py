"""The DeiT family under the official DynamicViT names (deit-256, deit-s, deit-b), issue 17.

Each name: random weights written in the official release format ({'model': state_dict} with the official key
names, built here from the official module structure, not from our model) load through checkpoint.load_model with
every key mapped and none left over; the exported fused graph and stage chain match PyTorch in ONNX Runtime
(logits within 1e-4 of the logit scale, kept sets identical). A reduced configuration of each (the real heads and MLP
ratio, width up to 384; 4 blocks on 64x64 images: the same code path) runs by default, the full 224x224 ones under `slow`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import cli
from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.checkpoint import load_model
from pipeline.config import OFFICIAL_NAMES, PRESETS, ModelConfig, model_config
from pipeline.errors import CheckpointError, ConfigError
from pipeline.export import export
from pipeline.graphset import GraphSet
from pipeline.runners.chain import StageChain
from pipeline.runners.pytorch import PyTorchRunner

OFFICIAL = ("deit-256", "deit-s", "deit-b")

# The official configurations, as raoyongming/DynamicViT infer.py (commit 1322e626d1e9eca18cc150569908fb4af29e15f7)
# builds them: VisionTransformerDiffPruning(patch_size=16, embed_dim=E, depth=12, num_heads=H, mlp_ratio=4,
# qkv_bias=True, pruning_loc=[3, 6, 9], token_ratio=[rho, rho**2, rho**3]) at the default img_size=224, in_chans=3,
# num_classes=1000; main.py's deit-s/deit-b students are built the same way.
OFFICIAL_CONFIG = {  # name: (embed_dim, num_heads)
    "deit-256": (256, 4),
    "deit-s": (384, 6),
    "deit-b": (768, 12),
}


def official_state_dict_shapes(embed: int, depth: int, patch: int, in_chans: int, img: int, classes: int,
                               mlp_ratio: float, pruning_points: int) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of the official VisionTransformerDiffPruning, as read in
    raoyongming/DynamicViT models/dyvit.py at commit 1322e626d1e9eca18cc150569908fb4af29e15f7:

    - patch_embed = PatchEmbed: proj = Conv2d(in_chans, embed_dim, patch, patch)  -> patch_embed.proj.{weight,bias}
    - cls_token [1, 1, E]; pos_embed [1, num_patches + 1, E]  (pos_drop: Dropout, no parameters)
    - blocks = ModuleList of Block: norm1 = LayerNorm(E, eps=1e-6); attn = Attention: qkv = Linear(E, 3E,
      bias=qkv_bias=True), proj = Linear(E, E) (attn_drop/proj_drop: Dropout); drop_path: DropPath/Identity;
      norm2 = LayerNorm; mlp = Mlp: fc1 = Linear(E, E*mlp_ratio), act = GELU, fc2 = Linear(E*mlp_ratio, E)
    - norm = LayerNorm(E); pre_logits = nn.Identity() (representation_size=None): no parameters;
      head = Linear(E, num_classes)
    - score_predictor = ModuleList of PredictorLG(E), one per pruning location: in_conv = Sequential(LayerNorm(E),
      Linear(E, E), GELU) -> in_conv.0, in_conv.1; out_conv = Sequential(Linear(E, E/2), GELU, Linear(E/2, E/4),
      GELU, Linear(E/4, 2), LogSoftmax) -> out_conv.0, out_conv.2, out_conv.4
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
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (E,), b + "norm1.bias": (E,),
            b + "attn.qkv.weight": (3 * E, E), b + "attn.qkv.bias": (3 * E,),
            b + "attn.proj.weight": (E, E), b + "attn.proj.bias": (E,),
            b + "norm2.weight": (E,), b + "norm2.bias": (E,),
            b + "mlp.fc1.weight": (hidden, E), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (E, hidden), b + "mlp.fc2.bias": (E,),
        })
    shapes.update({"norm.weight": (E,), "norm.bias": (E,), "head.weight": (classes, E), "head.bias": (classes,)})
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


def official_release(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official keys and shapes for `cfg`, drawn like trained ones: LayerNorm affines
    near 1/0, non-zero biases, and prediction modules wide enough that keep scores spread out (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    shapes = official_state_dict_shapes(cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.in_chans, cfg.img_size,
                                        cfg.num_classes, cfg.mlp_ratio, len(cfg.pruning_loc))
    sd: dict[str, torch.Tensor] = {}
    for k, shape in shapes.items():
        if ".norm" in k or k.startswith("norm.") or "in_conv.0." in k:
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


def reduced(name: str) -> ModelConfig:
    """The official configuration with 4 blocks (pruning before blocks 1, 2, 3) on 64x64 images in 16x16 patches:
    the real heads, MLP ratio and keep-ratio schedule, 16 patch tokens kept as 11, 7, 5 at rho 0.7; the real width
    up to 384 (deit-b's 12 heads at 32 channels each, to keep its export to a few seconds)."""
    cfg = model_config(name)
    return cfg.replace(img_size=64, depth=4, pruning_loc=(1, 2, 3), embed_dim=min(cfg.embed_dim, 384))


def test_official_names_are_the_official_configurations() -> None:
    for name, (embed, heads) in OFFICIAL_CONFIG.items():
        cfg = model_config(name)
        assert (cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.mlp_ratio, cfg.qkv_bias) == (embed, heads, 12, 4.0, True)
        assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.num_classes) == (224, 16, 3, 1000)
        assert cfg.pruning_loc == (3, 6, 9) and cfg.keep_ratio == 0.7
        rho = 0.6
        assert model_config(name, keep_ratio=rho).stage_ratios == [rho, rho**2, rho**3]
        # int(196 * ratio), the official num_keep_node
        assert cfg.keep_counts == [int(196 * 0.7), int(196 * 0.7**2), int(196 * 0.7**3)] == [137, 96, 67]
    assert model_config("deit-s").architecture_key() == model_config("deit_small_patch16_224").architecture_key()
    assert model_config("deit-b").architecture_key() == model_config("deit_base_patch16_224").architecture_key()
    assert set(OFFICIAL) <= set(OFFICIAL_NAMES) and set(OFFICIAL) <= set(PRESETS)
    with pytest.raises(ConfigError, match=r"unknown model 'deit-xl': choose one of deit-256, deit-s .*deit-b .*fmnist_tiny"):
        model_config("deit-xl")


def test_train_help_lists_the_official_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(n in text for n in (*OFFICIAL, "deit_small_patch16_224", "fmnist_tiny"))


@pytest.mark.parametrize("name", ["deit-256", "deit-s", pytest.param("deit-b", marks=pytest.mark.slow)])
def test_official_keys_load_with_every_key_mapped(name: str, tmp_path: Path) -> None:
    """Full 224x224 configuration: only the state dict is built and loaded, no export (deit-b's 86M parameters
    take several seconds even so: slow)."""
    cfg = model_config(name)
    sd = official_release(cfg)
    path = tmp_path / f"dynamicvit_{name}.pth"
    torch.save({"model": sd, "epoch": 29}, path)  # the release files carry training state beside 'model'
    model = load_model(path, preset=name)
    own = model.state_dict()
    assert set(own) == set(sd), (sorted(set(own) - set(sd))[:4], sorted(set(sd) - set(own))[:4])
    for k, v in sd.items():
        assert torch.equal(own[k], v), k
    assert model.cfg.architecture_key() == cfg.architecture_key()
    # a dense teacher as DeiT releases it ({'model': ...} without prediction modules) loads under the same name
    dense = {k: v for k, v in sd.items() if not k.startswith("score_predictor.")}
    torch.save({"model": dense}, tmp_path / "deit.pth")
    teacher = load_model(tmp_path / "deit.pth", preset=name)
    assert teacher.cfg.is_dense and set(teacher.state_dict()) == set(dense)


def _check_export(cfg: ModelConfig, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "official.pth"
    sd = official_release(cfg, seed=1)
    torch.save({"model": sd}, path)
    preset = name
    if PRESETS[name] != cfg:  # a reduced configuration: registered as a preset, so --model resolves it as usual
        preset = f"{name}-reduced"
        monkeypatch.setitem(PRESETS, preset, cfg)
    model = load_model(path, preset=preset)
    assert set(model.state_dict()) == set(sd)
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


@pytest.mark.parametrize("name", OFFICIAL)
def test_reduced_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _check_export(reduced(name), name, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _check_export(model_config(name), name, tmp_path, monkeypatch)


@pytest.mark.parametrize(("have", "given"), [("deit-s", "deit-b"), ("deit-s", "deit-256"), ("deit-256", "deit-s"),
                                             ("deit-256", "deit_base_patch16_224")])
def test_official_file_with_the_wrong_model_is_refused_naming_both(have: str, given: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"dynamicvit_{have}.pth"
    torch.save({"model": official_release(model_config(have))}, path)
    e_have, e_given = model_config(have).embed_dim, model_config(given).embed_dim
    with pytest.raises(CheckpointError) as err:
        load_model(path, preset=given)
    msg = str(err.value)
    assert "\n" not in msg and f"'{given}'" in msg and f"embed {e_have}" in msg and f"embed {e_given}" in msg
    assert f"holds a {have}" in msg and f"pass --model {have}" in msg
    out = tmp_path / "graphs"
    rc = cli.main(["export", "--checkpoint", str(path), "--model", given, "--batch-sizes", "1", "--out", str(out),
                   "--no-progress"])
    text = capsys.readouterr().err.strip()
    assert rc == 2 and text.count("\n") == 0 and f"holds a {have}" in text and f"'{given}'" in text
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
