"""The pruned-token picture (the DynamicViT paper's figure): test images with the patches pruned at each stage
greyed out, from a recording made by `dvit reference` (REF.npz holds the uint8 images and PyTorch's relative
`kept_indices_i`, composed here into patch-grid ids as the comparison driver does).

PNGs are written with the standard library (zlib + struct): the report needs no imaging library on a device.
"""
from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..comparison.metrics import compose_all

if TYPE_CHECKING:
    from ..config import AnyConfig

CELL_PX = 128  # images smaller than this are enlarged by a whole factor (nearest neighbour: patches stay sharp)
# A pruned patch: pale blue-grey with diagonal hatching and a one-pixel outline, the image showing faintly through,
# so that it reads as removed on dark backgrounds and on light objects alike (not by colour alone).
PRUNED_FILL = (0xE9, 0xEE, 0xF4)
PRUNED_HATCH = (0xB4, 0xC2, 0xD3)
PRUNED_EDGE = (0x98, 0xA8, 0xBC)
GHOST = 0.15


def png(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 pixels [H, W] (grey) or [H, W, 3] (RGB)."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 2:
        ctype, h, w = 0, a.shape[0], a.shape[1]
    elif a.ndim == 3 and a.shape[2] == 3:
        ctype, h, w = 2, a.shape[0], a.shape[1]
    else:
        raise ValueError(f"internal: cannot write pixels of shape {a.shape} as PNG")
    rows = a.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def scale_for(width: int) -> int:
    return max(1, -(-CELL_PX // max(1, width)))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [C, H, W] (C = 1 or 3) -> uint8 [H, W, 3]."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"internal: expected a [C, H, W] image with 1 or 3 channels, got {image.shape}")
    hwc = np.transpose(image, (1, 2, 0))
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc


def masked(image: np.ndarray, kept_ids: np.ndarray | None, grid: int, patch: int, scale: int) -> np.ndarray:
    """The image [C, H, W] enlarged `scale` times, the patches not in `kept_ids` greyed out (None: all kept)."""
    rgb = to_rgb(image).astype(np.float32)
    big = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    if kept_ids is None:
        return big.astype(np.uint8)
    kept = np.zeros(grid * grid, bool)
    kept[np.asarray(kept_ids, np.int64)] = True
    side = patch * scale
    pruned = np.repeat(np.repeat(~kept.reshape(grid, grid), side, axis=0), side, axis=1)
    edge = np.zeros((side, side), bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    yy, xx = np.indices((side, side))
    period = max(4, side // 4)
    hatch = ((yy + xx) % period) < max(1, period // 3)
    edges = pruned & np.tile(edge, (grid, grid))
    hatches = pruned & np.tile(hatch, (grid, grid)) & ~edges
    out = big.copy()
    out[pruned] = GHOST * big[pruned] + (1 - GHOST) * np.asarray(PRUNED_FILL, np.float32)
    out[hatches] = GHOST * big[hatches] + (1 - GHOST) * np.asarray(PRUNED_HATCH, np.float32)
    out[edges] = np.asarray(PRUNED_EDGE, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass
class MaskedImage:
    """One test image of the recording: its label, the reference's prediction and kept patch ids per stage."""

    index: int  # position in the recording (the test split's image `first + index`)
    label: int
    predicted: int | None
    kept: list[list[int]]  # patch-grid ids kept after each pruning point, sorted
    pngs: list[bytes] = field(default_factory=list, repr=False)  # input, then after each pruning point

    def to_dict(self, class_names: tuple[str, ...] | None) -> dict[str, Any]:
        def name(c: int | None) -> str | None:
            return None if c is None else (class_names[c] if class_names and 0 <= c < len(class_names) else f"class {c}")

        return {"index": self.index, "label": self.label, "label_name": name(self.label), "predicted": self.predicted,
                "predicted_name": name(self.predicted), "kept": self.kept}


def pictures(images: np.ndarray, labels: np.ndarray, outputs: dict[str, np.ndarray], cfg: AnyConfig,
             count: int) -> list[MaskedImage]:
    """The first `count` images with their patches pruned at each stage greyed out.

    `outputs` holds the recording's `kept_indices_i` (relative to each stage's input tokens) and `logits`."""
    S = len(cfg.pruning_loc) + 1
    relative = [np.asarray(outputs[f"kept_indices_{i}"]) for i in range(1, S)]
    n = min(count, int(images.shape[0]))
    ids = compose_all([r[:n] for r in relative], cfg.nested_selection)
    logits = outputs.get("logits")
    scale = scale_for(cfg.img_size)
    out = []
    for j in range(n):
        kept = [np.sort(stage[j]) for stage in ids]
        pngs = [png(masked(images[j], None, cfg.grid_size, cfg.patch_size, scale))]
        pngs += [png(masked(images[j], k, cfg.grid_size, cfg.patch_size, scale)) for k in kept]
        pred = int(np.argmax(logits[j])) if logits is not None else None
        out.append(MaskedImage(j, int(labels[j]), pred, [k.tolist() for k in kept], pngs))
    return out
