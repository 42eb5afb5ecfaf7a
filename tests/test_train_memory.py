"""Memory stays flat in dataset size on the streamed path: what each data path holds, on a small and a 10x larger
tree of real image files.

What is counted is the bytes held by the objects `dvit train`'s data path builds (pipeline.train.sources
.open_training_data: its batch source, its evaluation set and everything they reference: index arrays, decoded
tensors, path buffers), before and after a few training steps. That does not depend on what else the machine runs,
unlike a sampled peak of the process tree, which moved by 9% under load; that measurement, on the real trainer
and its workers, is `make bench` (benchmarks/bench_train_memory.py), smoke-run here without a verdict.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from script_module import load_script

from pipeline.config import ModelConfig
from pipeline.train.recipe import train_config
from pipeline.train.sources import open_training_data
from tests.train_data import write_image_tree

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # pixels: 3 KB per decoded RGB image
SMALL, LARGE = 200, 2_000
# The streamed path keeps per file its index entry (relative path, offset, label) and per-epoch draws: a few dozen
# bytes, never the pixels.
STREAM_BYTES_PER_FILE = 256


def held_bytes(root: object) -> int:
    """Bytes of array and tensor memory (each buffer once) plus strings reachable from `root` through containers
    and the attributes of the project's and torch.utils.data's objects; modules, classes and functions are not
    followed."""
    seen: set[int] = set()
    buffers: dict[int, int] = {}
    strings = 0
    todo: list[Any] = [root]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            buffers[st.data_ptr()] = max(buffers.get(st.data_ptr(), 0), st.nbytes())
        elif isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            if isinstance(base.base, (bytes, bytearray, memoryview)) or base.base is None:
                ptr = base.__array_interface__["data"][0]
                buffers[ptr] = max(buffers.get(ptr, 0), base.nbytes)
            else:
                todo.append(base.base)  # memory owned by a tensor or a buffer object: counted through it
        elif isinstance(o, (str, bytes, bytearray)):
            strings += sys.getsizeof(o)
        elif isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
        elif isinstance(o, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
            continue
        elif type(o).__module__.startswith(("pipeline.", "torch.utils.data")):
            todo.extend(vars(o).values() if hasattr(o, "__dict__") else ())
            todo.extend(getattr(o, s) for s in getattr(type(o), "__slots__", ()) if hasattr(o, s))
    return sum(buffers.values()) + strings


def test_held_bytes_counts_what_an_object_holds() -> None:
    """The probe sees arrays, tensors (a shared buffer once) and paths, wherever they hang."""
    t = torch.zeros(1000, dtype=torch.uint8)
    a = np.zeros(500, dtype=np.int64)
    holder = types.SimpleNamespace()  # not followed: only the project's objects and containers are
    assert held_bytes([t, t[10:], t.numpy(), {1: a, 2: (a[5:],)}, holder]) == 1000 + 4000
    assert held_bytes(["x" * 10_000]) >= 10_000


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for n in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"photos{n}")
        write_image_tree(root, per_class=n // 2, size=SIZE, mode="RGB", seed=n)
        out[n] = root
    return out


def _held(root: Path, loader: str) -> tuple[int, int]:
    """(bytes the data path holds once opened, after three training steps), in-process (workers 0)."""
    cfg = ModelConfig("probe", img_size=SIZE, patch_size=8, in_chans=3, num_classes=2, embed_dim=32, depth=2,
                      num_heads=2, pruning_loc=(), keep_ratio=1.0)
    tcfg, _ = train_config("small", {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 3, "loader": loader,
                                     "workers": 0})
    td = open_training_data(str(root), cfg, tcfg, 0, 1, 1, False)
    assert td.train.kind == loader
    opened = held_bytes(td)
    steps = 0
    for x, y, _ in td.train.epoch(0):
        assert x.shape == (32, 3, SIZE, SIZE) and y.shape == (32,)
        steps += 1
    assert steps == 3
    after = held_bytes(td)
    td.train.close()
    return opened, after


def test_streamed_data_path_holds_no_images(trees: dict[int, Path]) -> None:
    held = {(loader, n): _held(root, loader) for loader in ("stream", "memory") for n, root in trees.items()}
    print("bytes held (opened, after 3 steps):", held)
    added = LARGE - SMALL
    decoded = 3 * SIZE * SIZE  # one decoded image
    for phase in (0, 1):
        stream = held["stream", LARGE][phase] - held["stream", SMALL][phase]
        memory = held["memory", LARGE][phase] - held["memory", SMALL][phase]
        # streamed: the index of the added files, nothing per pixel
        assert 0 <= stream <= STREAM_BYTES_PER_FILE * added, held
        assert held["stream", LARGE][phase] < LARGE * decoded / 4, held
        # in memory: every added image decoded (train split and held-out test split together), so the probe sees
        # growth where there is some
        assert memory >= added * decoded, held
        assert memory > 20 * max(stream, 1), held


def test_memory_bench_smoke(tmp_path: Path) -> None:
    """benchmarks/bench_train_memory.py --quick: the real trainer and its workers on both paths, the JSON complete.
    No verdict is asserted: a sampled peak depends on machine load, and belongs to `make bench`."""
    bench = load_script("benchmarks/bench_train_memory.py")
    out = tmp_path / "memory.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["format"] == bench.FORMAT and r["images"] == [64, 640] and r["verdict"] is None
    for loader in ("stream", "memory"):
        assert set(r["peaks"][loader]) == {"64", "640"}
        assert all(v["peak_pss_mib"] > 0 for v in r["peaks"][loader].values())
