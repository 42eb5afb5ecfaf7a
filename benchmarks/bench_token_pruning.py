"""Mask or delete while training (issue 19; raoyongming/DynamicViT issue 47): the two modes of `dvit train
--token-pruning`, measured.

Part "embedded" (the embedded default, `make student`'s budget): for each seed and mode (mask, delete, or the middle
way delete-after-N: N masked epochs first), `dvit train` with the Makefile's STUDENT_ARGS (fmnist_tiny, keep ratio
0.7, 4 epochs, batch 128, the committed teacher), then
  - student top-1 on the Fashion-MNIST test set (10,000 images) against the teacher's, and paired with mask's on
    the same seed (the differences at stake are within seed noise, the pairs are not);
  - training throughput: train images per second of each epoch (metrics.json's `seconds`), and the share of
    training FLOPs the mode saves (student forward + backward of one batch, counted with FlopCounterMode);
  - how the predictor learns: the keep-ratio loss per epoch (`train_ratio`), and the kept-token IoU of each model's
    inference decisions against the mask model's of the same seed on the test set, per pruning point, beside the
    IoU of two mask models of different seeds (the yardstick).
Finished runs under --work are reused, so runs made elsewhere (e.g. two at a time with --threads 1) can be summed up.
Parts "deit-s" and "embedded-steps": training steps of a DeiT-S-sized student (224x224, 196 tokens) or of the
embedded default (28x28, batch 128), random data and weights, its dense teacher's forward included as distillation
runs it, in each mode, interleaved step by step so machine load hits both alike: images per second, and the
counted FLOPs of the student's forward + backward.

Writes benchmarks/results/token_pruning.json ("dvit-edge/bench-token-pruning/v2") and token_pruning.md.

    .venv/bin/python benchmarks/bench_token_pruning.py                       # every part (hours on 2 cores)
    .venv/bin/python benchmarks/bench_token_pruning.py --part deit-s --steps 40
    .venv/bin/python benchmarks/bench_token_pruning.py --part embedded --modes mask,delete,delete-after-1
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

FORMAT = "dvit-edge/bench-token-pruning/v2"  # v2: the steps parts under "steps", a summary over seeds
MODES = ("mask", "delete")  # the step modes; a run may also be "delete-after-N" (the middle way)
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
def masked_epochs(mode: str) -> int:
    """Epochs a run of `mode` masks before it deletes (all of them for mask: the caller passes the total)."""
    return int(mode.rsplit("-", 1)[1]) if mode.startswith("delete-after-") else 0


def mode_args(mode: str) -> list[str]:
    """'mask', 'delete', or 'delete-after-N' (the middle way: N masked epochs first)."""
    if mode.startswith("delete-after-"):
        return ["--token-pruning", "delete", "--mask-epochs", mode.rsplit("-", 1)[1]]
    return ["--token-pruning", mode]


def train_run(seed: int, mode: str, epochs: int | None, work: Path, extra: list[str]) -> Path:
    out = work / f"{mode}-seed{seed}"
    if (out / "model.pt").is_file() and (out / "metrics.json").is_file():
        log(f"reusing {out}")
        return out
    args = [*with_arg(student_args(), "--seed", str(seed)), *mode_args(mode)]
    if epochs is not None:
        args = with_arg(args, "--epochs", str(epochs))
    cmd = [str(REPO / ".venv" / "bin" / "dvit"), "train", *args, "--teacher", str(TEACHER), "--out", str(out),
           "--no-progress", *extra]
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


def embedded(seeds: list[int], modes: list[str], epochs: int | None, work: Path, extra: list[str]) -> dict[str, Any]:
    from pipeline.checkpoint import load_model, read_checkpoint
    from pipeline.data import load_dataset

    test = load_dataset(None, "test", 1, 28)
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for mode in modes:
            out = train_run(seed, mode, epochs, work, extra)
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
    cache: dict[str, list[Any]] = {}

    def kept_iou(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
        for r in (a, b):
            if r["path"] not in cache:
                cache[r["path"]] = kept_ids(load_model(Path(r["path"]) / "model.pt"), test)
        return [round(iou(x, y), 4) for x, y in zip(cache[a["path"]], cache[b["path"]], strict=True)]

    masks = [r for r in runs if r["mode"] == "mask"]
    for r in runs:
        ref = next((x for x in masks if x["seed"] == r["seed"]), None)
        if r["mode"] != "mask" and ref is not None:
            r["kept_iou_vs_mask"] = kept_iou(r, ref)
    # the yardstick: how far two masked runs that differ only in the seed agree
    cross = [kept_iou(a, b) for i, a in enumerate(masks) for b in masks[i + 1:]]
    model = load_model(Path(runs[0]["path"]) / "model.pt")
    flops = {m: training_flops(model, m) for m in MODES}
    total_epochs = epochs or int(student_args()[student_args().index("--epochs") + 1])
    for r in runs:
        masked = total_epochs if r["mode"] == "mask" else masked_epochs(r["mode"])
        r["training_flops_per_image"] = round((masked * flops["mask"] + (total_epochs - masked) * flops["delete"])
                                              / total_epochs)
    res = {"teacher_top1": teacher_top1, "runs": runs, "training_flops_per_image": flops,
            "student_args": student_args(), "epochs_override": epochs, "epochs": total_epochs, "train_args": extra,
           "mask_cross_seed_iou": [round(sum(v) / len(v), 4) for v in zip(*cross, strict=True)] if cross else None}
    res["summary"] = summary(res)
    return res


def summary(emb: dict[str, Any]) -> list[dict[str, Any]]:
    """Per mode over its seeds: top-1 mean and sample sd, and the paired difference to mask on the same seed
    (seed noise moves both runs of a seed alike, so the pairs say more than the means)."""
    import statistics

    rows = []
    for mode in dict.fromkeys(r["mode"] for r in emb["runs"]):
        own = [r for r in emb["runs"] if r["mode"] == mode]
        mask = {r["seed"]: r for r in emb["runs"] if r["mode"] == "mask"}
        diffs = [round(r["test_top1"] - mask[r["seed"]]["test_top1"], 2) for r in own if r["seed"] in mask]
        top1 = [r["test_top1"] for r in own]
        ious = [r["kept_iou_vs_mask"] for r in own if r.get("kept_iou_vs_mask")]
        rows.append({
            "mode": mode, "seeds": [r["seed"] for r in own],
            "top1_mean": round(statistics.fmean(top1), 2),
            "top1_sd": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
            "vs_mask_paired": diffs if mode != "mask" else None,
            "final_ratio_loss_mean": round(statistics.fmean(r["train_ratio"][-1] for r in own), 4),
            "kept_iou_vs_mask_mean": [round(statistics.fmean(v), 3) for v in zip(*ious, strict=True)] if ious else None,
            "training_flops_per_image": own[0]["training_flops_per_image"],
            "training_flops_saved": round(1 - own[0]["training_flops_per_image"] / emb["training_flops_per_image"]["mask"],
                                          3),
        })
    return rows


# ---------------------------------------------------------------- parts "deit-s" and "embedded-steps"
STEP_PARTS = {"deit-s": "deit-s", "embedded-steps": "fmnist_tiny"}  # part -> the student it times


def interleaved_steps(model_name: str, steps: int, batch: int, modes: list[str]) -> dict[str, Any]:
    """Training steps of `model_name` (random data and weights, its dense teacher's forward included as
    distillation runs it), the modes interleaved step by step so that machine load hits them alike."""
    import torch

    from pipeline.config import LossWeights, model_config
    from pipeline.losses import dynamicvit_loss
    from pipeline.model import DynamicViT

    torch.manual_seed(0)
    cfg = model_config(model_name, keep_ratio=0.7)
    student = DynamicViT(cfg).train()
    teacher = DynamicViT(cfg.as_dense()).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size)
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
            log(f"{model_name}: {i + 1}/{steps} steps")
    res: dict[str, Any] = {"model": model_name, "img_size": cfg.img_size, "steps": steps, "batch": batch, "modes": {}}
    for mode in modes:
        ts = sorted(times[mode])
        res["modes"][mode] = {"median_step_s": round(ts[len(ts) // 2], 4),
                              "img_per_s": round(batch / ts[len(ts) // 2], 2),
                              "student_train_gflops_per_image": round(training_flops(student, mode, 2) / 1e9, 3)}
    return res


# ---------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Mask or delete while training (`benchmarks/bench_token_pruning.py`, {result['date']})", "",
             f"Machine: {result['machine']}. Command: `{result['command']}`.", ""]
    emb = result.get("embedded")
    if emb:
        override = f", epochs overridden to {emb['epochs_override']}" if emb["epochs_override"] else ""
        if emb.get("train_args"):
            override += f", with `{' '.join(emb['train_args'])}`"
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
        lines += ["", ("Over the seeds (paired: top-1 minus mask's on the same seed; training FLOPs per image: the "
                  "student's forward + backward, counted, averaged over the epochs of the run):"), "",
                  ("| mode | seeds | top-1 mean (sd) | vs mask, paired (points) | final keep-ratio loss | "
                  "kept-token IoU vs mask | training MFLOPs per image | saved |"), "|---|---|---|---|---:|---|---:|---:|"]
        for m in emb["summary"]:
            sd = f" ({m['top1_sd']:.2f})" if m["top1_sd"] is not None else ""
            paired = ", ".join(f"{d:+.2f}" for d in m["vs_mask_paired"]) if m["vs_mask_paired"] else "-"
            iou_mean = ", ".join(map(str, m["kept_iou_vs_mask_mean"])) if m["kept_iou_vs_mask_mean"] else "-"
            lines.append(f"| {m['mode']} | {', '.join(map(str, m['seeds']))} | {m['top1_mean']:.2f}{sd} | {paired} | "
                         f"{m['final_ratio_loss_mean']:.4f} | {iou_mean} | {m['training_flops_per_image'] / 1e6:.1f} | "
                         f"{100 * m['training_flops_saved']:.1f}% |")
        if emb.get("mask_cross_seed_iou"):
            lines += ["", ("The yardstick for the IoU: two mask runs that differ only in the seed agree at "
                           f"{', '.join(map(str, emb['mask_cross_seed_iou']))} (mean over the pairs of seeds, per point).")]
    for part in STEP_PARTS:
        st = result.get("steps", {}).get(part)
        if st:
            title = (f"## {st['model']} at {st['img_size']}x{st['img_size']} ({st['steps']} interleaved training steps "
                     f"per mode, batch {st['batch']}, random data, the dense teacher's forward included)")
            lines += ["", title, "",
                      "| mode | median step (s) | img/s | student GFLOPs per image (fwd + bwd) |", "|---|---:|---:|---:|"]
            for mode, m in st["modes"].items():
                lines.append(f"| {mode} | {m['median_step_s']} | {m['img_per_s']} | "
                             f"{m['student_train_gflops_per_image']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", "embedded", *STEP_PARTS), default="all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--epochs", type=int, default=None, help="override make student's epochs (a shorter run)")
    p.add_argument("--train-args", default="",
                   help="more `dvit train` arguments for the embedded runs, e.g. '--threads 1' (or a test's subsets)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per mode of a steps part (default: 100 for deit-s, 40 for embedded-steps)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of a steps part (default: 8 for deit-s, make student's 128 for embedded-steps)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads of a steps part (default: all cores)")
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
        result["embedded"] = embedded([int(s) for s in a.seeds.split(",") if s], modes, a.epochs, work,
                                      shlex.split(a.train_args))
    step_modes = [m for m in modes if m in MODES]
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    for part, model_name in STEP_PARTS.items():
        if a.part in ("all", part):
            steps = a.steps or (100 if part == "deit-s" else 40)
            batch = a.batch or (8 if part == "deit-s" else int(student_args()[student_args().index("--batch-size") + 1]))
            result.setdefault("steps", {})[part] = interleaved_steps(model_name, steps, batch, step_modes)
    from bench_tradeoff import repo_relative

    result = repo_relative(result)  # results name the run's files, not the machine they were measured on
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
