"""Checkpoint formats (ours, official DynamicViT, timm) and the data loaders' errors on bad input."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint import init_from_pretrained, load_model, save_checkpoint
from pipeline.config import ModelConfig
from pipeline.data import find_fashion_mnist, load_dataset, load_fashion_mnist
from pipeline.errors import CheckpointError, DataError
from pipeline.model import DynamicViT

TINY = ModelConfig("tiny", img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=4,
                   num_heads=2, pruning_loc=(1, 2, 3), keep_ratio=0.7)

# The parameter names of the official VisionTransformerDiffPruning (models/dyvit.py in
# raoyongming/DynamicViT) for one block and one prediction module, written out independently of our model.
OFFICIAL_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                  "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                  "mlp.fc2.weight", "mlp.fc2.bias"]
OFFICIAL_PREDICTOR = ["in_conv.0.weight", "in_conv.0.bias", "in_conv.1.weight", "in_conv.1.bias",
                      "out_conv.0.weight", "out_conv.0.bias", "out_conv.2.weight", "out_conv.2.bias",
                      "out_conv.4.weight", "out_conv.4.bias"]
OFFICIAL_TOP = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                "norm.bias", "head.weight", "head.bias"]


def official_keys(cfg: ModelConfig) -> set[str]:
    keys = set(OFFICIAL_TOP)
    keys |= {f"blocks.{i}.{k}" for i in range(cfg.depth) for k in OFFICIAL_BLOCK}
    keys |= {f"score_predictor.{j}.{k}" for j in range(len(cfg.pruning_loc)) for k in OFFICIAL_PREDICTOR}
    return keys


def test_our_parameter_names_are_the_official_ones() -> None:
    assert set(DynamicViT(TINY).state_dict()) == official_keys(TINY)


def test_official_checkpoint_loads_and_reproduces_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = DynamicViT(TINY).eval()
    # The official training script saves {'model': state_dict, 'optimizer': ..., 'epoch': ...};
    # DDP-wrapped runs prefix every key with 'module.'.
    official = {"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 29, "args": None}
    path = tmp_path / "dynamicvit_official.pth"
    torch.save(official, path)
    dst = DynamicViT(TINY).eval()
    assert init_from_pretrained(dst, path) == []
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(dst.forward_inference(x).logits, src.forward_inference(x).logits)


def test_teacher_checkpoint_initialises_student_backbone(tmp_path: Path) -> None:
    teacher = DynamicViT(TINY.as_dense())
    path = tmp_path / "deit.pth"
    torch.save(teacher.state_dict(), path)  # a bare timm/DeiT-style state dict
    student = DynamicViT(TINY)
    missing = init_from_pretrained(student, path)
    assert missing and all(k.startswith("score_predictor.") for k in missing)
    torch.testing.assert_close(student.blocks[0].attn.qkv.weight, teacher.blocks[0].attn.qkv.weight)


def test_init_from_weights_for_other_classes_starts_a_fresh_head(tmp_path: Path) -> None:
    """Fine-tuning on new data: a checkpoint's classifier head for other classes is left out (as timm does), said
    so, and everything else loads."""
    src = DynamicViT(TINY.as_dense())
    path = tmp_path / "imagenet_like.pth"
    torch.save(src.state_dict(), path)
    dst = DynamicViT(TINY.replace(num_classes=3))
    fresh_head = dst.head.weight.detach().clone()
    notes: list[str] = []
    missing = init_from_pretrained(dst, path, notes=notes)
    assert sorted(k for k in missing if not k.startswith("score_predictor.")) == ["head.bias", "head.weight"]
    assert torch.equal(dst.head.weight, fresh_head) and torch.equal(dst.pos_embed, src.pos_embed)
    assert notes == [(f"checkpoint {path}: its classifier head (10 classes) left out: the data has 3 classes, so the "
                     "model's head starts fresh")]


def test_checkpoint_for_another_configuration_names_keys_and_shapes(tmp_path: Path) -> None:
    other = DynamicViT(TINY.replace(embed_dim=64, num_heads=4))
    path = tmp_path / "other.pth"
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*cls_token \(1, 1, 64\) vs \(1, 1, 32\)"):
        init_from_pretrained(DynamicViT(TINY), path)
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, other)
    with pytest.raises(CheckpointError, match="embed_dim: 64 vs 32"):
        load_model(ours, expect=TINY)


def test_deeper_checkpoint_reports_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep.pth"
    torch.save(DynamicViT(TINY.replace(depth=6, pruning_loc=(1, 2, 3))).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.4\."):
        init_from_pretrained(DynamicViT(TINY), path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch file"):
        load_model(path)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_save_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, DynamicViT(TINY))
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, DynamicViT(TINY), extra=Unpicklable())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ---------------- data ----------------
def test_fashion_mnist_loads_real_files() -> None:
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert sorted(torch.bincount(test.labels).tolist()) == [1000] * 10


def test_missing_dataset_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make data.*dataset-fashion-mnist.*--data DIR"):
        find_fashion_mnist(tmp_path)


def test_truncated_idx_file(tmp_path: Path) -> None:
    src = find_fashion_mnist(None)
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        (tmp_path / name).write_bytes((src / name).read_bytes())
    with gzip.open(src / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist("test", tmp_path)


def _write_png(path: Path, value: int, size: int = 28) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def test_image_folder_and_unreadable_image(tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        for i in range(5):
            _write_png(tmp_path / "ds" / c / f"{i}.png", 40 * i, size=40)
    train = load_dataset(str(tmp_path / "ds"), "train", in_chans=1, img_size=28)
    test = load_dataset(str(tmp_path / "ds"), "test", in_chans=1, img_size=28)
    assert train.classes == ("cat", "dog") and len(train) + len(test) == 10
    assert train.images.shape[1:] == (1, 28, 28)
    (tmp_path / "ds" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png.*remove or replace"):
        load_dataset(str(tmp_path / "ds"), "train", in_chans=1, img_size=28)


def test_the_conversion_line_says_what_decoding_does(tmp_path: Path) -> None:
    """The log's words for a folder of mixed files, read from their headers, and the decode they describe: RGBA
    turned grey with the alpha dropped, 16-bit grey clipped to 0-255 (Pillow's conversion), short side resized."""
    from PIL import Image

    from pipeline.data import conversion_text, open_image, survey_index
    from pipeline.image_index import scan_image_folder

    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8), "RGBA").save(tmp_path / "a" / "rgba.png")
    Image.fromarray(np.full((30, 30), 1000, np.uint16)).save(tmp_path / "a" / "deep.png")
    survey = survey_index(scan_image_folder(tmp_path))
    assert survey.modes == {"I;16": 1, "RGBA": 1} and survey.sizes == {(30, 30): 1, (40, 30): 1}
    text = conversion_text(survey, 1, 16)
    assert text == ("1-channel and 4-channel 30x30 to 40x30 PNG images (16-bit grey, RGB with alpha) -> 1x16x16: "
                    "16-bit grey clipped to 0-255 by Pillow's conversion (values above 255 turn white: save 8-bit "
                    "images, or rescale them, to keep the range), colour turned grey (ITU-R 601-2 luma; pass "
                    "--in-chans 3 to keep colour), alpha dropped, short side resized to 16 (bilinear), centre crop "
                    "to 16x16")
    assert np.asarray(open_image(tmp_path / "a" / "deep.png", 1)).max() == 255  # the clipping is real
    assert "grey repeated to 3 channels (pass --in-chans 1" in conversion_text(survey, 3, 16)


def test_imagenet_style_folders(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c in ("a", "b"):
            _write_png(tmp_path / split / c / "0.png", 100)
    val = load_dataset(str(tmp_path), "test", in_chans=3, img_size=28)
    assert val.images.shape == (2, 3, 28, 28) and val.classes == ("a", "b")


def test_verification_data_of_an_imagenet_style_tree(tmp_path: Path) -> None:
    """The export's verification images from a train/ + val/ tree: the first files of val/, labelled by train's
    classes, decoded alone (a broken file elsewhere in val/ or train/ is never opened), to the model's shape."""
    from pipeline.data import verification_data

    for c in ("a", "b", "c"):
        _write_png(tmp_path / "train" / c / "0.png", 50)
        for i in range(3):
            _write_png(tmp_path / "val" / c / f"{i}.png", 60 * i, size=40)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "val" / "c" / "2.png").write_bytes(b"\x89PNG not really")
    cfg = TINY.replace(in_chans=3, img_size=32, num_classes=3)
    v = verification_data(cfg, 5, str(tmp_path))
    assert v.images.shape == (5, 3, 32, 32) and v.images.dtype == torch.float32
    assert v.split == "val" and v.decoded == 5 and v.chosen_by == "--data"
    assert v.files == ["val/a/0.png", "val/a/1.png", "val/a/2.png", "val/b/0.png", "val/b/1.png"]
    assert v.source == f"folder:{tmp_path.resolve()}" and v.normalization["from"] == "these images"
    # More images asked for than the split has: the decoded ones repeat, none is decoded twice.
    w = verification_data(cfg, 12, str(tmp_path / "val"), {"mean": [0.5] * 3, "std": [0.25] * 3})
    assert w.decoded == 1 and w.images.shape[0] == 12 and torch.equal(w.images[0], w.images[11])
    assert w.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3, "from": "checkpoint"}
    # A model whose input Fashion-MNIST cannot feed, and nothing else to go on: seeded noise, said so.
    n = verification_data(cfg, 2)
    assert n.source == "seeded random normal images" and n.split is None and "--data DIR" in n.why
    assert torch.equal(n.images, verification_data(cfg, 2).images)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "--mode", "student", "--keep-ratio", "1.5", "--out",
         str(tmp_path / "o"), "--teacher", str(tmp_path / "t.pt")],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "outside (0, 1]" in r.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_timm_model_is_one_clear_error() -> None:
    with pytest.raises(CheckpointError, match="timm has no model 'no_such_vit'"):
        init_from_pretrained(DynamicViT(TINY), "timm:no_such_vit")


def test_atomic_artifacts_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from pipeline.io import atomic_dir, atomic_write_text

    mask = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
