"""Configuration of the spatially sparsified members of the family (T-PAMI DynamicViT: DynamicCNN on ConvNeXt,
DynamicSwin on Swin).

They differ from token pruning (pipeline.config.ModelConfig) in what a pruning location does: the feature map keeps
its shape, the top int(N * ratio) positions take the block's full MLP and the others a cheap fast path, and the
ratios are rho, rho - 0.2, rho - 0.4 (official infer.py KEEP_RATE2), each location ranking every position afresh.
Pruning happens inside the third stage only, before the blocks `pruning_loc` (indices within that stage).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SPATIAL_FAMILIES = ("convnext", "swin")
RATIO_STEP = 0.2  # official: [rho, rho - 0.2, rho - 0.4]


@dataclass(frozen=True)
class SpatialConfig:
    name: str
    family: str  # "convnext" | "swin"
    depths: tuple[int, ...]
    dims: tuple[int, ...]  # channels of each of the four stages (Swin: embed_dim * 2^i)
    num_heads: tuple[int, ...] = ()  # Swin only
    window_size: int = 7  # Swin only
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    # Block indices within the third stage before which positions are ranked; () gives the dense teacher.
    pruning_loc: tuple[int, ...] = (1, 2, 3)
    keep_ratio: float = 0.7
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        for f in ("depths", "dims", "num_heads", "pruning_loc"):
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))
        self.validate()

    @property
    def is_dense(self) -> bool:
        return not self.pruning_loc

    @property
    def stage_ratios(self) -> list[float]:
        """rho, rho - 0.2, rho - 0.4, ...: the share of positions on the slow path at each pruning location."""
        return [self.keep_ratio - RATIO_STEP * i for i in range(len(self.pruning_loc))]

    @property
    def sparse_grid(self) -> int:
        """Side of the third stage's feature map, where the pruning happens (image / 16 for both families)."""
        return self.img_size // 16

    @property
    def positions(self) -> int:
        return self.sparse_grid**2

    @property
    def keep_counts(self) -> list[int]:
        """Positions on the slow path at each location: int(N * ratio), the official rounding."""
        return [int(self.positions * r) for r in self.stage_ratios]

    # ---- the graph-set contract (shared with pipeline.config.ModelConfig) ----
    # Stage graph i >= 1 takes the third stage's whole map `features_i` and returns `kept_indices_i`: the positions
    # of that map on the slow path, absolute (each location ranks every position afresh), not nested in the
    # previous location's selection as token pruning's are.
    boundary = "features"
    nested_selection = False

    @property
    def grid_size(self) -> int:
        """Side of the grid the kept positions index (the third stage's map)."""
        return self.sparse_grid

    @property
    def patch_size(self) -> int:
        """Image pixels per position of that grid (16: a stride-4 stem, then two halvings)."""
        return self.img_size // self.sparse_grid

    @property
    def num_patches(self) -> int:
        return self.positions

    @property
    def tokens_per_stage(self) -> list[int]:
        """Positions in the map entering each stage graph: the map keeps its shape, so all of them."""
        return [self.positions] * (len(self.pruning_loc) + 1)

    def architecture_key(self) -> dict[str, Any]:
        """What the weights depend on (not the keep ratio, which only changes the static counts)."""
        d = self.to_dict()
        for k in ("name", "keep_ratio", "drop_path_rate"):
            d.pop(k)
        return d

    def validate(self) -> None:
        if self.family not in SPATIAL_FAMILIES:
            raise ConfigError(f"unknown spatial family '{self.family}': one of {', '.join(SPATIAL_FAMILIES)}")
        if len(self.depths) != 4 or len(self.dims) != 4:
            raise ConfigError(f"{self.name}: four stages expected, got depths {list(self.depths)}, dims {list(self.dims)}")
        if self.family == "swin" and len(self.num_heads) != 4:
            raise ConfigError(f"{self.name}: Swin needs four head counts, got {list(self.num_heads)}")
        if self.img_size <= 0 or self.img_size % 32:
            raise ConfigError(f"img_size {self.img_size} must be a positive multiple of 32 (four stages halve it after "
                              f"a stride-4 stem): pass e.g. --img-size {max(32, round(self.img_size / 32) * 32)}")
        locs = self.pruning_loc
        if list(locs) != sorted(set(locs)) or any(not 0 < p < self.depths[2] for p in locs):
            raise ConfigError(f"pruning locations {list(locs)} must be strictly increasing block indices between 1 and "
                              f"{self.depths[2] - 1} of the third stage")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ConfigError(f"keep ratio {self.keep_ratio} is outside (0, 1]: pass e.g. --keep-ratio 0.7")
        if locs and self.stage_ratios[-1] <= 0:
            low = RATIO_STEP * (len(locs) - 1)
            raise ConfigError(f"keep ratio {self.keep_ratio} leaves the pruning location {len(locs)} a ratio of "
                              f"{self.stage_ratios[-1]:.2g} (rho - {low:.1f}): pass --keep-ratio above {low:.1f}")
        for i, k in enumerate(self.keep_counts):
            if k < 1:
                raise ConfigError(f"keep ratio {self.keep_ratio} puts no position of {self.positions} on the slow path "
                                  f"at pruning location {i + 1}: raise the keep ratio or the image size")

    def replace(self, **changes: Any) -> SpatialConfig:
        return dataclasses.replace(self, **changes)

    def as_dense(self) -> SpatialConfig:
        return self.replace(pruning_loc=(), keep_ratio=1.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for f in ("depths", "dims", "num_heads", "pruning_loc"):
            d[f] = list(d[f])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpatialConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown spatial config keys {sorted(unknown)}: this file was written by another version")
        return cls(**d)


# The official configurations (raoyongming/DynamicViT infer.py at 1322e62): AdaConvNeXt(depths, dims, sparse_ratio,
# pruning_loc) and AdaSwinTransformer(embed_dim, depths, num_heads, window_size=7, pruning_loc, sparse_ratio).
SPATIAL_PRESETS: dict[str, SpatialConfig] = {
    "convnext-t": SpatialConfig("convnext-t", "convnext", (3, 3, 9, 3), (96, 192, 384, 768), pruning_loc=(1, 2, 3)),
    "convnext-s": SpatialConfig("convnext-s", "convnext", (3, 3, 27, 3), (96, 192, 384, 768), pruning_loc=(3, 6, 9)),
    "convnext-b": SpatialConfig("convnext-b", "convnext", (3, 3, 27, 3), (128, 256, 512, 1024), pruning_loc=(3, 6, 9)),
    "swin-t": SpatialConfig("swin-t", "swin", (2, 2, 6, 2), (96, 192, 384, 768), (3, 6, 12, 24), pruning_loc=(1, 2, 3)),
    "swin-s": SpatialConfig("swin-s", "swin", (2, 2, 18, 2), (96, 192, 384, 768), (3, 6, 12, 24), pruning_loc=(2, 4, 6)),
    "swin-b": SpatialConfig("swin-b", "swin", (2, 2, 18, 2), (128, 256, 512, 1024), (4, 8, 16, 32),
                            pruning_loc=(2, 4, 6)),
    # Sized for the embedded default on a 2-core CPU (Fashion-MNIST resized to 64x64: a 4x4 third-stage map of 16
    # positions, 11/7/4 on the slow path at rho 0.7: 0.7 - 0.2 is 0.4999... in floating point, and the official
    # int(N * ratio) rounds it down too); the same code path as the official sizes, for tests and `make student`-scale
    # runs.
    "convnext-fmnist": SpatialConfig("convnext-fmnist", "convnext", (1, 1, 4, 1), (16, 32, 64, 128), img_size=64,
                                     in_chans=1, num_classes=10, pruning_loc=(1, 2, 3)),
    "swin-fmnist": SpatialConfig("swin-fmnist", "swin", (1, 1, 4, 1), (16, 32, 64, 128), (1, 2, 4, 8), window_size=4,
                                 img_size=64, in_chans=1, num_classes=10, pruning_loc=(1, 2, 3)),
}
# The official names (their releases and teachers), as opposed to the small presets above.
OFFICIAL_SPATIAL = ("convnext-t", "convnext-s", "convnext-b", "swin-t", "swin-s", "swin-b")


def spatial_config(name: str, *, keep_ratio: float | None = None, num_classes: int | None = None,
                   dense: bool = False) -> SpatialConfig:
    if name not in SPATIAL_PRESETS:
        raise ConfigError(f"unknown spatial model '{name}': choose one of {', '.join(SPATIAL_PRESETS)}")
    cfg = SPATIAL_PRESETS[name]
    changes: dict[str, Any] = {}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if dense:
        changes.update(pruning_loc=(), keep_ratio=1.0)
    elif keep_ratio is not None:
        changes["keep_ratio"] = keep_ratio
    return cfg.replace(**changes) if changes else cfg
