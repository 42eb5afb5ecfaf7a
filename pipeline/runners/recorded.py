"""Recorded reference: what PyTorch computed on a dataset slice, saved once and replayed as a runner.

A machine without torch (a Jetson) validates against exactly what PyTorch computed on the workstation. The
recording is REF.npz (the slice's uint8 images, labels and every reference output by tensor name) plus REF.json
(format, dataset slice, normalisation, the model's config and checkpoint hash, tensor names, the npz's hash).
The runner answers for images of the recorded slice only: each input row is looked up by the hash of its bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DvitError
from ..image_slice import ImageSlice
from ..io import atomic_write, atomic_write_json, sha256_file
from .base import Runner

FORMAT = "dvit-edge/reference/v1"


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _row_key(row: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(row, dtype=np.float32).tobytes()).digest()


def save_recording(
    path: str | os.PathLike[str], data: ImageSlice, outputs: dict[str, np.ndarray], model: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write REF.npz and REF.json (each atomically; the JSON, written last, names the npz's hash)."""
    npz, meta = _paths(path)

    arrays: dict[str, np.ndarray] = {"images": data.images, "labels": data.labels,
                                     **{f"out/{k}": v for k, v in outputs.items()}}

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(npz, write)
    atomic_write_json(meta, {
        "format": FORMAT,
        "dataset": data.describe(),
        "normalization": {"mean": list(data.mean), "std": list(data.std)},
        "classes": list(data.classes),
        "model": model,
        "tensors": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in outputs.items()},
        "npz": {"file": npz.name, "sha256": sha256_file(npz)},
        **(extra or {}),
    })
    return meta


@dataclass(frozen=True)
class Recording:
    meta: dict[str, Any]
    data: ImageSlice
    outputs: dict[str, np.ndarray]
    path: Path

    @property
    def checkpoint_sha256(self) -> str | None:
        return (self.meta.get("model") or {}).get("checkpoint_sha256")


def load_recording(path: str | os.PathLike[str]) -> Recording:
    npz, meta_path = _paths(path)
    if not meta_path.is_file() or not npz.is_file():
        raise DvitError(f"no recorded reference at {meta_path} (and {npz.name}): make one with 'dvit reference --out {npz}'")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DvitError(f"{meta_path} is not a readable reference description ({e}): re-run 'dvit reference'") from e
    if meta.get("format") != FORMAT:
        raise DvitError(f"{meta_path} is not a dvit-edge recorded reference: make one with 'dvit reference'")
    if sha256_file(npz) != (meta.get("npz") or {}).get("sha256"):
        raise DvitError(f"{npz} does not match the hash in {meta_path.name} (changed or half-copied): re-run 'dvit reference'")
    with np.load(npz) as z:
        images, labels = z["images"], z["labels"]
        outputs = {k[len("out/"):]: z[k] for k in z.files if k.startswith("out/")}
    d, norm = meta["dataset"], meta["normalization"]
    data = ImageSlice(images, labels, tuple(norm["mean"]), tuple(norm["std"]), d["source"], d["split"], int(d["first"]),
                      d["spec"], tuple(meta.get("classes") or ()))
    return Recording(meta, data, outputs, npz)


class RecordedRunner(Runner):
    """Replays a recording: for each input row, the outputs PyTorch computed for the identical image."""

    def __init__(self, rec: Recording, name: str | None = None) -> None:
        self.rec = rec
        self.name = name or f"recorded reference {rec.path.name}"
        x = rec.data.normalized()
        self._rows = {_row_key(r): i for i, r in enumerate(x)}

    @property
    def input_names(self) -> list[str]:
        return ["images"]

    @property
    def output_names(self) -> list[str]:
        return list(self.rec.outputs)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for r in feeds["images"]:
            i = self._rows.get(_row_key(r))
            if i is None:
                raise DvitError(
                    f"an input image is not in {self.rec.path.name} ({self.rec.data.source}, {len(self.rec.data)} images): "
                    "record a reference over the images you validate ('dvit reference --limit N')"
                )
            rows.append(i)
        idx = np.asarray(rows, dtype=np.int64)
        return {k: v[idx] for k, v in self.rec.outputs.items()}
