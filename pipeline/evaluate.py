"""`dvit evaluate`: accuracy, measured FLOPs, parameters and throughput of dense and pruned checkpoints
(the measurements themselves are in pipeline.measure)."""
from __future__ import annotations

import argparse
from typing import Any

from .data import ImageSet, load_dataset, refit
from .measure import accuracy, count_flops, throughput
from .model import DynamicViT


def fitted(ds: ImageSet, cfg: Any) -> ImageSet:
    """The test images as the model takes them: Fashion-MNIST's 1x28x28 idx images refitted (resized, channels
    repeated, their statistics with them) for a model trained on them at another size, as training fitted them."""
    if (ds.in_chans, int(ds.images.shape[-1])) == (cfg.in_chans, cfg.img_size):
        return ds
    mean, std = (ds.mean * cfg.in_chans, ds.std * cfg.in_chans) if len(ds.mean) != cfg.in_chans else (ds.mean, ds.std)
    return ImageSet(refit(ds.images, cfg.in_chans, cfg.img_size), ds.labels, ds.classes, mean, std, ds.source)


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
    p.add_argument("checkpoints", nargs="+",
                   help="checkpoints (ours, official DynamicViT, timm/DeiT); the first is the reference for FLOPs ratios")
    p.add_argument("--model", default=None, metavar="PRESET",
                   help="architecture of checkpoints that do not say it, e.g. deit_small_patch16_224")
    p.add_argument("--keep-ratio", type=float, default=None, help="run pruned checkpoints at this keep ratio")
    p.add_argument("--data", default=None, help="dataset (default: the Fashion-MNIST test split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--no-speed", action="store_true", help="skip the CPU throughput measurement")


def main(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .io import atomic_write_json

    rows = []
    for path in args.checkpoints:
        model = load_model(path, keep_ratio=args.keep_ratio, preset=args.model)
        ds = fitted(load_dataset(args.data, "test", model.cfg.in_chans, model.cfg.img_size), model.cfg)
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
