"""Training memory against dataset size: the peak of the whole process tree, streamed and in-memory data paths.

`dvit train` runs the same number of steps on a small and a 10x larger tree of real PNG files (96x96 RGB) with
`--loader stream` and `--loader memory`; the peak proportional set size (PSS) of the trainer and every process it
starts (the decoding workers: PSS charges a forked worker only for what it adds) is sampled every 20 ms. The
streamed path should peak within 10% on both trees; the in-memory one, holding 10x the decoded images, grows.

These figures depend on what else the machine runs (a sampled peak moves with scheduling: 826 vs 903 MiB under
load once), so they live here, in `make bench`, on an idle machine. The test suite checks what each data path
holds instead (tests/test_train_memory.py), which does not depend on load. JSON
("dvit-edge/bench-train-memory/v1") goes under benchmarks/results/.

    .venv/bin/python benchmarks/bench_train_memory.py            # 2,000 and 20,000 images (make bench)
    .venv/bin/python benchmarks/bench_train_memory.py --quick    # a smoke run: 64 and 640 images, no verdict
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FORMAT = "dvit-edge/bench-train-memory/v1"
SIZE = 96  # pixels: 27 KB per decoded RGB image, so 20,000 images hold 553 MB in memory
FLAT = 0.10  # the streamed path's peaks on the two trees may differ by this fraction of the smaller

DRIVER = """
import sys
from pipeline.config import ModelConfig
from pipeline.train import train
from pipeline.train.recipe import train_config
cfg = ModelConfig("probe", img_size=int(sys.argv[4]), patch_size=8, in_chans=3, num_classes=2, embed_dim=32, depth=2,
                  num_heads=2, pruning_loc=(), keep_ratio=1.0)
tcfg, _ = train_config("small", {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": int(sys.argv[5]),
                                 "eval_subset": 64, "loader": sys.argv[2], "workers": 2})
train(cfg, tcfg, sys.argv[3], data=sys.argv[1], progress=False)
"""


def _tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _pss(pid: int) -> int:
    """Proportional set size in bytes: shared pages split among the processes that share them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_memory(cmd: list[str]) -> tuple[int, float]:
    """(peak of the summed PSS of a command and every process it starts, sampled every 20 ms; seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss(p) for p in _tree_pids(proc.pid)))
        time.sleep(0.02)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed ({' '.join(cmd[3:6])}):\n{err[-2000:]}")
    return peak, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images in the small tree; the large one has 10x")
    ap.add_argument("--steps", type=int, default=15, help="training steps of batch 32 per run (default 15)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 64 and 640 images of 32x32, 2 steps, no verdict")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_memory_<machine>.json)")
    args = ap.parse_args(argv)
    from bench_tradeoff import machine_slug

    from tests.train_data import write_image_tree

    size = SIZE
    if args.quick:
        args.images, args.steps, size = 64, 2, 32
    counts = (args.images, 10 * args.images)
    peaks: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dvit-bench-train-memory-") as tmp:
        trees = {}
        for n in counts:
            t0 = time.perf_counter()
            trees[n] = Path(tmp) / f"photos{n}"
            write_image_tree(trees[n], per_class=n // 2, size=size, mode="RGB", seed=n)
            print(f"wrote {n} PNGs ({size}x{size}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        for loader in ("stream", "memory"):
            for n, root in trees.items():
                cmd = [sys.executable, "-c", DRIVER, str(root), loader, str(Path(tmp) / f"run-{loader}{n}"), str(size),
                       str(args.steps)]
                peak, seconds = peak_memory(cmd)
                peaks.setdefault(loader, {})[str(n)] = {"peak_pss_mib": round(peak / 2**20, 1), "seconds": round(seconds, 1)}
                print(f"{loader:6s} {n:6d} images: peak PSS {peak / 2**20:7.1f} MiB", file=sys.stderr, flush=True)
    small, large = (peaks["stream"][str(n)]["peak_pss_mib"] for n in counts)
    m_small, m_large = (peaks["memory"][str(n)]["peak_pss_mib"] for n in counts)
    stream_growth, memory_growth = large - small, m_large - m_small
    flat = abs(stream_growth) <= FLAT * small
    grows = memory_growth > FLAT * m_small and memory_growth > 5 * abs(stream_growth)
    result = {
        "format": FORMAT, "machine": machine_slug(), "images": list(counts), "img_size": size, "steps": args.steps,
        "command": "python benchmarks/bench_train_memory.py" + (" --quick" if args.quick else ""), "peaks": peaks,
        "stream_growth_mib": round(stream_growth, 1), "memory_growth_mib": round(memory_growth, 1),
        "verdict": None if args.quick else {"stream_flat": flat, "memory_grows": grows, "flat_fraction": FLAT},
    }
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"train_memory_{machine_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    if args.quick:
        return 0
    print(f"streamed: {small:.0f} -> {large:.0f} MiB ({'flat' if flat else f'NOT flat: over {FLAT:.0%}'}); in memory: "
          f"{m_small:.0f} -> {m_large:.0f} MiB ({'grows' if grows else 'did not grow: the probe sees nothing'})")
    if not (flat and grows):
        print("a sampled peak moves with machine load: rerun on an idle machine before reading this as a regression",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
