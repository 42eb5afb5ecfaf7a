"""Image trees written by tests (never kept in the repository): real PNG files a real decoder reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_tree(root: Path, per_class: int, classes: int = 2, size: int = 28, mode: str = "L",
                     seed: int = 0) -> list[Path]:
    """`per_class` PNGs in each of `classes` folders: a class-coloured background and a random bright square,
    so that classes differ and every file differs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size) if mode == "L" else (size, size, 3)
            img = np.full(shape, 30 + 60 * c, dtype=np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            img[y : y + size // 3, x : x + size // 3] = rng.integers(150, 255)
            p = folder / f"{i:05d}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
    return paths


def corrupt(path: Path) -> None:
    """A file that keeps its image name but is no image: a PNG signature and garbage."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
