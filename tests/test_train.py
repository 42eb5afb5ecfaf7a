"""Training: resume is exact, distributed runs reproduce a single process, evaluation measures FLOPs."""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import load_model, read_checkpoint, save_checkpoint
from pipeline.config import ModelConfig, TrainConfig, model_config
from pipeline.data import load_fashion_mnist
from pipeline.evaluate import count_flops, evaluate
from pipeline.model import DynamicViT
from pipeline.train import lr_factor, train
from tests.train_data import write_image_tree

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig("tiny", img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=4,
                   num_heads=2, pruning_loc=(1, 2, 3), keep_ratio=0.7)
QUICK = {"batch_size": 32, "max_steps_per_epoch": 3, "train_subset": 256, "eval_subset": 64, "lr": 1e-3, "warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, DynamicViT(TINY.as_dense()))
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, teacher_ckpt: Path) -> None:
    cfg = TrainConfig(epochs=3, **QUICK)
    train(TINY, cfg, tmp_path / "a", teacher_path=str(teacher_ckpt), progress=False)
    train(TINY, cfg, tmp_path / "b", teacher_path=str(teacher_ckpt), progress=False, stop_after_epochs=1)
    assert not (tmp_path / "b" / "model.pt").exists()  # stopped early: no final checkpoint yet
    assert read_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 0
    train(TINY, cfg, tmp_path / "b", teacher_path=str(teacher_ckpt), progress=False, resume=True)
    a, b = _weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "b" / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert (tmp_path / "b" / "metrics.csv").read_text().splitlines()[0].startswith("epoch")


def test_student_learns_its_keep_ratio(tmp_path: Path, teacher_ckpt: Path) -> None:
    cfg = TrainConfig(epochs=3, **{**QUICK, "max_steps_per_epoch": 8, "lr": 1e-2})
    res = train(TINY, cfg, tmp_path / "s", teacher_path=str(teacher_ckpt), progress=False)
    hist = res["history"]
    # Random predictors keep about half the tokens per stage; the ratio loss must pull that toward rho^k.
    assert hist[-1]["train_ratio"] < hist[0]["first_step"]["ratio"]
    model = load_model(tmp_path / "s" / "model.pt")
    assert model.cfg == TINY


def test_a_student_without_a_teacher_trains_one_first_and_resumes_exactly(tmp_path: Path) -> None:
    """No teacher given: the dense teacher trains first into OUT/teacher on the same data and settings, and the student
    is distilled from it. --stop-after-epochs counts the teacher's epochs first; --resume continues where the run
    stopped, teacher or student, to the same weights as an uninterrupted run."""
    cfg = TrainConfig(epochs=2, **QUICK)
    a, b = tmp_path / "a", tmp_path / "b"
    train(TINY, cfg, a, progress=False, teacher_epochs=1)
    teacher = load_model(a / "teacher" / "model.pt")
    assert teacher.cfg == TINY.as_dense() and len(read_checkpoint(a / "teacher" / "model.pt")["history"]) == 1
    assert json.loads((a / "summary.json").read_text())["teacher"] == str(a / "teacher" / "model.pt")
    assert load_model(a / "model.pt").cfg == TINY

    r = train(TINY, cfg, b, progress=False, teacher_epochs=1, stop_after_epochs=1)  # the teacher's one epoch
    assert not r["finished"] and (b / "teacher" / "model.pt").is_file() and not (b / "last.pt").exists()
    train(TINY, cfg, b, progress=False, teacher_epochs=1, stop_after_epochs=1, resume=True)  # the student's first
    assert read_checkpoint(b / "last.pt")["epoch"] == 0 and not (b / "model.pt").exists()
    train(TINY, cfg, b, progress=False, teacher_epochs=1, resume=True)
    for rel in ("teacher/model.pt", "model.pt"):
        wa, wb = _weights(a / rel), _weights(b / rel)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (rel, k)


def _torchrun(args: list[str], nproc: int, rendezvous: bool = False) -> subprocess.CompletedProcess[str]:
    """torchrun --standalone, or (rendezvous) dvit's own launcher with a c10d rendezvous on a TCP endpoint, the
    way nodes of a multi-node run meet."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if rendezvous:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "pipeline.cli", "train", *args, "--nproc-per-node", str(nproc),
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pipeline.cli", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)


@pytest.mark.parametrize("mode", ["teacher", "student", "student-streamed", "student-own-teacher"])
def test_two_process_ddp_matches_one_process(tmp_path: Path, mode: str) -> None:
    """In memory (the embedded default) and streamed from an ImageFolder with DeiT's per-sample augmentation, the
    latter with two processes of two accumulation steps each against one process taking the whole batch; and a
    student training its own teacher first, both in one process group."""
    common = ["--model", "fmnist_tiny", "--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "2",
              "--eval-subset", "64", "--no-progress", "--seed", "3", "--threads", "1"]
    extra_2proc: list[str] = []
    if mode == "student-streamed":
        write_image_tree(tmp_path / "photos", per_class=40, size=36)
        # Mixup pairs images within each process's micro-batch (as DeiT does), so it is off for this comparison.
        common += ["--data", str(tmp_path / "photos"), "--loader", "stream", "--workers", "1", "--recipe", "deit",
                   "--mixup", "0", "--cutmix", "0"]
        extra_2proc = ["--accum-steps", "2"]
    else:
        common += ["--train-subset", "256"]
    if mode == "student-own-teacher":
        common += ["--mode", "student"]
    elif mode.startswith("student"):
        t = tmp_path / "t.pt"
        torch.manual_seed(0)
        classes = 2 if mode == "student-streamed" else 10
        save_checkpoint(t, DynamicViT(model_config("fmnist_tiny", dense=True, num_classes=classes)))
        common += ["--mode", "student", "--teacher", str(t)]
    else:
        common += ["--mode", "teacher"]
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}"
        r = _torchrun([*common, "--out", str(out), *(extra_2proc if n == 2 else [])], n, rendezvous=bool(extra_2proc))
        assert r.returncode == 0, r.stderr[-2000:]
        if n == 2 and extra_2proc:
            assert "--rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:" in r.stderr  # dvit's launcher, not --standalone
        runs[n] = (json.loads((out / "metrics.json").read_text())[0], _weights(out / "model.pt"))
    (m1, w1), (m2, w2) = runs[1], runs[2]
    # Same global batch, same augmentation, same Gumbel draws: the per-sample-mean terms agree.
    for term in ("ce", "distill_kl", "ratio"):
        if term in m1["first_step"]:
            assert m2["first_step"][term] == pytest.approx(m1["first_step"][term], rel=1e-5, abs=1e-6), term
    if mode == "teacher":  # a pure per-sample mean: gradients, hence weights, agree as well
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    if mode == "student-own-teacher":
        t1, t2 = (_weights(tmp_path / f"w{n}" / "teacher" / "model.pt") for n in (1, 2))
        for k in t1:
            torch.testing.assert_close(t2[k], t1[k], atol=1e-5, rtol=1e-4)


def test_two_nodes_meet_at_the_rendezvous_endpoint(tmp_path: Path) -> None:
    """Two `dvit train --nnodes 2 --nproc-per-node 1 --rdzv-endpoint ...` commands, as on two machines, form one
    world of two and train what one process trains with the same global batch (streamed data)."""
    write_image_tree(tmp_path / "photos", per_class=40, size=36)
    common = ["--mode", "teacher", "--model", "fmnist_tiny", "--epochs", "1", "--batch-size", "32",
              "--max-steps-per-epoch", "2", "--eval-subset", "16", "--no-progress", "--threads", "1", "--seed", "4",
              "--data", str(tmp_path / "photos"), "--loader", "stream", "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = [sys.executable, "-m", "pipeline.cli", "train", *common, "--out", str(tmp_path / "nodes"), "--nnodes", "2",
            "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"]
    procs = [subprocess.Popen(node, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    single = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", *common, "--out", str(tmp_path / "one")],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    assert json.loads((tmp_path / "nodes" / "summary.json").read_text())["world_size"] == 2
    m2, m1 = (json.loads((tmp_path / d / "metrics.json").read_text())[0] for d in ("nodes", "one"))
    assert m2["first_step"]["ce"] == pytest.approx(m1["first_step"]["ce"], rel=1e-5)
    w1, w2 = _weights(tmp_path / "one" / "model.pt"), _weights(tmp_path / "nodes" / "model.pt")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)


def test_lr_schedule_warms_up_then_decays_to_floor() -> None:
    f = [lr_factor(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # non-increasing after warm-up
    assert lr_factor(100, 100, 10, 1e-3, 1e-5) == pytest.approx(1e-2)


def test_pruned_model_measures_fewer_flops() -> None:
    torch.manual_seed(0)
    dense, pruned = DynamicViT(TINY.as_dense()), DynamicViT(TINY)
    ratio = count_flops(pruned) / count_flops(dense)
    # tokens through blocks 0..3: 50, 35, 25, 17 of 50 each, plus three prediction modules
    assert 0.5 < ratio < 0.75
    r = evaluate(pruned, load_fashion_mnist("test").subset(64), speed=False)
    assert r["images"] == 64 and 0 <= r["top1"] <= r["top5"] <= 100
