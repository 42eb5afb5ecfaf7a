"""Any input size and channel count (issue 17): a newcomer's 1-channel 300x300 ImageFolder trains a DeiT-256 student
at 96x96 with one command (its teacher first), exports, and the manifest says how to feed it; checkpoints of another
input size or channel count are fitted as timm does, only when asked; a teacher of the other family is refused.

Real files throughout: PNGs written here and decoded by Pillow, checkpoints saved and read back by torch, graphs
exported and checked by ONNX Runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline import cli
from pipeline.checkpoint import init_from_pretrained, load_teacher, read_checkpoint, save_checkpoint
from pipeline.checkpoint_filters import adapt_input_conv
from pipeline.config import model_config
from pipeline.data import _load_image
from pipeline.errors import CheckpointError
from pipeline.graphset import GraphSet
from pipeline.model import DynamicViT
from pipeline.preprocessing import Preprocessing

CLASSES = ("crack", "intact", "soiled")


def write_grey_folder(root: Path, per_class: int = 12, size: int = 300) -> None:
    """1-channel PNGs like solar-cell electroluminescence images: noisy grey, with a bright vertical crack, nothing,
    or dark horizontal soiling bands, one pattern per class folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.normal(110, 20, (size, size))
            if name == "crack":
                a[:, 120 + 5 * i : 130 + 5 * i] = 250
            elif name == "soiled":
                a[10 + i :: 40, :] = 15
            Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(root / name / f"{i:03d}.png")


def one_line_refusal(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("dvit train: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("solar") / "cells"
    write_grey_folder(root)
    return root


def test_newcomer_trains_exports_and_the_manifest_says_how_to_feed_it(
        grey_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, exp = tmp_path / "run", tmp_path / "export"
    rc = cli.main(["train", "--model", "deit-256", "--data", str(grey_folder), "--img-size", "96", "--in-chans", "1",
                   "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "4", "--threads", "2", "--no-progress",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    # the teacher was trained first, into OUT/teacher, and said so; then the student was distilled from it
    assert f"no --teacher given, so the dense teacher trains first (1 epoch, same data and settings, from random " \
           f"weights) into {out / 'teacher'}" in err
    assert "teacher: done (test top-1" in err and "distilling the student from it" in err
    teacher = read_checkpoint(out / "teacher" / "model.pt")
    assert teacher["config"]["pruning_loc"] == [] and teacher["config"]["img_size"] == 96
    assert json.loads((out / "summary.json").read_text())["teacher"] == str(out / "teacher" / "model.pt")
    # what the images are turned into, from the files' headers: nothing silent
    line = ("data: 1-channel 300x300 PNG images (grey; 32 of 33 sampled) -> 1x96x96: resized to 96x96 (bilinear), "
            "then scaled to 0-1 and normalised with the training images' mean/std")
    assert line in err.splitlines()
    student = read_checkpoint(out / "model.pt")
    cfg = student["config"]
    assert (cfg["name"], cfg["img_size"], cfg["in_chans"], cfg["num_classes"], cfg["pruning_loc"]) == \
           ("deit-256", 96, 1, 3, [3, 6, 9])
    data = student["data"]
    assert data["classes"] == list(CLASSES) and data["conversion"] == line[len("data: "):]
    assert data["source_images"]["modes"] == {"L": 32} and data["source_images"]["sizes"] == {"300x300": 32}

    rc = cli.main(["export", "--checkpoint", str(out / "model.pt"), "--teacher", str(out / "teacher" / "model.pt"),
                   "--batch-sizes", "1", "--verify-images", "2", "--out", str(exp), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    gs = GraphSet.load(exp)
    pre = gs.preprocessing
    assert pre is not None
    assert (pre.input_size, pre.channels, pre.color) == ((96, 96), 1, "grey")
    assert (pre.resize_short_side, pre.interpolation, pre.resize_long_side, pre.crop_offset) == \
           (96, "bilinear", "round", "floor")
    assert pre.mean == pytest.approx(tuple(data["mean"])) and pre.std == pytest.approx(tuple(data["std"]))
    assert len(pre.mean) == 1 and pre.classes == CLASSES
    assert gs.manifest["preprocessing"]["center_crop"]["size"] == [96, 96]
    # the record turns a file into exactly what training fed the model
    png = grey_folder / "soiled" / "003.png"
    want = (torch.from_numpy(_load_image(png, 1, 96).copy()).float() / 255 - data["mean"][0]) / data["std"][0]
    from PIL import Image

    with Image.open(png) as im:
        got = Preprocessing.from_dict(gs.manifest["preprocessing"]).apply(np.asarray(im))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    # the graphs take 1x96x96 images: 36 patch tokens (+ class token), pruned to 25, 17, 12 at rho 0.7
    import onnx

    b = gs.batch(1)
    assert gs.config.tokens_per_stage == [37, 26, 18, 13]
    for entry in (b.stages[0], b.fused, b.teacher):
        assert entry is not None and entry.inputs[0].shape == (1, 1, 96, 96)
        dims = onnx.load(str(entry.path)).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims] == [1, 1, 96, 96]
    assert [s.keep_count for s in b.stages[1:]] == [25, 17, 12]
    assert b.fused.outputs[0].shape == (1, 3)


def _deit(img_size: int, in_chans: int = 3, **kw: object) -> DynamicViT:
    """DeiT-256's layers at two blocks (the input side is what these tests are about)."""
    cfg = model_config("deit-256", img_size=img_size, in_chans=in_chans, num_classes=3, dense=True).replace(depth=2, **kw)
    return DynamicViT(cfg).eval()


def test_pos_embed_of_another_size_is_resampled_only_when_asked(grey_folder: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    src = _deit(64, in_chans=1)
    with torch.no_grad():  # a position structure to follow: channel 0 is the column, channel 1 the row
        grid = src.pos_embed[0, 1:].view(4, 4, -1)
        grid[:, :, 0] = torch.arange(4.0).view(1, 4)
        grid[:, :, 1] = torch.arange(4.0).view(4, 1)
    path = tmp_path / "deit_64.pth"
    torch.save({"model": src.state_dict()}, path)  # the official release format

    dst = _deit(96, in_chans=1)
    notes: list[str] = []
    init_from_pretrained(dst, path, interpolate=True, notes=notes)
    pos, old = dst.pos_embed.detach(), src.pos_embed.detach()
    assert pos.shape == (1, 37, 256)
    assert torch.equal(pos[:, 0], old[:, 0])  # the class token's embedding, as it was
    by_hand = F.interpolate(old[0, 1:].reshape(4, 4, 256).permute(2, 0, 1)[None], size=(6, 6), mode="bicubic",
                            align_corners=False, antialias=True)[0].permute(1, 2, 0).reshape(36, 256)
    torch.testing.assert_close(pos[0, 1:], by_hand, rtol=0, atol=1e-6)
    from timm.layers import resample_abs_pos_embed

    torch.testing.assert_close(pos, resample_abs_pos_embed(old, [6, 6], num_prefix_tokens=1), rtol=0, atol=1e-6)
    new = pos[0, 1:].view(6, 6, -1)
    assert bool((new[:, 1:, 0] > new[:, :-1, 0]).all()) and bool((new[1:, :, 1] > new[:-1, :, 1]).all())
    torch.testing.assert_close(new[:, :, 0], new[:1, :, 0].expand(6, 6))  # columns stay columns
    assert torch.equal(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)  # the rest as it was
    assert notes == [(f"checkpoint {path}: position embeddings resampled from a 4x4 to a 6x6 patch grid (64x64 -> 96x96 "
                     "images; bicubic, as timm; class token kept)")]

    # the same file as --init-from without the flag: one line naming both sizes and the flag, nothing written
    out = tmp_path / "refused"
    rc = cli.main(["train", "--mode", "teacher", "--model", "deit-256", "--img-size", "96", "--in-chans", "1",
                   "--data", str(grey_folder), "--init-from", str(path), "--out", str(out), "--no-progress"])
    line = one_line_refusal(rc, capsys.readouterr().err)
    assert "made for 64x64 images and the model takes 96x96" in line and "--interpolate-pos-embed" in line
    assert "--img-size 64" in line and not out.exists()
    # a teacher of another size: the same rule
    teacher = tmp_path / "teacher_64.pt"
    save_checkpoint(teacher, src)
    student = model_config("deit-256", img_size=96, in_chans=1, num_classes=3).replace(depth=2, pruning_loc=(1,))
    with pytest.raises(CheckpointError, match=r"made for 64x64 images and the model takes 96x96: pass "
                                              r"--interpolate-pos-embed to resample its position embeddings"):
        load_teacher(teacher, student)
    fitted = load_teacher(teacher, student, interpolate=True)
    assert torch.equal(fitted.pos_embed.detach(), pos) and fitted.cfg == student.as_dense()


@pytest.mark.parametrize("family", ["deit", "lvvit"])
def test_input_channels_are_adapted_as_timm_does(family: str, tmp_path: Path) -> None:
    """3 -> 1 channels sums the first convolution over RGB, 1 -> 3 repeats it divided by 3: either way the model
    answers a grey image as the source model answered it (grey repeated to RGB, or as it was)."""
    torch.manual_seed(1)
    if family == "deit":
        rgb, grey = _deit(32), _deit(32, in_chans=1)
        key = "patch_embed.proj.weight"
    else:
        lv = model_config("lvvit-s", img_size=32, num_classes=3, dense=True).replace(depth=2, embed_dim=64, num_heads=2)
        rgb, grey = DynamicViT(lv).eval(), DynamicViT(lv.replace(in_chans=1)).eval()
        key = "patch_embed.conv1.weight"
    x = torch.rand(2, 1, 32, 32)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"made for 3-channel images and the model takes 1-channel: pass "
                                              r"--interpolate-pos-embed to adapt its first convolution.*--in-chans 3"):
        init_from_pretrained(grey, path)
    notes: list[str] = []
    init_from_pretrained(grey, path, interpolate=True, notes=notes)
    assert notes == [(f"checkpoint {path}: first convolution {key} adapted from 3 to 1 input channel (its 3 input "
                     "channels' weights summed, as timm's adapt_input_conv)")]
    torch.testing.assert_close(grey.state_dict()[key], rgb.state_dict()[key].sum(dim=1, keepdim=True))
    with torch.no_grad():
        torch.testing.assert_close(grey.forward_inference(x).logits, rgb.forward_inference(x.expand(2, 3, 32, 32)).logits,
                                   rtol=1e-4, atol=1e-5)
    # and back: the grey model's weights for a 3-channel model
    path1 = tmp_path / "grey.pth"
    torch.save(grey.state_dict(), path1)
    again = DynamicViT(rgb.cfg).eval()
    init_from_pretrained(again, path1, interpolate=True)
    torch.testing.assert_close(again.state_dict()[key], grey.state_dict()[key].repeat(1, 3, 1, 1) / 3)
    with torch.no_grad():
        torch.testing.assert_close(again.forward_inference(x.expand(2, 3, 32, 32)).logits,
                                   grey.forward_inference(x).logits, rtol=1e-4, atol=1e-5)
    # timm's own rule for more channels than RGB: repeat, scale by 3/C
    w = rgb.state_dict()[key]
    four, how = adapt_input_conv(w, 4)
    torch.testing.assert_close(four, torch.cat([w, w[:, :1]], dim=1) * 0.75)
    assert how == "repeated to 4 channels and scaled by 3/4"


def test_a_teacher_of_the_other_family_is_refused_before_anything_is_written(
        grey_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lv_cfg = model_config("lvvit-s", img_size=32, in_chans=1, num_classes=3, dense=True).replace(depth=2, embed_dim=64,
                                                                                                 num_heads=2)
    lv = DynamicViT(lv_cfg)
    ours, foreign = tmp_path / "lvvit_teacher.pt", tmp_path / "lvvit_s.pth.tar"
    save_checkpoint(ours, lv)
    torch.save({"state_dict_ema": lv.state_dict()}, foreign)  # Token Labeling's release format
    for teacher in (ours, foreign):
        out = tmp_path / f"student-{teacher.stem}"
        rc = cli.main(["train", "--model", "deit-256", "--img-size", "32", "--in-chans", "1", "--data", str(grey_folder),
                       "--teacher", str(teacher), "--out", str(out), "--no-progress"])
        line = one_line_refusal(rc, capsys.readouterr().err)
        assert f"teacher checkpoint {teacher} holds an LV-ViT model and 'deit-256' is a DeiT model: pass --teacher " \
               "with a DeiT checkpoint of the same architecture, or drop --teacher" in line
        assert not out.exists()
    # the reverse: a DeiT teacher for an LV-ViT student
    deit = tmp_path / "deit.pth"
    torch.save(_deit(32, in_chans=1).state_dict(), deit)
    with pytest.raises(CheckpointError, match=r"holds a DeiT model and 'lvvit-s' is an LV-ViT model"):
        load_teacher(deit, lv_cfg.replace(pruning_loc=(1,)))


def test_bad_sizes_and_class_counts_are_one_line_each(grey_folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    common = ["train", "--mode", "teacher", "--data", str(grey_folder), "--out", str(out), "--no-progress"]
    rc = cli.main([*common, "--model", "deit-256", "--img-size", "100"])
    line = one_line_refusal(rc, capsys.readouterr().err)
    assert line.endswith("--img-size 100 does not divide into deit-256's 16x16 patches: pass --img-size 96 or 112")
    rc = cli.main([*common, "--model", "lvvit-s", "--img-size", "8"])
    assert one_line_refusal(rc, capsys.readouterr().err).endswith("pass --img-size 16")
    rc = cli.main([*common, "--model", "deit-256", "--img-size", "32", "--num-classes", "10"])
    line = one_line_refusal(rc, capsys.readouterr().err)
    assert "--num-classes 10 disagrees with the data, which has 3 classes (crack, intact, soiled)" in line
    rc = cli.main(["train", "--mode", "teacher", "--teacher-epochs", "2", "--out", str(out)])
    assert "--teacher-epochs" in one_line_refusal(rc, capsys.readouterr().err)
    assert not out.exists()


def test_fashion_mnist_feeds_a_model_of_any_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default data refitted as a file would be (bilinear, grey repeated to RGB) for a 3x32x32 model, and
    verified the same way at export."""
    from pipeline.data import load_fashion_mnist, refit, verification_data

    out = tmp_path / "fm"
    rc = cli.main(["train", "--mode", "teacher", "--model", "fmnist_tiny", "--img-size", "32", "--in-chans", "3",
                   "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--train-subset", "64",
                   "--eval-subset", "16", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert ("data: 1-channel 28x28 idx images (grey) -> 3x32x32: grey repeated to 3 channels (pass --in-chans 1 to "
            "keep one channel), resized to 32x32 (bilinear), then scaled to 0-1 and normalised with Fashion-MNIST's "
            "mean/std") in err
    ckpt = read_checkpoint(out / "model.pt")
    from pipeline.data import FMNIST_MEAN, FMNIST_STD

    assert ckpt["data"]["mean"] == pytest.approx(list(FMNIST_MEAN) * 3)  # "Fashion-MNIST's mean/std", as it says
    assert ckpt["data"]["std"] == pytest.approx(list(FMNIST_STD) * 3)
    assert ckpt["config"]["img_size"] == 32 and ckpt["config"]["in_chans"] == 3
    v = verification_data(model_config("fmnist_tiny", img_size=32, in_chans=3), 2, trained_on=ckpt["data"])
    ds = load_fashion_mnist("test")
    want = refit(ds.images[:2], 3, 32).float() / 255
    mean, std = torch.tensor(ckpt["data"]["mean"]).view(1, 3, 1, 1), torch.tensor(ckpt["data"]["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(v.images, (want - mean) / std)
    assert torch.equal(want[:, 0], want[:, 2])  # grey, repeated
    # a checkpoint that does not say it was trained on refitted idx images is not verified on them
    from pipeline.errors import DataError

    with pytest.raises(DataError, match="has 1x28x28 images, the model takes 3x32x32"):
        verification_data(model_config("fmnist_tiny", img_size=32, in_chans=3), 2, data="fashion-mnist")
