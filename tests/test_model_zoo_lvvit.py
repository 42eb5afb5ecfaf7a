"""The LV-ViT family under the official DynamicViT names (lvvit-s, lvvit-m), issue 17: the counterpart of
tests/test_model_zoo_deit.py.

Each name: random weights under the official LVViTDiffPruning keys (tests/official_zoo.py writes them out from
models/dylvvit.py: the '4_2' convolutional stem with its BatchNorm buffers, qkv without bias, the auxiliary token head)
load through checkpoint.load_model with every key mapped and none left over, from the official release format
({'model': state_dict}) and from the formats the official training reads its teachers in (Token Labeling's bare state
dict, as lvvit_s-26M-224-83.3.pth.tar is, and timm's CheckpointSaver {'state_dict': ...} with DDP's 'module.'
prefixes); a teacher file without prediction modules loads as the dense model. The exported fused graph and stage
chain match PyTorch in ONNX Runtime (logits within 1e-4 of the logit scale, kept sets identical) for a reduced
configuration of each (the real heads, MLP ratio, stem, skip_lam and auxiliary head; 4 blocks on 64x64 images), and
for the full 224x224 ones under `slow`. A file of one family or size given with another --model is refused in one
line naming both, with nothing written.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from official_zoo import (
    check_export,
    dense_of,
    official_lvvit_state_dict_shapes,
    official_release,
    official_shapes,
    reduced,
)

from pipeline import cli
from pipeline.checkpoint import load_model
from pipeline.config import OFFICIAL_NAMES, PRESETS, model_config
from pipeline.errors import CheckpointError
from pipeline.model import DynamicViT

OFFICIAL = ("lvvit-s", "lvvit-m")

# The official configurations, as raoyongming/DynamicViT infer.py and main.py (commit
# 1322e626d1e9eca18cc150569908fb4af29e15f7) build them: LVViTDiffPruning(patch_size=16, embed_dim=E, depth=D,
# num_heads=H, mlp_ratio=3., p_emb='4_2', skip_lam=2., return_dense=True, mix_token=True, pruning_loc=P,
# token_ratio=[rho, rho**2, rho**3]) with qkv_bias at its default False, img_size=224, in_chans=3, num_classes=1000.
OFFICIAL_CONFIG = {  # name: (embed_dim, depth, num_heads, pruning_loc)
    "lvvit-s": (384, 16, 6, (4, 8, 12)),
    "lvvit-m": (512, 20, 8, (5, 10, 15)),
}


def test_official_names_are_the_official_configurations() -> None:
    for name, (embed, depth, heads, locs) in OFFICIAL_CONFIG.items():
        cfg = model_config(name)
        assert (cfg.family, cfg.embed_dim, cfg.depth, cfg.num_heads) == ("lvvit", embed, depth, heads)
        assert (cfg.mlp_ratio, cfg.qkv_bias, cfg.skip_lam) == (3.0, False, 2.0)
        assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.num_classes) == (224, 16, 3, 1000)
        assert cfg.pruning_loc == locs and cfg.keep_ratio == 0.7
        rho = 0.5
        assert model_config(name, keep_ratio=rho).stage_ratios == [rho, rho**2, rho**3]
        # int(196 * ratio), the official num_keep_node
        assert cfg.keep_counts == [int(196 * 0.7), int(196 * 0.7**2), int(196 * 0.7**3)] == [137, 96, 67]
        assert cfg.token_distillation == "kl"  # main.py: DistillDiffPruningLoss_dynamic(mse_token=False) for lvvit
    assert set(OFFICIAL) <= set(OFFICIAL_NAMES) and set(OFFICIAL) <= set(PRESETS)


@pytest.mark.parametrize("name", ["lvvit-s", "lvvit-m"])
def test_our_model_has_the_official_keys_and_shapes(name: str) -> None:
    """The layout itself, at a reduced size (the shapes are those of any size): ours against the one written out
    from models/dylvvit.py, buffers included; the dense teacher against LVViT_Teacher's (no prediction modules)."""
    cfg = reduced(name)
    want = official_lvvit_state_dict_shapes(cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.in_chans, cfg.img_size,
                                            cfg.num_classes, cfg.mlp_ratio, len(cfg.pruning_loc))
    got = {k: tuple(v.shape) for k, v in DynamicViT(cfg).state_dict().items()}
    assert got == want, (sorted(set(got) ^ set(want))[:6], [k for k in want if got.get(k) != want[k]][:6])
    dense = {k: tuple(v.shape) for k, v in DynamicViT(cfg.as_dense()).state_dict().items()}
    assert dense == {k: s for k, s in want.items() if not k.startswith("score_predictor.")}
    # the stem's BatchNorm counts are 0-d int64 buffers, as in any trained BatchNorm2d
    assert DynamicViT(cfg).state_dict()["patch_embed.bn1.num_batches_tracked"].dtype == torch.long


def _release(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The official DynamicViT release: the weights under 'model' beside training state."""
    return {"model": sd, "epoch": 29, "max_accuracy": 83.1}


def _bare(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Token Labeling's release (lvvit_s-26M-224-83.3.pth.tar): the state dict itself; main.py loads it as it is."""
    return dict(sd)


def _timm_saver(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """timm's CheckpointSaver (Token Labeling trains with timm's train.py): {'state_dict': ...} beside epoch, arch,
    optimizer and args, the keys prefixed 'module.' where the model was saved wrapped in DistributedDataParallel."""
    return {"epoch": 299, "arch": "lvvit_s", "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}, "version": 2, "metric": 83.3}


FORMATS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, Any]]] = {
    "release": _release, "token-labeling": _bare, "timm-saver": _timm_saver}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", ["lvvit-s", pytest.param("lvvit-m", marks=pytest.mark.slow)])
def test_official_keys_load_with_every_key_mapped(name: str, fmt: str, tmp_path: Path) -> None:
    """Full 224x224 configuration, the student and its dense teacher in each format: only the state dict is built and
    loaded, no export (lvvit-m's 56M parameters take several seconds even so: slow)."""
    cfg = model_config(name)
    sd = official_release(cfg)
    assert sd["patch_embed.bn2.num_batches_tracked"].dtype == torch.long and "blocks.0.attn.qkv.bias" not in sd
    for weights, dense in ((sd, False), (dense_of(sd), True)):
        path = tmp_path / f"{name}-{'teacher' if dense else 'student'}.pth.tar"
        torch.save(FORMATS[fmt](weights), path)
        model = load_model(path, preset=name)
        own = model.state_dict()
        assert set(own) == set(weights), (sorted(set(own) - set(weights))[:4], sorted(set(weights) - set(own))[:4])
        for k, v in weights.items():
            assert torch.equal(own[k], v), k
        assert model.cfg.is_dense == dense and model.cfg.family == "lvvit"
        want = cfg.as_dense() if dense else cfg
        assert model.cfg.architecture_key() == want.architecture_key()


@pytest.mark.parametrize("name", OFFICIAL)
def test_reduced_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = reduced(name)
    assert cfg.family == "lvvit" and cfg.skip_lam == 2.0 and not cfg.qkv_bias
    check_export(cfg, name, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    check_export(model_config(name), name, tmp_path, monkeypatch)


@pytest.mark.parametrize(("have", "given"), [("lvvit-s", "deit-s"), ("lvvit-s", "lvvit-m"), ("deit-s", "lvvit-s"),
                                             ("lvvit-m", "lvvit-s")])
def test_official_file_with_the_wrong_model_is_refused_naming_both(have: str, given: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"dynamicvit_{have}.pth"
    torch.save({"model": official_release(model_config(have))}, path)
    c_have, c_given = model_config(have), model_config(given)
    with pytest.raises(CheckpointError) as err:
        load_model(path, preset=given)
    msg = str(err.value)
    assert "\n" not in msg and f"'{given}'" in msg and f"holds a {have}" in msg and f"pass --model {have}" in msg
    # both architectures described: by family where the families differ (deit-s and lvvit-s share embed 384),
    # else by width and depth
    if c_have.family != c_given.family:
        assert "LV-ViT" in msg and "DeiT" in msg, msg
    assert f"depth {c_have.depth}" in msg and f"depth {c_given.depth}" in msg, msg
    if c_have.embed_dim != c_given.embed_dim:
        assert f"embed {c_have.embed_dim}" in msg and f"embed {c_given.embed_dim}" in msg, msg
    out = tmp_path / "graphs"
    rc = cli.main(["export", "--checkpoint", str(path), "--model", given, "--batch-sizes", "1", "--out", str(out),
                   "--no-progress"])
    text = capsys.readouterr().err.strip()
    assert rc == 2 and text.count("\n") == 0 and f"holds a {have}" in text and f"'{given}'" in text, text
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_a_teacher_of_the_other_family_is_refused_naming_both(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A DeiT teacher given for an LV-ViT student (same width, image and classes): one line, nothing written."""
    student_cfg = reduced("lvvit-s")
    teacher_cfg = reduced("deit-s").as_dense()
    monkeypatch.setitem(PRESETS, "lvvit-s-reduced", student_cfg)
    student, teacher = tmp_path / "student.pth", tmp_path / "deit_teacher.pth"
    torch.save({"model": official_release(student_cfg)}, student)
    torch.save({"model": official_release(teacher_cfg)}, teacher)
    assert set(official_shapes(teacher_cfg)) == set(official_release(teacher_cfg))
    out = tmp_path / "graphs"
    rc = cli.main(["export", "--checkpoint", str(student), "--teacher", str(teacher), "--model", "lvvit-s-reduced",
                   "--batch-sizes", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().err.strip()
    assert rc == 2 and text.count("\n") == 0, text
    assert str(teacher) in text and "DeiT" in text and "LV-ViT" in text, text
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["deit_teacher.pth", "student.pth"]
