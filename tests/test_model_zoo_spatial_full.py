"""The six official spatial names at their full size (issue 18), marked slow: random weights saved in the official
release format ({'model': state_dict}, the keys of models/dyconvnext.py / dyswin.py, which ours are) load with every
key mapped through `--model NAME`; the exported graph set (b1, with the dense teacher from a Facebook/Microsoft-
layout file) matches PyTorch in ONNX Runtime (the export's own gate on seeded random images: logits within 1e-4,
kept positions identical);
TensorRT-RTX builds its FP32 and FP16 engines.

    .venv/bin/pytest -m slow tests/test_model_zoo_spatial_full.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_model_zoo_stages import TARGET, ok

from pipeline.checkpoint import load_model
from pipeline.graphset import GraphSet
from pipeline.spatial.config import OFFICIAL_SPATIAL, spatial_config
from pipeline.spatial.load import build_spatial

pytestmark = pytest.mark.slow


def write_textured_images(root: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder = root / split / "class0"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (224, 224, 3)).astype(np.uint8), "RGB").save(folder / f"{i}.png")


@pytest.mark.parametrize("name", OFFICIAL_SPATIAL)
def test_official_release_exports_and_builds(name: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")
    torch.manual_seed(0)
    student, teacher = build_spatial(spatial_config(name)), build_spatial(spatial_config(name, dense=True))
    torch.save({"model": student.state_dict()}, tmp_path / "release.pth")
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    loaded = load_model(tmp_path / "release.pth", preset=name)  # strict: every key of the release maps
    assert loaded.cfg == spatial_config(name) and not loaded.training
    write_textured_images(tmp_path / "data", 2)
    out = tmp_path / "export"
    printed = ok(("export", "--checkpoint", tmp_path / "release.pth", "--teacher", tmp_path / "teacher.pth",
                  "--model", name, "--batch-sizes", "1", "--verify-images", "2",
                  "--out", out, "--no-progress"))
    assert "all match PyTorch" in printed
    gs = GraphSet.load(out, ("export",))
    assert gs.manifest["keep_counts"] == spatial_config(name).keep_counts
    fp16 = tmp_path / "fp16"
    ok(("precision", "--graphs", out, "--precision", "fp16", "--data", tmp_path / "data", "--calib-size", "2",
        "--out", fp16, "--no-progress"))
    for src in (out, fp16):
        engines = tmp_path / f"engines-{src.name}"
        ok(("build", "--graphs", src, "--target", TARGET, "--out", engines, "--no-progress"))
        built = GraphSet.load(engines, ("engine",))
        assert [e.name for e in built.batch(1).entries()] == ["stage0", "stage1", "stage2", "stage3", "fused", "teacher"]
        assert all(e.path.stat().st_size > 0 for e in built.entries())
