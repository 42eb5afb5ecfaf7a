"""Streamed-data throughput: how many images per second the decoding workers deliver, per recipe and worker count.

A GPU trains faster than one CPU core decodes and augments JPEGs. This figure tells a user how many --workers per
GPU keep it fed: divide the GPU's training rate (img/s, from the epoch line with plenty of workers) by the
per-worker rate measured here on their CPU. It writes ImageNet-sized JPEGs (500x375, the common ImageNet photo
size) into a temporary ImageFolder and times `dvit train`'s streamed loader over them: the deit recipe (timm's
RandomResizedCrop + RandAugment + random erasing at 224) and the small recipe's resize-crop-shift-flip at 224.
The first batch of each run is left out (worker start-up). JSON ("dvit-edge/bench-loader/v1") goes under
benchmarks/results/.

    .venv/bin/python benchmarks/bench_loader.py            # the full run (make bench)
    .venv/bin/python benchmarks/bench_loader.py --quick    # a short smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FORMAT = "dvit-edge/bench-loader/v1"


def write_jpegs(root: Path, count: int, classes: int = 4, size: tuple[int, int] = (500, 375)) -> None:
    """Photo-like JPEGs: smooth colour gradients with noise, so that they compress and decode like photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(count):
        c = rng.uniform(0, 1, (3, 3)).astype(np.float32)
        img = np.stack([c[k, 0] * xx / w + c[k, 1] * yy / h + c[k, 2] for k in range(3)], axis=-1) * 120
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def time_loader(root: Path, recipe: str, workers: int, batch: int, img_size: int) -> dict[str, Any]:
    from pipeline.image_index import scan_image_folder
    from pipeline.train import augment
    from pipeline.train.recipe import train_config
    from pipeline.train.stream import FolderSource, StreamBatches

    cfg, _ = train_config(recipe, {})
    mean, std = augment.normalization(cfg.aug, (0.5,) * 3, (0.25,) * 3, 3)
    batches = StreamBatches(FolderSource(scan_image_folder(root), 3), augment.train_transform(cfg.aug, img_size, mean, std),
                            global_batch=batch, seed=0, workers=workers)
    timed = 0
    start = 0.0
    for step, (x, _, _) in enumerate(batches.epoch(0)):
        if step == 0:
            start = time.perf_counter()  # after the first batch: worker start-up is not throughput
            continue
        timed += int(x.shape[0])
    seconds = time.perf_counter() - start
    return {"recipe": recipe, "workers": workers, "batch": batch, "img_size": img_size, "images": timed,
            "seconds": seconds, "images_per_second": timed / seconds if seconds > 0 else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1024, help="JPEGs to write and stream (default 1024)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default 0,1,..,cores)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 96 images, batch 16, workers 0,1")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/loader_<machine>.json)")
    args = ap.parse_args(argv)
    from bench_tradeoff import machine_slug

    if args.quick:
        args.images, args.batch, args.workers = 96, 16, args.workers or "0,1"
    cores = len(os.sched_getaffinity(0))
    counts = [int(w) for w in args.workers.split(",")] if args.workers else list(range(cores + 1))
    runs = []
    with tempfile.TemporaryDirectory(prefix="dvit-bench-loader-") as tmp:
        t0 = time.perf_counter()
        write_jpegs(Path(tmp), args.images)
        print(f"wrote {args.images} JPEGs (500x375) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for recipe in ("deit", "small"):
            for w in counts:
                r = time_loader(Path(tmp), recipe, w, args.batch, args.img_size)
                runs.append(r)
                print(f"{recipe:5s} workers {w}: {r['images_per_second']:7.1f} img/s", file=sys.stderr, flush=True)
    result = {"format": FORMAT, "machine": machine_slug(), "cores": cores, "images": args.images,
              "source_size": [500, 375], "command": "python benchmarks/bench_loader.py" + (" --quick" if args.quick else ""),
              "runs": runs}
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"loader_{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
