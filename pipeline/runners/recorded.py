"""Recorded reference as a runner: replays what PyTorch computed on a dataset slice (pipeline.results.reference).

A machine without torch (a Jetson) validates against exactly what PyTorch computed on the workstation. The
runner answers for images of the recorded slice only: each input row is looked up by the hash of its bytes.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..errors import DvitError
from ..results.reference import Recording
from .base import Runner


def _row_key(row: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(row, dtype=np.float32).tobytes()).digest()


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
