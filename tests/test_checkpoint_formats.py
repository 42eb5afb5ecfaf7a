"""The front door: every command that takes a checkpoint reads ours, the official DynamicViT format
({'model': state_dict}) and timm/DeiT state dicts, through checkpoint.load_model, with the preset named by --model
where the file does not say its architecture."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import trained_like

from pipeline import cli
from pipeline.checkpoint import load_model, save_checkpoint
from pipeline.config import model_config
from pipeline.errors import CheckpointError
from pipeline.graphset import GraphSet
from pipeline.model import DynamicViT


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    student = trained_like(DynamicViT(model_config("fmnist_tiny", keep_ratio=0.7)))
    teacher = DynamicViT(model_config("fmnist_tiny", dense=True)).eval()
    out = {"ours": d / "ours.pt", "official": d / "dynamicvit.pth", "timm": d / "deit.pth", "ddp": d / "ddp.pth"}
    save_checkpoint(out["ours"], student)
    # the official DynamicViT release: {'model': state_dict} (plus training state it may carry)
    torch.save({"model": student.state_dict(), "epoch": 29}, out["official"])
    # timm/DeiT: a bare state dict of the dense ViT; DDP-saved files prefix every key with 'module.'
    torch.save(teacher.state_dict(), out["timm"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in teacher.state_dict().items()}}, out["ddp"])
    return out


def test_every_format_loads_with_the_preset(files: dict[str, Path]) -> None:
    ours = load_model(files["ours"])
    official = load_model(files["official"], preset="fmnist_tiny", keep_ratio=0.7)
    assert official.cfg == ours.cfg
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(official.forward_inference(x).logits, ours.forward_inference(x).logits)
    for key in ("timm", "ddp"):
        t = load_model(files[key], preset="fmnist_tiny")
        assert t.cfg.is_dense and t.cfg.num_classes == 10  # dense: no prediction modules in the file


def test_a_foreign_file_without_its_architecture_names_the_fix(files: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"not a dvit-edge checkpoint.*--model deit_small_patch16_224 --keep-ratio 0.7"):
        load_model(files["official"])
    with pytest.raises(CheckpointError, match="does not match the model configuration"):
        load_model(files["official"], preset="deit_tiny_patch16_224")
    with pytest.raises(CheckpointError, match="holds a 'fmnist_tiny' model, not 'deit_tiny_patch16_224'"):
        load_model(files["ours"], preset="deit_tiny_patch16_224")


def test_export_and_evaluate_take_official_and_timm_files(files: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    rc = cli.main(["export", "--checkpoint", str(files["official"]), "--teacher", str(files["timm"]), "--model",
                   "fmnist_tiny", "--keep-ratio", "0.7", "--batch-sizes", "1", "--verify-images", "2", "--out", str(out),
                   "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    gs = GraphSet.load(out)
    assert gs.config.keep_counts == [34, 24, 16] and gs.batch(1).teacher is not None
    rc = cli.main(["evaluate", str(files["timm"]), str(files["official"]), "--model", "fmnist_tiny", "--limit", "16",
                   "--no-speed"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "dynamicvit.pth" in text and "deit.pth" in text
    # without --model: one line naming the fix, nothing written
    rc = cli.main(["export", "--checkpoint", str(files["official"]), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--model" in err and not (tmp_path / "x").exists()


def test_a_foreign_file_for_another_architecture_names_both(files: dict[str, Path], tmp_path: Path) -> None:
    # an official release of one architecture under another --model: both named, and the name that fits
    with pytest.raises(CheckpointError) as err:
        load_model(files["official"], preset="deit-s")
    msg = str(err.value)
    assert "\n" not in msg and "holds a fmnist_tiny model (embed 64, depth 12, patch 4, image 28, channels 1" in msg
    assert "not 'deit-s' (embed 384, depth 12, heads 6, patch 16, image 224" in msg and msg.endswith("pass --model fmnist_tiny")
    # a dense timm/DeiT teacher: its missing prediction modules are not what is wrong, its width is
    with pytest.raises(CheckpointError, match=r"holds a fmnist_tiny model .*not 'deit-b' \(embed 768"):
        load_model(files["timm"], preset="deit-b")
    # an architecture no preset has: both described, and no preset suggested
    odd = tmp_path / "odd.pth"
    torch.save({"model": DynamicViT(model_config("fmnist_tiny").replace(embed_dim=48, depth=6, pruning_loc=(2, 4))).state_dict()}, odd)
    with pytest.raises(CheckpointError, match=r"holds a model of another architecture \(embed 48, depth 6.*pruning points 2\), "
                       r"not 'fmnist_tiny' \(embed 64, depth 12.*: pass the --model the checkpoint was trained with"):
        load_model(odd, preset="fmnist_tiny")


def test_official_names_load_the_same_files_as_the_timm_names(tmp_path: Path) -> None:
    cfg = model_config("deit-s").replace(img_size=32, depth=4, pruning_loc=(1, 2, 3))
    path = tmp_path / "deit_s_dynamicvit.pth"
    torch.save({"model": DynamicViT(cfg).state_dict()}, path)
    a = load_model(path, expect=cfg)
    b = load_model(path, expect=model_config("deit_small_patch16_224").replace(img_size=32, depth=4, pruning_loc=(1, 2, 3)))
    assert a.cfg == b.cfg and a.cfg.name == "deit_small_patch16_224"
    with pytest.raises(CheckpointError, match=r"holds a model of another architecture \(embed 384, depth 4.*not 'deit-256'"):
        load_model(path, expect=model_config("deit-256").replace(img_size=32, depth=4, pruning_loc=(1, 2, 3)))


def test_teachers_load_in_every_format_and_a_student_is_no_teacher(files: dict[str, Path]) -> None:
    """load_teacher takes the dense teacher as timm/DeiT or a DDP run saved it, at the student's configuration, and
    refuses a pruned student's file in one line."""
    from pipeline.checkpoint import load_teacher

    student = model_config("fmnist_tiny", keep_ratio=0.7)
    want = torch.load(files["timm"], weights_only=True)
    for key in ("timm", "ddp"):
        t = load_teacher(files[key], student)
        assert t.cfg == student.as_dense() and not t.training
        assert all(torch.equal(v, want[k]) for k, v in t.state_dict().items())
    for key in ("official", "ours"):
        with pytest.raises(CheckpointError, match=r"is a pruned student \(3 prediction modules\), not a dense teacher"):
            load_teacher(files[key], student)
    with pytest.raises(CheckpointError, match="has 10 classes and the data 3: pass a teacher trained on this data"):
        load_teacher(files["timm"], student.replace(num_classes=3))
