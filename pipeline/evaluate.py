"""`dvit evaluate`: accuracy, measured FLOPs, parameters and throughput of dense and pruned checkpoints.

FLOPs are counted by torch.utils.flop_counter on the real inference pass (hard top-k pruning), so the
pruned model's figure reflects the tokens it actually processes, not a formula.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .data import ImageSet, load_dataset
from .model import DynamicViT


@torch.no_grad()
def accuracy(
    model: DynamicViT, ds: ImageSet, batch_size: int = 256, device: torch.device | str = "cpu", limit: int | None = None
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent, with the inference (hard-pruning) pass."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    k5 = min(5, model.cfg.num_classes)
    for x, y in ds.batches(batch_size, limit):
        logits = model.forward_inference(x.to(device)).logits.float().cpu()
        top = logits.topk(k5, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += int(y.numel())
    model.train(was_training)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


@torch.no_grad()
def count_flops(model: DynamicViT) -> int:
    """FLOPs of one image's inference pass (a multiply-add counts 2)."""
    model.eval()
    c = model.cfg
    x = torch.zeros(1, c.in_chans, c.img_size, c.img_size)
    with FlopCounterMode(display=False) as counter:
        model.forward_inference(x)
    return int(counter.get_total_flops())


@torch.no_grad()
def throughput(model: DynamicViT, batch_size: int = 64, iters: int = 10, warmup: int = 3) -> float:
    """Images per second of the inference pass on CPU, median over `iters` timed batches."""
    model.eval()
    c = model.cfg
    x = torch.randn(batch_size, c.in_chans, c.img_size, c.img_size)
    for _ in range(warmup):
        model.forward_inference(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.forward_inference(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return batch_size / times[len(times) // 2]


def evaluate(model: DynamicViT, ds: ImageSet, limit: int | None = None, speed: bool = True) -> dict[str, Any]:
    top1, top5 = accuracy(model, ds, limit=limit)
    out: dict[str, Any] = {
        "top1": top1,
        "top5": top5,
        "gflops": count_flops(model) / 1e9,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "keep_ratio": model.cfg.keep_ratio if not model.cfg.is_dense else 1.0,
        "tokens_per_stage": model.cfg.tokens_per_stage,
        "images": min(len(ds), limit) if limit else len(ds),
    }
    if speed:
        out["cpu_images_per_s"] = throughput(model)
    return out


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="dvit-edge checkpoints; the first is the reference for FLOPs ratios")
    p.add_argument("--data", default=None, help="dataset (default: the Fashion-MNIST test split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--no-speed", action="store_true", help="skip the CPU throughput measurement")


def main(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .io import atomic_write_json

    rows = []
    for path in args.checkpoints:
        model = load_model(path)
        ds = load_dataset(args.data, "test", model.cfg.in_chans, model.cfg.img_size)
        r = evaluate(model, ds, args.limit, speed=not args.no_speed)
        r["checkpoint"] = path
        rows.append(r)
    ref = rows[0]["gflops"]
    for r in rows:
        r["flops_ratio"] = r["gflops"] / ref
    print(f"{'checkpoint':48} {'rho':>5} {'top-1':>7} {'top-5':>7} {'MFLOPs':>8} {'ratio':>6} {'params':>7} {'img/s':>8}")
    for r in rows:
        ips = f"{r['cpu_images_per_s']:.0f}" if "cpu_images_per_s" in r else "-"
        print(f"{r['checkpoint'][-48:]:48} {r['keep_ratio']:5.2f} {r['top1']:7.2f} {r['top5']:7.2f} "
              f"{r['gflops'] * 1e3:8.2f} {r['flops_ratio']:6.3f} {r['params_m']:6.2f}M {ips:>8}")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
