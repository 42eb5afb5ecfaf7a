"""Calibration sets for post-training quantization: drawn deterministically, chained through the stages, cached.

A calibration set is `size` images of a dataset's TRAIN split (never the test split that `dvit validate`
scores), drawn with `torch.randperm(len(train), generator=seed)[:size]` and sorted, i.e. exactly the
sample `ImageSet.subset(size, seed)` takes, normalised as the model expects.

Each graph gets its own calibration inputs: stage 0 and the fused graph take the images; stage i >= 1
takes the FP32 tokens entering it, produced by running the FP32 stage graphs 0..i-1 in ONNX Runtime (CPU)
on those images. Inputs are batched to the graph's static batch size B (the set wraps around to fill the
last batch, so `samples_used` is `size` rounded up to a multiple of B).

Everything is cached under a directory (default artifacts/calibration-cache, see calibration/README.md):

    data/<key>.npz    calibration inputs of one graph, {input name: [samples_used, ...]}
    data/<key>.json   what <key> hashes: dataset source, split, indices, seed, size, graph hashes
    int8/<key>.onnx   the quantized graph ModelOpt produced (after percentile rescaling, if any)
    int8/<key>.json   what <key> hashes, plus the activation scales and Q/DQ counts
    int8/<key>.cache  the activation scales in TensorRT calibration-cache text format

Data keys hash (dataset source, split, size, seed, sha256 of the indices, sha256 of the target graph and
of every graph producing its input); quantization keys add the method, excluded nodes and tool versions.
A second build with the same inputs therefore neither re-runs the stage chain nor calls the calibrator;
`COUNTERS` counts both so tests can assert it.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..graphset import GraphEntry
from ..io import atomic_write, atomic_write_json

CACHE_FORMAT = "dvit-edge/calibration-cache/v1"
DEFAULT_CACHE_DIR = Path("artifacts/calibration-cache")  # see calibration/README.md at the repository root

# Incremented by the work the cache saves: "draws" (dataset loads), "chain_runs" (FP32 stage-chain runs
# producing stage inputs), "calibrations" (ModelOpt quantize calls), "data_hits", "int8_hits".
COUNTERS: collections.Counter[str] = collections.Counter()


def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def digest(obj: Any) -> str:
    """A stable hash of a JSON-serialisable object: the cache key of what it describes."""
    return _sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


@dataclass(frozen=True)
class CalibrationSet:
    """Normalised float32 images [n, C, H, W] from a train split, with what identifies them."""

    images: np.ndarray
    indices: np.ndarray
    source: str
    split: str
    seed: int
    size: int

    def fingerprint(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "size": self.size,
            "seed": self.seed,
            "indices_sha256": _sha256_bytes(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes()),
        }


def check_calib_size(size: int) -> None:
    if size < 1:
        raise ConfigError(f"calibration size {size} is not positive: pass e.g. --calib-size 512")


def draw_calibration_set(
    size: int, seed: int = 0, data: str | None = None, in_chans: int = 1, img_size: int = 28
) -> CalibrationSet:
    """`size` train images drawn with `seed` (the same sample as ImageSet.subset(size, seed))."""
    import torch

    from ..data import load_dataset

    check_calib_size(size)
    ds = load_dataset(data, "train", in_chans, img_size)
    COUNTERS["draws"] += 1
    if ds.in_chans != in_chans or ds.img_size != img_size:
        raise DataError(
            f"calibration images are {ds.in_chans}x{ds.img_size}x{ds.img_size} but the model takes "
            f"{in_chans}x{img_size}x{img_size}: pass the dataset the model was trained on (--data)"
        )
    if size > len(ds):
        raise ConfigError(
            f"calibration size {size} exceeds the {len(ds)} training images of {ds.source}: pass --calib-size {len(ds)} or less"
        )
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    images = ds.normalize(ds.images[idx]).numpy().astype(np.float32)
    return CalibrationSet(images, idx.numpy().astype(np.int64), ds.source, "train", seed, size)


def fill_batches(x: np.ndarray, batch: int) -> np.ndarray:
    """`x` wrapped around to a multiple of `batch` samples (static-batch graphs take only full batches)."""
    n = x.shape[0]
    m = -(-n // batch) * batch
    if m == n:
        return x
    return np.concatenate([x, x[np.arange(m - n) % n]], axis=0)


class CalibrationCache:
    """Content-addressed store of calibration inputs and quantized graphs (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR

    # ---- calibration inputs ----
    def data_path(self, key: str) -> Path:
        return self.root / "data" / f"{key}.npz"

    def load_data(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.data_path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None  # a corrupt entry is recomputed and overwritten

    def store_data(self, key: str, arrays: dict[str, np.ndarray], described: dict[str, Any]) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(self.data_path(key), write)
        atomic_write_json(self.data_path(key).with_suffix(".json"), {"format": CACHE_FORMAT, "key": key, **described})

    # ---- quantized graphs ----
    def int8_path(self, key: str) -> Path:
        return self.root / "int8" / f"{key}.onnx"

    def load_int8(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        path, meta_path = self.int8_path(key), self.int8_path(key).with_suffix(".json")
        if not (path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        from ..io import sha256_file

        if meta.get("sha256") != sha256_file(path):
            return None  # modified or half-copied: recalibrate
        return path, meta

    def store_int8(self, key: str, model_path: Path, meta: dict[str, Any]) -> None:
        import shutil

        from ..io import sha256_file

        scales = meta.get("activation_scales", {})

        def copy(p: Path) -> None:
            shutil.copyfile(model_path, p)

        def text(p: Path) -> None:
            p.write_text(trt_calibration_cache(scales))

        atomic_write(self.int8_path(key), copy)
        atomic_write(self.int8_path(key).with_suffix(".cache"), text)
        atomic_write_json(
            self.int8_path(key).with_suffix(".json"),
            {"format": CACHE_FORMAT, "key": key, "sha256": sha256_file(self.int8_path(key)), **meta},
        )


def trt_calibration_cache(scales: dict[str, float], header: str = "TRT-8501-EntropyCalibration2") -> str:
    """Activation scales as a TensorRT calibration cache (the format ModelOpt's calibration_cache_path reads)."""
    import struct

    lines = [header] + [f"{name}: {struct.pack('!f', float(s)).hex()}" for name, s in sorted(scales.items())]
    return "\n".join(lines) + "\n"


def graph_calibration_data(
    cache: CalibrationCache,
    calib: CalibrationSet,
    producers: list[GraphEntry],
    target: GraphEntry,
    batch: int,
) -> tuple[dict[str, np.ndarray], str, bool]:
    """Calibration inputs of one graph, from the cache or by running the FP32 producing graphs as a stage chain.

    producers: the stage graphs that produce the target's input, in order (empty for graphs that take the
    images). Returns (feeds, key, cache_hit).
    """
    from ..backend.onnxruntime.runner import OnnxRuntimeRunner
    from ..runners.base import run_batched
    from ..runners.chain import StageChain

    in_name = target.input_names[0]
    described = {
        "calibration_set": calib.fingerprint(),
        "batch": batch,
        "producers": [{"file": Path(p.file).name, "sha256": p.sha256} for p in producers],
        "graph": {"file": Path(target.file).name, "sha256": target.sha256, "input": in_name},
    }
    key = digest(described)
    cached = cache.load_data(key)
    if cached is not None and in_name in cached:
        COUNTERS["data_hits"] += 1
        return cached, key, True
    x = fill_batches(calib.images, batch)
    if producers:
        COUNTERS["chain_runs"] += 1
        chain = StageChain([OnnxRuntimeRunner(p.path, p.name) for p in producers])
        x = run_batched(chain, {chain.input_names[0]: x})[in_name]
    feeds = {in_name: np.ascontiguousarray(x, dtype=np.float32)}
    cache.store_data(key, feeds, described)
    return feeds, key, False
