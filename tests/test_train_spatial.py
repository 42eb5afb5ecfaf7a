"""`dvit train` for the spatially sparsified models (T-PAMI DynamicViT: DynamicCNN on ConvNeXt, DynamicSwin on Swin):
the dense teacher trains and the student is distilled from it, for real, on real Fashion-MNIST resized to the small
presets' 64x64 (convnext-fmnist, swin-fmnist), with budgets of a few dozen steps on small subsets."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import load_model, read_checkpoint, save_checkpoint
from pipeline.config import TrainConfig
from pipeline.data import load_fashion_mnist, refit
from pipeline.spatial.config import spatial_config
from pipeline.spatial.convnext import DynamicCNN
from pipeline.spatial.swin import DynamicSwin
from pipeline.train import train
from pipeline.train.recipe import train_config
from pipeline.train.spatial import load_spatial_teacher, spatial_param_groups, start_from_teacher

ROOT = Path(__file__).resolve().parents[1]
FAMILIES: dict[str, type[DynamicCNN | DynamicSwin]] = {"convnext-fmnist": DynamicCNN, "swin-fmnist": DynamicSwin}
QUICK = {"batch_size": 32, "max_steps_per_epoch": 12, "train_subset": 768, "eval_subset": 200, "lr": 2e-3,
         "warmup_epochs": 0.0}


def quick(model: str, **changes: object) -> TrainConfig:
    """The small recipe as `dvit train --model <model>` builds it (the spatial objective's weights included), cut to
    the budget above."""
    return train_config("small", {**QUICK, **changes}, model=model)[0]


@pytest.fixture(scope="module")
def untrained_convnext_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense convnext-fmnist file as `dvit train --mode teacher` writes it, for what needs a file, not a teacher."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("convnext-untrained") / "teacher.pt"
    save_checkpoint(path, DynamicCNN(spatial_config("convnext-fmnist", dense=True)))  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def teacher(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict]:
    """(model, teacher file, its training result): the dense model, two epochs of 12 steps."""
    name = request.param
    out = tmp_path_factory.mktemp(f"{name}-teacher")
    res = train(spatial_config(name, dense=True), quick(name, epochs=2), out, progress=False)
    return name, out / "model.pt", res


def test_dense_teacher_learns(teacher: tuple[str, Path, dict]) -> None:
    """Its loss falls from the first step to the last epoch, and it classifies held-out test images far above
    chance (10 classes: 10%); the file loads back as the dense model of its family at 1x64x64."""
    name, path, res = teacher
    hist = res["history"]
    assert hist[-1]["train_total"] < 0.8 * hist[0]["first_step"]["total"], hist
    assert hist[-1]["test_top1"] > 25.0, hist
    model = load_model(path)
    assert isinstance(model, FAMILIES[name]) and model.cfg == spatial_config(name, dense=True)
    assert (model.cfg.in_chans, model.cfg.img_size) == (1, 64)
    summary = json.loads((path.parent / "summary.json").read_text())
    assert "-> 1x64x64" in summary["data"]["conversion"] and "resized to 64x64" in summary["data"]["conversion"]


def test_student_distils_from_its_teacher(teacher: tuple[str, Path, dict], tmp_path: Path) -> None:
    """The sparse student (rho 0.7) trains against the teacher with the official objective, in memory (ConvNeXt)
    and streamed by a worker process (Swin): every term of the first step is finite, the keep-ratio term among them,
    and the ratio loss pulls the predictors' near-even split toward rho, rho - 0.2, rho - 0.4 (the last location's
    slow-path share toward 0.3). The file loads back as the right class and configuration, whose inference keeps
    cfg.keep_counts positions."""
    name, path, _ = teacher
    cfg = spatial_config(name, keep_ratio=0.7)
    loader = {"loader": "stream", "workers": 1} if name == "swin-fmnist" else {}
    res = train(cfg, quick(name, epochs=3, max_steps_per_epoch=8, lr=1e-2, **loader), tmp_path / "s",
                teacher_path=str(path), progress=False)
    hist = res["history"]
    first = hist[0]["first_step"]
    assert set(first) == {"total", "ce", "distill_kl", "distill_token", "ratio", "kept"}
    assert all(math.isfinite(v) for v in first.values()) and first["ratio"] > 0, first
    assert hist[-1]["train_ratio"] < 0.6 * first["ratio"], hist
    assert abs(hist[-1]["train_kept"] - 0.3) < abs(first["kept"] - 0.3), hist
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["data"]["loader"] == ("stream" if loader else
                                                                                          "memory")
    student = load_model(tmp_path / "s" / "model.pt")
    assert isinstance(student, FAMILIES[name]) and student.cfg == cfg and not student.cfg.is_dense
    test = load_fashion_mnist("test").subset(4, 0)
    out = student.forward_inference(test.normalize(refit(test.images, cfg.in_chans, cfg.img_size)))
    assert [tuple(k.shape) for k in out.kept_positions] == [(4, k) for k in cfg.keep_counts]
    assert out.logits.shape == (4, 10) and torch.isfinite(out.logits).all()
    assert read_checkpoint(tmp_path / "s" / "model.pt")["train_config"]["loss"]["ratio"] == 10.0


def test_student_starts_from_the_teacher_and_trains_new_modules_faster(teacher: tuple[str, Path, dict]) -> None:
    """As official main.py: every weight the dense teacher has goes into the student, the predictors and fast paths
    keep their initialisation; those new modules learn at lr, the backbone at 0.2 x lr (README --lr_scale 0.2)."""
    name, path, _ = teacher
    cfg = spatial_config(name)
    t = load_spatial_teacher(path, cfg)
    torch.manual_seed(0)
    student = FAMILIES[name](cfg)
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    start_from_teacher(student, t)
    own, theirs = student.state_dict(), t.state_dict()
    new = [k for k in own if k not in theirs]
    assert new and all(("predictor" in k or "fast" in k) for k in new)
    assert all(torch.equal(own[k], theirs[k]) for k in theirs)
    assert all(torch.equal(own[k], fresh[k]) for k in new)

    tcfg = quick(name)
    assert tcfg.backbone_lr_scale == 0.2
    names = {id(p): n for n, p in student.named_parameters()}
    groups = spatial_param_groups(student, tcfg, student=True)
    assert sum(len(g["params"]) for g in groups) == len(names)
    for g in groups:
        is_new = {("predictor" in names[id(p)] or "fast" in names[id(p)]) for p in g["params"]}
        assert len(is_new) == 1
        assert g["lr"] == pytest.approx(tcfg.lr * (1.0 if is_new.pop() else 0.2))
        assert (g["weight_decay"] == 0.0) == all(p.ndim <= 1 for p in g["params"])


def test_recipe_gives_spatial_models_the_official_settings() -> None:
    """Every recipe: the objective's weights (CE 1, ratio 10, KL 0.5, feature map 0.5) and the backbone rate 0.2;
    deit: the README's 120 epochs, 20 warm-up epochs; the flags still win; the token-pruning models unchanged."""
    small = train_config("small", {}, model="swin-fmnist")[0]
    assert (small.loss.ce, small.loss.ratio, small.loss.distill_kl, small.loss.distill_token) == (1.0, 10.0, 0.5, 0.5)
    assert small.backbone_lr_scale == 0.2 and small.epochs == TrainConfig().epochs
    deit = train_config("deit", {"batch_size": 4096}, model="convnext-b")[0]
    assert (deit.epochs, deit.warmup_epochs, deit.lr, deit.loss.ratio) == (120, 20.0, pytest.approx(4e-3), 10.0)
    given = train_config("small", {"w_ratio": 3.0, "backbone_lr_scale": 0.05, "epochs": 2}, model="convnext-t")[0]
    assert (given.loss.ratio, given.backbone_lr_scale, given.epochs) == (3.0, 0.05, 2)
    assert train_config("small", {}, model="fmnist_tiny")[0] == train_config("small", {})[0]


def _dvit_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "train", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout, check=False)


def test_cli_student_without_teacher_trains_one_first(tmp_path: Path) -> None:
    """`dvit train --model convnext-fmnist` (student, no --teacher): the dense teacher trains into OUT/teacher, the
    student is distilled from it; the log says what the 28x28 images become and the objective it uses."""
    out = tmp_path / "run"
    r = _dvit_train("--model", "convnext-fmnist", "--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "3",
                    "--train-subset", "256", "--eval-subset", "64", "--no-progress", "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1-channel 28x28 idx images (grey) -> 1x64x64: resized to 64x64 (bilinear)" in r.stderr
    assert "keep ratio 10" in r.stderr and "no --teacher given, so the dense teacher trains first" in r.stderr
    assert load_model(out / "teacher" / "model.pt").cfg == spatial_config("convnext-fmnist", dense=True)
    assert load_model(out / "model.pt").cfg == spatial_config("convnext-fmnist")
    assert json.loads((out / "summary.json").read_text())["teacher"] == str(out / "teacher" / "model.pt")


@pytest.mark.parametrize("case", ["unknown model", "other family's teacher", "keep ratio 0.4"])
def test_bad_input_is_one_line(tmp_path: Path, untrained_convnext_teacher: Path, case: str) -> None:
    """Each refusal is the last stderr line, `dvit train: error: ...`, and leaves no output directory behind."""
    path = untrained_convnext_teacher
    out = tmp_path / "o"
    args = ["--out", str(out), "--no-progress", "--epochs", "1"]
    if case == "unknown model":
        args += ["--model", "convnext-tiny"]
        expect = ["invalid choice: 'convnext-tiny'", "convnext-fmnist", "swin-fmnist", "swin-t", "fmnist_tiny"]
    elif case == "other family's teacher":
        args += ["--model", "swin-fmnist", "--teacher", str(path)]
        expect = [f"teacher checkpoint {path} holds a ConvNeXt model and 'swin-fmnist' is a Swin model"]
    else:
        args += ["--model", "convnext-fmnist", "--keep-ratio", "0.4"]
        expect = ["keep ratio 0.4", "pass --keep-ratio above 0.4"]
    r = _dvit_train(*args)
    assert r.returncode == 2, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dvit train: error:") and all(e in last for e in expect), last
    assert not out.exists()


def test_two_processes_distil_what_one_does(tmp_path: Path, untrained_convnext_teacher: Path) -> None:
    """torchrun with two processes: the same global batch, augmentation and Gumbel draws (ConvNeXt's reshaped to its
    predictor's [B, 2, H, W]; the loop is shared with Swin), so the first step's terms and kept share agree with one
    process's."""
    common = ["--model", "convnext-fmnist", "--teacher", str(untrained_convnext_teacher), "--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch",
              "2", "--train-subset", "256", "--eval-subset", "64", "--no-progress", "--seed", "3", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    firsts = []
    for n in (1, 2):
        out = tmp_path / f"w{n}"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                            "-m", "pipeline.cli", "train", *common, "--out", str(out)], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=300, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        firsts.append(json.loads((out / "metrics.json").read_text())[0]["first_step"])
    one, two = firsts
    assert two["kept"] == one["kept"]
    for term in ("ce", "ratio", "distill_token"):
        assert two[term] == pytest.approx(one[term], rel=1e-5, abs=1e-6), term
