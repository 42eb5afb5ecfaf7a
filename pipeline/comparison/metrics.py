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


def compose_all(relative: list[np.ndarray], nested: bool = True) -> list[np.ndarray]:
    """Patch ids kept at each pruning point, from each stage's relative kept indices; without `nested` (the
    spatial families: each location ranks the whole map) the indices are already positions of the grid."""
    if not nested:
        return [idx.astype(np.int64) for idx in relative]
    ids: list[np.ndarray] = []
    for idx in relative:
        ids.append(compose(ids[-1] if ids else None, idx))
    return ids


def patch_positions(tokens: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """[B, n] original patch position of each patch row of `tokens` [B, n+1, C] (class token first): `ids`, or
    the patch grid itself (0 .. n-1) when ids is None."""
    if ids is not None:
        return np.asarray(ids, dtype=np.int64)
    n = tokens.shape[1] - 1
    return np.broadcast_to(np.arange(n, dtype=np.int64), (tokens.shape[0], n))


def aligned_rows(got: np.ndarray, got_ids: np.ndarray | None, ref: np.ndarray, ref_ids: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of two token tensors [B, n+1, C] (class token first) paired by original patch position.

    Patch rows sit at the positions `got_ids` / `ref_ids` [B, n] (None: the patch grid) and only positions both
    sides kept are paired, so two sides that kept different sets, or one set in another order, are compared
    token by token. Returns (got rows [M, C], ref rows [M, C], rows paired per sample [B]); the rows are the
    class tokens of all samples, then each sample's shared patches in patch-id order.
    """
    if got.shape[0] != ref.shape[0] or got.shape[2:] != ref.shape[2:]:
        raise DvitError(f"internal: aligning token tensors of shapes {got.shape} and {ref.shape}")
    pg, pr = patch_positions(got, got_ids), patch_positions(ref, ref_ids)
    B = got.shape[0]
    P = 1 + max(int(pg.max(initial=-1)), int(pr.max(initial=-1)))

    def row_of(pos: np.ndarray) -> np.ndarray:  # [B, P]: the patch row holding each position, -1 if not kept
        rows = np.full((B, P), -1, np.int64)
        np.put_along_axis(rows, pos, np.broadcast_to(np.arange(1, pos.shape[1] + 1), pos.shape), axis=1)
        return rows

    rg, rr = row_of(pg), row_of(pr)
    b, p = np.nonzero((rg >= 0) & (rr >= 0))
    g = np.concatenate([got[:, 0], got[b, rg[b, p]]])
    r = np.concatenate([ref[:, 0], ref[b, rr[b, p]]])
    return g, r, 1 + np.bincount(b, minlength=B)


@dataclass
class TokenErrStats(ErrStats):
    """ErrStats of token tensors compared by original patch position (aligned_rows), with how many tokens were
    compared: the class token and the patch tokens both sides kept, against the reference's token count."""

    compared: int = 0
    reference: int = 0
    samples: int = 0

    def update_aligned(self, got: np.ndarray, got_ids: np.ndarray | None, ref: np.ndarray,
                       ref_ids: np.ndarray | None) -> None:
        g, r, n = aligned_rows(got, got_ids, ref, ref_ids)
        self.update(g, r)
        self.compared += int(n.sum())
        self.reference += ref.shape[0] * ref.shape[1]
        self.samples += ref.shape[0]

    def to_dict(self) -> dict[str, float]:
        return {
            **super().to_dict(),
            "tokens_compared": self.compared,
            "tokens_reference": self.reference,
            "tokens_per_image": self.compared / max(1, self.samples),
            "tokens_fraction": self.compared / max(1, self.reference),
        }
