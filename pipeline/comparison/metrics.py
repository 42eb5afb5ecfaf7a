"""Error statistics and kept-token metrics, accumulated batch by batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DvitError


@dataclass
class ErrStats:
    """Running max/mean absolute error and row cosine similarity of two tensors."""

    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    cos_sum: float = 0.0
    cos_min: float = 1.0
    rows: int = 0

    def update(self, got: np.ndarray, ref: np.ndarray) -> None:
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            raise DvitError(f"internal: comparing shapes {got.shape} and {ref.shape}")
        d = np.abs(got - ref)
        self.max_abs = max(self.max_abs, float(d.max(initial=0.0)))
        self.sum_abs += float(d.sum())
        self.count += d.size
        a = got.reshape(-1, got.shape[-1])
        b = ref.reshape(-1, ref.shape[-1])
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.where((na > 0) & (nb > 0), (a * b).sum(1) / np.maximum(na * nb, 1e-30), (na == nb).astype(float))
        cos = np.clip(cos, -1.0, 1.0)
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min(initial=1.0)))
        self.rows += cos.size

    def to_dict(self) -> dict[str, float]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / max(1, self.count),
            "cosine_mean": self.cos_sum / max(1, self.rows),
            "cosine_min": self.cos_min,
        }


@dataclass
class KeptStats:
    stage: int
    keep_count: int
    ious: list[np.ndarray] = field(default_factory=list)
    order: list[np.ndarray] = field(default_factory=list)

    def update(self, got: np.ndarray, ref: np.ndarray) -> None:
        self.ious.append(kept_iou(got, ref))
        self.order.append((got == ref).all(axis=1))

    def to_dict(self) -> dict[str, Any]:
        iou = np.concatenate(self.ious) if self.ious else np.zeros(0)
        order = np.concatenate(self.order) if self.order else np.zeros(0, bool)
        return {
            "stage": self.stage,
            "keep_count": self.keep_count,
            "iou_mean": float(iou.mean()) if iou.size else None,
            "iou_min": float(iou.min()) if iou.size else None,
            "identical": float((iou == 1.0).mean()) if iou.size else None,
            "order_identical": float(order.mean()) if order.size else None,
        }


def kept_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row IoU of two [n, k] sets of patch ids."""
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1)
    union = a.shape[1] + b.shape[1] - inter
    return inter / np.maximum(union, 1)


def compose(prev_ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """Relative kept indices -> original patch ids, given the ids of the stage's input patch tokens."""
    idx = idx.astype(np.int64)
    return idx if prev_ids is None else np.take_along_axis(prev_ids, idx, axis=1)


def compose_all(relative: list[np.ndarray]) -> list[np.ndarray]:
    """Patch ids kept at each pruning point, from each stage's relative kept indices."""
    ids: list[np.ndarray] = []
    for idx in relative:
        ids.append(compose(ids[-1] if ids else None, idx))
    return ids


def grid_order(tokens: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """Token rows (class token first) with the patch rows sorted by patch id; unchanged when ids is None."""
    if ids is None:
        return tokens
    order = np.argsort(ids, axis=1, kind="stable")
    patches = np.take_along_axis(tokens[:, 1:], order[:, :, None], axis=1)
    return np.concatenate([tokens[:, :1], patches], axis=1)
