"""What `dvit reference` writes: a recording of what PyTorch computed on a dataset slice, format
"dvit-edge/reference/v1".

REF.npz holds the slice's uint8 images, labels and every reference output by tensor name ("out/<name>"); REF.json
holds the format, the dataset slice, the normalisation, the class names, the model's config and checkpoint hash,
each tensor's shape and dtype, and the npz's hash (written last, so a JSON names only a complete npz). Readers
get a `Recording`; runners.recorded replays one as a runner.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DvitError
from ..image_slice import ImageSlice
from ..io import atomic_write, atomic_write_json, sha256_file
from .formats import REFERENCE
from .jsonfile import check_format, fix_for

FORMAT = REFERENCE.name
# REF.json's keys written from the recording itself; any other key is the recorder's extra provenance.
META_KEYS = ("format", "dataset", "normalization", "classes", "model", "tensors", "npz")


def paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(REF.npz, REF.json) of a recording named by either file or by their common stem."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def save_recording(
    path: str | os.PathLike[str], data: ImageSlice, outputs: dict[str, np.ndarray], model: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write REF.npz and REF.json (each atomically; the JSON, written last, names the npz's hash); returns REF.json."""
    npz, meta = paths(path)

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
    meta: dict[str, Any]  # REF.json as written
    data: ImageSlice
    outputs: dict[str, np.ndarray]
    path: Path  # REF.npz

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recording:
        return load_recording(path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this recording to another place (same arrays, same model and provenance); returns REF.json."""
        extra = {k: v for k, v in self.meta.items() if k not in META_KEYS}
        return save_recording(path, self.data, self.outputs, dict(self.meta.get("model") or {}), extra)

    @property
    def json_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def npz_sha256(self) -> str:
        return str(self.meta["npz"]["sha256"])

    @property
    def checkpoint_sha256(self) -> str | None:
        return (self.meta.get("model") or {}).get("checkpoint_sha256")

    @property
    def model_config(self) -> dict[str, Any] | None:
        return (self.meta.get("model") or {}).get("config") or None

    @property
    def keep_counts(self) -> list[int]:
        """Tokens kept at each pruning point, from the recorded kept_indices_i (in stage order)."""
        kept = [k for k in self.outputs if re.fullmatch(r"kept_indices_\d+", k)]
        return [int(self.outputs[k].shape[1]) for k in sorted(kept, key=lambda k: int(k.rsplit("_", 1)[1]))]


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read REF.npz and REF.json, refusing another format or an npz that does not match the JSON's hash."""
    npz, meta_path = paths(path)
    if not meta_path.is_file() or not npz.is_file():
        raise DvitError(f"no recorded reference at {meta_path} (and {npz.name}): make one with 'dvit reference --out {npz}'")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DvitError(f"{meta_path} is not a readable reference description ({e}): re-run 'dvit reference'") from e
    if not isinstance(meta, dict):
        raise DvitError(f"{meta_path} is not a recorded reference (a JSON {type(meta).__name__}): {fix_for(REFERENCE)}")
    check_format(meta_path, meta, REFERENCE)
    if sha256_file(npz) != (meta.get("npz") or {}).get("sha256"):
        raise DvitError(f"{npz} does not match the hash in {meta_path.name} (changed or half-copied): re-run 'dvit reference'")
    with np.load(npz) as z:
        images, labels = z["images"], z["labels"]
        outputs = {k[len("out/"):]: z[k] for k in z.files if k.startswith("out/")}
    d, norm = meta["dataset"], meta["normalization"]
    data = ImageSlice(images, labels, tuple(norm["mean"]), tuple(norm["std"]), d["source"], d["split"], int(d["first"]),
                      d["spec"], tuple(meta.get("classes") or ()))
    return Recording(meta, data, outputs, npz)
