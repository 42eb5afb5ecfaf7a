"""The DeiT family under the official DynamicViT names (deit-256, deit-s, deit-b), issue 17.

Each name: random weights written in the official release format ({'model': state_dict} with the official key
names, built in tests/official_zoo.py from the official module structure, not from our model) load through
checkpoint.load_model with every key mapped and none left over; the exported fused graph and stage chain match PyTorch in ONNX Runtime
(logits within 1e-4 of the logit scale, kept sets identical). A reduced configuration of each (the real heads and MLP
ratio, width up to 384; 4 blocks on 64x64 images: the same code path) runs by default, the full 224x224 ones under `slow`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_zoo import check_export, dense_of, official_release, reduced

from pipeline import cli
from pipeline.checkpoint import load_model
from pipeline.config import OFFICIAL_NAMES, PRESETS, model_config
from pipeline.errors import CheckpointError, ConfigError

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
    dense = dense_of(sd)
    torch.save({"model": dense}, tmp_path / "deit.pth")
    teacher = load_model(tmp_path / "deit.pth", preset=name)
    assert teacher.cfg.is_dense and set(teacher.state_dict()) == set(dense)


@pytest.mark.parametrize("name", OFFICIAL)
def test_reduced_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    check_export(reduced(name), name, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_official_configuration_exports_and_matches(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    check_export(model_config(name), name, tmp_path, monkeypatch)


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
