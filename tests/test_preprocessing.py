"""The preprocessing record that travels with the model: written by 'dvit export', carried by every later stage,
and applied on a device to turn a camera frame into exactly the tensor the training-side eval path makes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY, trained_like

from pipeline import export, plugin_pass
from pipeline.checkpoint import save_checkpoint
from pipeline.data import FMNIST_CLASSES, _load_image, load_fashion_mnist, open_image
from pipeline.graphset import GraphSet
from pipeline.model import DynamicViT
from pipeline.preprocessing import Preprocessing, from_training
from pipeline.train.augment import eval_transform
from pipeline.train.recipe import DEIT, SMALL

RGB3 = TINY.replace(in_chans=3, num_classes=3)


def _jpegs(root: Path, n: int, shape: tuple[int, int], seed: int = 0) -> list[Path]:
    """Real JPEG files of odd sizes (so the resize and the crop both do something)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = shape[0] + 7 * i, shape[1] + 3 * c
            img = 60.0 * c + np.linspace(0, 90, w)[None, :, None] + rng.normal(0, 30, (h, w, 3))
            paths.append(root / f"c{c}" / f"{i:03d}.jpg")
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def _decoded(path: Path) -> np.ndarray:
    """The file as a camera would hand it over: HxWx3 uint8."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def fmnist_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pre")
    torch.manual_seed(0)
    save_checkpoint(d / "student.pt", trained_like(DynamicViT(TINY)))
    export.export(d / "student.pt", d / "out", batch_sizes="1", verify_images=6, progress=False)
    return d


def test_fashion_mnist_record_matches_the_verification_images(fmnist_export: Path) -> None:
    """The export records 1x28x28 grey, Fashion-MNIST's mean/std and class names; applied to the raw test images
    it gives the very tensors the export verified the graphs on (the project's eval data path)."""
    gs = GraphSet.load(fmnist_export / "out")
    pre = gs.preprocessing
    assert pre is not None
    assert pre.input_size == (28, 28) and pre.channels == 1 and pre.color == "grey"
    assert pre.mean == pytest.approx((0.2860,)) and pre.std == pytest.approx((0.3530,))
    assert pre.classes == FMNIST_CLASSES and "Fashion-MNIST" in pre.sources["classes"]
    assert pre.sources["mean"].startswith("dataset default") and pre.sources["resize"].startswith("default")
    cfg = gs.config
    verified = export.verification_set(cfg, fmnist_export / "student.pt", 6, None).images.numpy()
    raw = load_fashion_mnist("test").images[:6, 0].numpy()
    for backend in ("pillow", "numpy"):
        got = np.stack([pre.apply(im, backend=backend) for im in raw])
        assert got.shape == (6, 1, 28, 28) and got.dtype == np.float32
        np.testing.assert_allclose(got, verified, rtol=0, atol=1e-6)
    # A wrong record does not: the test can fail.
    other = Preprocessing.from_dict({**pre.to_dict(), "mean": [0.3]})
    assert np.abs(other.apply(raw[0]) - verified[0]).max() > 0.01


def test_record_is_carried_by_the_plugin_pass_and_old_sets_still_load(fmnist_export: Path, tmp_path: Path) -> None:
    src = fmnist_export / "out"
    m = plugin_pass.plugin_pass(src, tmp_path / "plugin", progress=False)
    exported = GraphSet.load(src).manifest["preprocessing"]
    assert m["preprocessing"] == exported
    assert GraphSet.load(tmp_path / "plugin").preprocessing == GraphSet.load(src).preprocessing
    # A graph set exported before the record existed loads, without one.
    old = tmp_path / "old"
    shutil.copytree(src, old)
    man = json.loads((old / "manifest.json").read_text())
    del man["preprocessing"]
    (old / "manifest.json").write_text(json.dumps(man))
    gs = GraphSet.load(old)
    assert gs.preprocessing is None and "preprocessing" not in gs.header()


def test_json_round_trip_and_refusals() -> None:
    pre = from_training(in_chans=3, img_size=224, train_config=DEIT.config.to_dict(), mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), norm_from="checkpoint data record", classes=None,
                        classes_from="absent: the checkpoint records no class names")
    d = json.loads(json.dumps(pre.to_dict()))
    assert Preprocessing.from_dict(d) == pre
    assert d["resize"] == {"short_side": 256, "long_side": "floor", "interpolation": "bicubic"}
    assert d["center_crop"] == {"size": [224, 224], "offset": "round"} and d["scale"] == "0-1"
    assert d["classes"] is None and d["sources"]["classes"].startswith("absent")
    assert "classes unknown" in pre.summary() and "3x224x224, rgb" in pre.summary()
    with pytest.raises(ValueError, match="format"):
        Preprocessing.from_dict({**d, "format": "something/else"})
    with pytest.raises(ValueError, match="mean has 1 values"):
        Preprocessing.from_dict({**d, "mean": [0.5]})
    with pytest.raises(ValueError, match="uint8"):
        pre.apply(np.zeros((10, 10, 3), dtype=np.float32))


@pytest.mark.parametrize("recipe", ["small", "deit"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_apply_matches_the_eval_transform_on_real_jpegs(recipe: str, in_chans: int, tmp_path: Path) -> None:
    """For each recipe's eval path (the small recipe's fit_square, deit's timm transform) and either colour
    mode, `apply` on the decoded RGB camera frame equals the project's own transform of the file."""
    tc = (SMALL if recipe == "small" else DEIT).config
    mean, std = (0.45,) * in_chans, (0.27,) * in_chans
    pre = from_training(in_chans=in_chans, img_size=28, train_config=tc.to_dict(), mean=mean, std=std,
                        norm_from="checkpoint data record", classes=("c0", "c1", "c2"), classes_from="checkpoint")
    transform = eval_transform(tc.aug, 28, mean, std)
    for p in _jpegs(tmp_path, 2, (41, 57)):
        want = transform(open_image(p, in_chans)).numpy()
        frame = _decoded(p)
        np.testing.assert_allclose(pre.apply(frame, backend="pillow"), want, rtol=0, atol=1e-5)
        # numpy only (no Pillow on the device): within one grey level per pixel
        levels = np.abs(pre.apply(frame, backend="numpy") - want) * np.asarray(std)[:, None, None] * 255
        assert levels.max() <= 1.0 + 1e-3
    if recipe == "small":  # the in-memory path decodes the same pixels
        raw = _load_image(p, in_chans, 28).astype(np.float32) / 255
        np.testing.assert_allclose(pre.apply(_decoded(p)), (raw - mean[0]) / std[0], rtol=0, atol=1e-5)


def test_rgb_export_records_the_checkpoints_data_and_recipe(tmp_path: Path) -> None:
    """A checkpoint trained with the deit recipe on an RGB folder: the manifest records its classes and mean/std
    (from the checkpoint's data record) and timm's eval resize/crop (from its training config)."""
    photos = tmp_path / "photos"
    _jpegs(photos, 6, (33, 30))
    torch.manual_seed(5)
    model = DynamicViT(RGB3)  # trained_like centres on Fashion-MNIST, which an RGB model cannot take
    record = {"loader": "stream", "source": f"folder:{photos}", "classes": ["c0", "c1", "c2"],
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    save_checkpoint(tmp_path / "rgb.pt", model, data=record, train_config=DEIT.config.to_dict())
    logs: list[str] = []
    export.export(tmp_path / "rgb.pt", tmp_path / "out", batch_sizes="1", verify_images=2, progress=False,
                  log=logs.append)
    pre = GraphSet.load(tmp_path / "out").preprocessing
    assert pre is not None
    assert pre.channels == 3 and pre.color == "rgb" and pre.classes == ("c0", "c1", "c2")
    assert pre.mean == tuple(record["mean"]) and pre.sources["mean"] == "checkpoint data record"
    assert pre.interpolation == "bicubic" and pre.resize_short_side == 32 and pre.sources["resize"].startswith("training")
    line = next(x for x in logs if x.startswith("input:"))
    assert "3x28x28, rgb" in line and "mean 0.4850 0.4560 0.4060" in line and "3 classes (c0, c1, c2)" in line
