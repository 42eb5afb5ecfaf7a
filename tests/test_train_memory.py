"""Memory stays flat in dataset size on the streamed path: the same number of steps on ~2,000 and ~20,000 real
image files peaks within 10%, while the in-memory path, measured the same way, grows with the data."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train_data import write_image_tree

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96  # pixels: 27 KB per decoded RGB image, so 20,000 images hold 553 MB in memory

DRIVER = """
import sys
from pipeline.config import ModelConfig
from pipeline.train import train
from pipeline.train.recipe import train_config
cfg = ModelConfig("probe", img_size=SIZE, patch_size=8, in_chans=3, num_classes=2, embed_dim=32, depth=2, num_heads=2,
                  pruning_loc=(), keep_ratio=1.0)
tcfg, _ = train_config("small", {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 15, "eval_subset": 64,
                                 "loader": sys.argv[2], "workers": 2})
train(cfg, tcfg, sys.argv[3], data=sys.argv[1], progress=False)
""".replace("SIZE", str(SIZE))


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
    """Proportional set size in bytes: shared pages split among the processes that share them, so a forked
    worker is charged only for what it adds."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_memory(cmd: list[str]) -> int:
    """Peak of the summed PSS of a command and every process it starts, sampled every 20 ms."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss(p) for p in _tree_pids(proc.pid)))
        time.sleep(0.02)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    return peak


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for n in (2_000, 20_000):
        root = tmp_path_factory.mktemp(f"photos{n}")
        write_image_tree(root, per_class=n // 2, size=SIZE, mode="RGB", seed=n)
        out[n] = root
    return out


def test_streamed_memory_is_flat_in_dataset_size(trees: dict[int, Path], tmp_path: Path) -> None:
    peaks = {}
    for loader in ("stream", "memory"):
        for n, root in trees.items():
            peaks[loader, n] = peak_memory([sys.executable, "-c", DRIVER, str(root), loader, str(tmp_path / f"{loader}{n}")])
    mib = {k: round(v / 2**20) for k, v in peaks.items()}
    print("peak PSS (MiB):", mib)
    small, large = peaks["stream", 2_000], peaks["stream", 20_000]
    assert abs(large - small) <= 0.10 * small, mib
    # The probe sees growth where there is some: the in-memory path, holding 10x the decoded images, fails the
    # same 10% criterion.
    grown = peaks["memory", 20_000] - peaks["memory", 2_000]
    assert grown > 0.10 * peaks["memory", 2_000] and grown > 5 * abs(large - small), mib
