"""Mask or delete while training (issue 19; raoyongming/DynamicViT issue 47): the two modes of `dvit train
--token-pruning`, measured.

Part "embedded" (the embedded default, `make student`'s budget): for each seed and mode, `dvit train` with the
Makefile's STUDENT_ARGS (fmnist_tiny, keep ratio 0.7, 4 epochs, batch 128, the committed teacher), then
  - student top-1 on the Fashion-MNIST test set (10,000 images) against the teacher's;
  - training throughput: train images per second of each epoch (metrics.json's `seconds`), and the share of
    training FLOPs the mode saves (student forward + backward of one batch, counted with FlopCounterMode);
  - how the predictor learns: the keep-ratio loss per epoch (`train_ratio`), and the kept-token IoU of the delete
    model's inference decisions against the mask model's of the same seed on the test set, per pruning point.
Part "deit-s": training steps of a DeiT-S-sized student (224x224, 196 tokens, random data and weights, its dense
teacher's forward included as distillation runs it) in each mode, interleaved step by step so machine load hits
both alike: images per second, and the counted FLOPs of the student's forward + backward.

Writes benchmarks/results/token_pruning.json ("dvit-edge/bench-token-pruning/v1") and token_pruning.md.

    .venv/bin/python benchmarks/bench_token_pruning.py                       # both parts (about 2 hours on 2 cores)
    .venv/bin/python benchmarks/bench_token_pruning.py --part deit-s --steps 40
    .venv/bin/python benchmarks/bench_token_pruning.py --part embedded --seeds 0 --epochs 1   # a short run
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FORMAT = "dvit-edge/bench-token-pruning/v1"
MODES = ("mask", "delete")
TEACHER = REPO / "checkpoints" / "fmnist_tiny_teacher.pt"
TRAIN_IMAGES = 60_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def student_args() -> list[str]:
    """`make student`'s STUDENT_ARGS, read from the Makefile (one place says the budget)."""
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("STUDENT_ARGS ?="):
            return shlex.split(line.split("?=", 1)[1])
    raise SystemExit("Makefile has no STUDENT_ARGS line")


def with_arg(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


# ---------------------------------------------------------------- part "embedded"
def mode_args(mode: str) -> list[str]:
    """'mask', 'delete', or 'delete-after-N' (the middle way: N masked epochs first)."""
    if mode.startswith("delete-after-"):
        return ["--token-pruning", "delete", "--mask-epochs", mode.rsplit("-", 1)[1]]
    return ["--token-pruning", mode]


def train_run(seed: int, mode: str, epochs: int | None, work: Path) -> Path:
    out = work / f"{mode}-seed{seed}"
    if (out / "model.pt").is_file() and (out / "metrics.json").is_file():
        log(f"reusing {out}")
        return out
    args = [*with_arg(student_args(), "--seed", str(seed)), *mode_args(mode)]
    if epochs is not None:
        args = with_arg(args, "--epochs", str(epochs))
    cmd = [str(REPO / ".venv" / "bin" / "dvit"), "train", *args, "--teacher", str(TEACHER), "--out", str(out),
           "--no-progress"]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


def kept_ids(model: Any, test: Any, batch: int = 500) -> list[Any]:
    """Sorted patch ids each pruning point keeps at inference, for every test image."""
    import torch

    model.eval()
    parts: list[list[Any]] = []
    with torch.no_grad():
        for x, _ in test.batches(batch):
            out = model.forward_inference(x)
            parts.append([ids.sort(dim=1).values for ids in out.kept_patch_ids])
    return [torch.cat([p[s] for p in parts]) for s in range(len(parts[0]))]


def iou(a: Any, b: Any) -> float:
    inter = (a.unsqueeze(2) == b.unsqueeze(1)).any(-1).sum(-1).float()
    return float((inter / (a.shape[1] + b.shape[1] - inter)).mean())


def training_flops(model: Any, mode: str, batch: int = 8) -> int:
    """FLOPs of the student's forward + backward on one batch, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    c = model.cfg
    model.train()
    x = torch.randn(batch, c.in_chans, c.img_size, c.img_size)
    with FlopCounterMode(display=False) as counter:
        out = model(x, token_pruning=mode)
        (out.logits.sum() + out.tokens.sum() + sum(d.sum() for d in out.decisions)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) // batch


def embedded(seeds: list[int], modes: list[str], epochs: int | None, work: Path) -> dict[str, Any]:
    from pipeline.checkpoint import load_model, read_checkpoint
    from pipeline.data import load_dataset

    test = load_dataset(None, "test", 1, 28)
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for mode in modes:
            out = train_run(seed, mode, epochs, work)
            metrics = json.loads((out / "metrics.json").read_text())
            epochs_done = [m for m in metrics if "epoch" in m]
            runs.append({
                "seed": seed, "mode": mode, "path": str(out),
                "test_top1": epochs_done[-1]["test_top1"],
                "train_img_per_s": [round(TRAIN_IMAGES / m["seconds"], 1) for m in epochs_done],
                "train_ratio": [m.get("train_ratio") for m in epochs_done],
                "first_step": epochs_done[0].get("first_step"),
            })
    teacher_top1 = read_checkpoint(TEACHER).get("metrics", {}).get("test_top1")
    for r in runs:
        if r["mode"] == "mask":
            continue
        ref = next((x for x in runs if x["seed"] == r["seed"] and x["mode"] == "mask"), None)
        if ref is None:
            continue
        a = kept_ids(load_model(Path(r["path"]) / "model.pt"), test)
        b = kept_ids(load_model(Path(ref["path"]) / "model.pt"), test)
        r["kept_iou_vs_mask"] = [round(iou(x, y), 4) for x, y in zip(a, b, strict=True)]
    model = load_model(Path(runs[0]["path"]) / "model.pt")
    flops = {m: training_flops(model, m) for m in modes}
    return {"teacher_top1": teacher_top1, "runs": runs, "training_flops_per_image": flops,
            "student_args": student_args(), "epochs_override": epochs}


# ---------------------------------------------------------------- part "deit-s"
def deit_s(steps: int, batch: int, modes: list[str]) -> dict[str, Any]:
    import torch

    from pipeline.config import LossWeights, model_config
    from pipeline.losses import dynamicvit_loss
    from pipeline.model import DynamicViT

    torch.manual_seed(0)
    cfg = model_config("deit-s", keep_ratio=0.7)
    student = DynamicViT(cfg).train()
    teacher = DynamicViT(cfg.as_dense()).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, cfg.num_classes, (batch,))

    def step(mode: str) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            t_logits, t_tokens = teacher.forward_teacher(x)
        out = student(x, token_pruning=mode)
        loss = dynamicvit_loss(out, y, t_logits, t_tokens, cfg.stage_ratios, LossWeights())
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        return time.perf_counter() - t0

    for mode in modes:  # warm-up
        step(mode)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(steps):
        for mode in modes:
            times[mode].append(step(mode))
        if (i + 1) % 10 == 0:
            log(f"deit-s: {i + 1}/{steps} steps")
    res: dict[str, Any] = {"steps": steps, "batch": batch, "modes": {}}
    for mode in modes:
        ts = sorted(times[mode])
        res["modes"][mode] = {"median_step_s": round(ts[len(ts) // 2], 4),
                              "img_per_s": round(batch / ts[len(ts) // 2], 2),
                              "student_train_gflops_per_image": round(training_flops(student, mode, 2) / 1e9, 2)}
    return res


# ---------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Mask or delete while training (`benchmarks/bench_token_pruning.py`, {result['date']})", "",
             f"Machine: {result['machine']}. Command: `{result['command']}`.", ""]
    emb = result.get("embedded")
    if emb:
        override = f", epochs overridden to {emb['epochs_override']}" if emb["epochs_override"] else ""
        header = ("| seed | mode | top-1 (%) | below teacher (points) | train img/s per epoch | keep-ratio loss per epoch "
                  "| kept-token IoU vs mask (per point) |")
        lines += ["## The embedded default (`make student`'s budget)", "",
                  (f"Teacher top-1: {emb['teacher_top1']}%. Student arguments: `{' '.join(emb['student_args'])}`"
                  f"{override}."), "", header, "|---|---|---:|---:|---|---|---|"]
        for r in emb["runs"]:
            gap = emb["teacher_top1"] - r["test_top1"] if emb["teacher_top1"] is not None else None
            ratio = ", ".join(f"{v:.4f}" for v in r["train_ratio"] if v is not None)
            lines.append(f"| {r['seed']} | {r['mode']} | {r['test_top1']:.2f} | {gap:.2f} | "
                         f"{', '.join(map(str, r['train_img_per_s']))} | {ratio} | "
                         f"{', '.join(map(str, r.get('kept_iou_vs_mask') or [])) or '-'} |")
        f = emb["training_flops_per_image"]
        if "mask" in f and "delete" in f:
            saved = 100 * (1 - f["delete"] / f["mask"])
            lines += ["", (f"Student training FLOPs per image (forward + backward, counted): mask {f['mask'] / 1e6:.1f} "
                      f"M, delete {f['delete'] / 1e6:.1f} M: delete saves {saved:.1f}%.")]
    ds = result.get("deit_s")
    if ds:
        title = (f"## DeiT-S at 224x224 ({ds['steps']} interleaved training steps per mode, batch {ds['batch']}, "
                 "random data, the dense teacher's forward included)")
        lines += ["", title, "",
                  "| mode | median step (s) | img/s | student GFLOPs per image (fwd + bwd) |", "|---|---:|---:|---:|"]
        for mode, m in ds["modes"].items():
            lines.append(f"| {mode} | {m['median_step_s']} | {m['img_per_s']} | {m['student_train_gflops_per_image']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", "embedded", "deit-s"), default="all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--epochs", type=int, default=None, help="override make student's epochs (a shorter run)")
    p.add_argument("--steps", type=int, default=100, help="DeiT-S training steps per mode")
    p.add_argument("--batch", type=int, default=8, help="DeiT-S batch size")
    p.add_argument("--work", default=str(REPO / "artifacts" / "bench-token-pruning"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "token_pruning"))
    a = p.parse_args(argv)
    modes = [m for m in a.modes.split(",") if m]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "format": FORMAT, "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "command": " ".join(["benchmarks/bench_token_pruning.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if a.part in ("all", "embedded"):
        result["embedded"] = embedded([int(s) for s in a.seeds.split(",") if s], modes, a.epochs, work)
    if a.part in ("all", "deit-s"):
        result["deit_s"] = deit_s(a.steps, a.batch, modes)
    from bench_tradeoff import repo_relative

    result = repo_relative(result)  # results name the run's files, not the machine they were measured on
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
