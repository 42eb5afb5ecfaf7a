"""Streamed training data: determinism across workers and ranks, the automatic choice of path, accumulation,
bad input, and the progress figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import save_checkpoint
from pipeline.config import ModelConfig, TrainConfig
from pipeline.errors import ConfigError, DataError
from pipeline.image_index import folder_split, scan_image_folder
from pipeline.model import DynamicViT
from pipeline.train import augment, train
from pipeline.train.recipe import train_config
from pipeline.train.sources import choose_loader
from pipeline.train.stream import FolderSource, StreamBatches
from tests.train_data import corrupt, write_image_tree

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig("tiny", img_size=28, patch_size=4, in_chans=1, num_classes=2, embed_dim=32, depth=4,
                   num_heads=2, pruning_loc=(1, 2, 3), keep_ratio=0.7)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_image_tree(root, per_class=40, size=36)
    return root


def _epoch_batches(root: Path, world: int, rank: int, workers: int, epoch: int = 1) -> list[torch.Tensor]:
    cfg, _ = train_config("deit", {})
    idx = scan_image_folder(root)
    t = augment.train_transform(cfg.aug, 28, (0.5,), (0.25,))
    b = StreamBatches(FolderSource(idx, 1), t, global_batch=8, seed=5, rank=rank, world=world, workers=workers)
    try:
        return [x for x, _, _ in b.epoch(epoch)]
    finally:
        b.close()


def test_streamed_samples_do_not_depend_on_workers_or_ranks(tree: Path) -> None:
    """RandomResizedCrop, RandAugment and random erasing draw per sample from (seed, epoch, position): two ranks
    with two workers each cut exactly the global batches one process without workers decodes."""
    single = _epoch_batches(tree, world=1, rank=0, workers=0)
    ranks = [_epoch_batches(tree, world=2, rank=r, workers=2) for r in (0, 1)]
    assert len(single) == 80 // 8
    for step, whole in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][step], ranks[1][step]]), whole), step
    other_epoch = _epoch_batches(tree, world=1, rank=0, workers=0, epoch=2)
    assert not torch.equal(other_epoch[0], single[0])  # augmentation is drawn afresh each epoch


def test_auto_keeps_the_embedded_default_in_memory_and_streams_what_is_large() -> None:
    small = TrainConfig()
    assert choose_loader(small, 70_000, 28 * 28)[0] == "memory"
    kind, why = choose_loader(small, 1_331_167, 3 * 224 * 224)  # ImageNet train + val at 224
    assert kind == "stream" and "over the" in why
    deit, _ = train_config("deit", {})
    kind, why = choose_loader(deit, 70_000, 28 * 28)
    assert kind == "stream" and "timm" in why
    forced, _ = train_config("small", {"loader": "stream"})
    assert choose_loader(forced, 10, 10)[0] == "stream"
    contradiction, _ = train_config("deit", {"loader": "memory"})
    with pytest.raises(ConfigError, match="run on the streamed path: drop --loader memory"):
        choose_loader(contradiction, 10, 10)


def test_deit_recipe_streams_the_embedded_default(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Fashion-MNIST's in-memory arrays served as images to timm's transforms, Mixup on, EMA on."""
    from pipeline.config import model_config

    cfg, _ = train_config("deit", {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2, "train_subset": 64,
                                   "eval_subset": 32, "workers": 0})
    res = train(model_config("fmnist_tiny", dense=True), cfg, tmp_path / "o", progress=False)
    rec = res["history"][0]
    assert "timm's per-sample transforms need the source images" in capfd.readouterr().err
    assert rec["train_total"] > 0 and 0 <= rec["test_top1_ema"] <= 100
    saved = torch.load(tmp_path / "o" / "model.pt")
    assert saved["data"]["loader"] == "stream" and saved["train_config"]["aug"]["mixup"] == 0.8


def _teacher(tmp: Path, cfg: ModelConfig = TINY) -> Path:
    torch.manual_seed(0)
    path = tmp / "teacher.pt"
    save_checkpoint(path, DynamicViT(cfg.as_dense()))
    return path


def test_accumulation_matches_one_big_batch(tmp_path: Path, tree: Path) -> None:
    """Two micro-batches per step give the loss and (for a per-sample mean) the weights of one full batch."""
    runs = {}
    for k in (1, 2):
        cfg, _ = train_config("small", {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2, "accum_steps": k,
                                        "loader": "stream", "workers": 0, "eval_subset": 8})
        res = train(TINY.as_dense(), cfg, tmp_path / f"a{k}", data=str(tree), progress=False)
        runs[k] = (res["history"][0]["first_step"]["total"], torch.load(tmp_path / f"a{k}" / "model.pt")["model"])
    assert runs[2][0] == pytest.approx(runs[1][0], rel=1e-6)
    for name, w in runs[1][1].items():
        torch.testing.assert_close(runs[2][1][name], w, atol=2e-6, rtol=1e-5)


def test_streamed_deit_run_resumes_exactly(tmp_path: Path, tree: Path) -> None:
    """Mixup/CutMix, RandAugment, EMA and the streamed order all continue from last.pt as if never stopped."""
    cfg, _ = train_config("deit", {"epochs": 2, "batch_size": 8, "max_steps_per_epoch": 3, "workers": 1,
                                   "eval_subset": 8, "ema_decay": 0.9})
    teacher = str(_teacher(tmp_path, TINY))
    train(TINY, cfg, tmp_path / "a", teacher_path=teacher, data=str(tree), progress=False)
    train(TINY, cfg, tmp_path / "b", teacher_path=teacher, data=str(tree), progress=False, stop_after_epochs=1)
    train(TINY, cfg, tmp_path / "b", teacher_path=teacher, data=str(tree), progress=False, resume=True)
    a, b = torch.load(tmp_path / "a" / "model.pt"), torch.load(tmp_path / "b" / "model.pt")
    for key in ("model", "model_ema"):
        for name, w in a[key].items():
            assert torch.equal(b[key][name], w), (key, name)
    assert a["data"]["loader"] == "stream" and a["history"][-1]["test_top1_ema"] >= 0


def test_unreadable_image_mid_epoch_is_skipped_named_and_counted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    paths = write_image_tree(root / "train", per_class=20, size=28)
    write_image_tree(root / "val", per_class=2, size=28)
    corrupt(paths[7])
    cfg, _ = train_config("small", {"epochs": 1, "batch_size": 8, "loader": "stream", "workers": 1, "eval_subset": 8})
    res = train(TINY, cfg, tmp_path / "out", teacher_path=str(_teacher(tmp_path)), data=str(root), progress=False)
    err = capfd.readouterr().err
    assert f"skipped unreadable image {paths[7]}" in err and "the next image takes its place" in err
    rec = res["history"][0]
    assert rec["skipped_images"] == 1  # 40 training images in 5 steps of 8: each is met once
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_images"] == 1 and summary["data"]["loader"] == "stream"
    # the progress figures a user watches: throughput, data wait against compute, in the log and the metrics
    assert rec["images_per_second"] > 0 and 0 <= rec["data_wait_fraction"] <= 1
    assert rec["data_seconds"] + rec["compute_seconds"] > 0
    assert "img/s, data wait" in err and "data: streamed by 1 worker process per rank" in err


def test_a_damaged_dataset_stops_with_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    paths = write_image_tree(root, per_class=20, size=28)
    for p in paths[::3]:
        corrupt(p)
    cfg, _ = train_config("small", {"epochs": 1, "batch_size": 8, "loader": "stream", "workers": 0, "eval_subset": 8})
    with pytest.raises(DataError, match=r"unreadable images in epoch 1 .*over 1% of the epoch: the dataset looks damaged"):
        train(TINY.as_dense(), cfg, tmp_path / "out", data=str(root), progress=False)


def test_folder_problems_are_named(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "ds" / "train", per_class=3)
    write_image_tree(tmp_path / "ds" / "val", per_class=1)
    (tmp_path / "ds" / "val" / "zebra").mkdir()
    write_image_tree(tmp_path / "ds" / "val" / "zebra", per_class=1, classes=1)
    with pytest.raises(DataError, match=r"class folders \['zebra'\] that the training split lacks: add them to train/"):
        folder_split(tmp_path / "ds", "test")
    (tmp_path / "ds" / "train" / "class2").mkdir()
    with pytest.raises(DataError, match=r"class folder .*class2 holds no images .*add images or remove the folder"):
        folder_split(tmp_path / "ds", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders"):
        scan_image_folder(tmp_path / "empty")


@pytest.mark.parametrize("case", ["val-only class", "empty class folder", "empty dataset", "odd mixup batch",
                                  "amp on cpu", "nodes without endpoint"])
def test_cli_bad_data_is_one_line(tmp_path: Path, case: str) -> None:
    ds = tmp_path / "ds"
    args = ["--mode", "teacher", "--out", str(tmp_path / "o"), "--data", str(ds), "--no-progress", "--epochs", "1"]
    if case == "val-only class":
        write_image_tree(ds / "train", per_class=2)
        write_image_tree(ds / "val", per_class=1, classes=3)
        expect = "class folders ['class2'] that the training split lacks"
    elif case == "empty class folder":
        write_image_tree(ds, per_class=2)
        (ds / "class9").mkdir()
        expect = "holds no images"
    elif case == "empty dataset":
        ds.mkdir()
        expect = "has no class sub-folders"
    elif case == "odd mixup batch":
        write_image_tree(ds, per_class=20)
        args += ["--recipe", "deit", "--batch-size", "6", "--accum-steps", "2"]
        expect = "Mixup/CutMix pairs images within a micro-batch, and 3 is odd"
    elif case == "amp on cpu":
        write_image_tree(ds, per_class=20)
        args += ["--amp", "bf16"]
        expect = "--amp bf16 needs a CUDA device and this run is on cpu: drop --amp"
    else:
        args += ["--nproc-per-node", "2", "--nnodes", "2"]
        expect = "--nnodes above 1 needs --rdzv-endpoint HOST:PORT"
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", *args], capture_output=True, text=True,
                       cwd=ROOT, check=False)
    assert r.returncode == 2, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dvit train: error:") and expect in last, r.stderr[-1500:]


def test_a_starved_epoch_is_named_with_its_fix() -> None:
    from pipeline.train.progress import EpochClock, duration, starvation_warning

    fed = EpochClock(images_per_step=64, data_s=0.5, compute_s=9.5, steps=10)
    assert starvation_warning(fed, 2, "stream") is None
    assert fed.images_per_second == pytest.approx(64.0) and fed.eta(20) == pytest.approx(20.0)
    starved = EpochClock(images_per_step=64, data_s=6.0, compute_s=2.0, steps=10)
    warning = starvation_warning(starved, 2, "stream")
    assert warning is not None and "75% of step time" in warning and "raise --workers (now 2)" in warning
    assert duration(3725) == "1h02m" and duration(float("nan")) == "?"
