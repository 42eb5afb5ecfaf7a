"""The eval pass both spatial families share, cut into the stage functions a static export traces.

A family supplies stem (images -> the third stage's input map), keep_scores, run_blocks (third-stage blocks with a
partition), finish (the third stage's output map -> logits) and stage_modules (what each stage graph runs, by
name); the split at the pruning locations, the ranking and the loop over the stages are the same for both.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from .sparse import Partition, rank_positions

if TYPE_CHECKING:
    from .config import SpatialConfig


@dataclass
class SpatialInferenceOutput:
    logits: Tensor
    kept_positions: list[Tensor]  # per location [B, k_i]: slow-path positions of the third stage's map, best first
    # What enters each exported stage graph: the images, then the third stage's map before each pruning location.
    stage_inputs: list[Tensor]

    @property
    def kept_indices(self) -> list[Tensor]:
        """The graph-set name of kept_positions (absolute positions, see SpatialConfig.nested_selection)."""
        return self.kept_positions


class SpatialStages:
    """Mixin of DynamicCNN and DynamicSwin (both nn.Modules with a SpatialConfig `cfg`)."""

    cfg: SpatialConfig

    def stem(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def keep_scores(self, location: int, x: Tensor) -> Tensor:
        raise NotImplementedError

    def run_blocks(self, x: Tensor, start: int, end: int, partition: Partition | None = None) -> Tensor:
        raise NotImplementedError

    def finish(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def map_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the third stage's map at a batch size: the tensor `features_i` between stage graphs."""
        raise NotImplementedError

    def stage_modules(self, index: int, bounds: list[tuple[int, int]] | None = None) -> dict[str, nn.Module]:
        """The submodules stage graph `index` runs, under the names its ONNX nodes should carry; `bounds` (default
        stage_bounds) splits a dense teacher at its student's pruning locations."""
        raise NotImplementedError

    def stage_bounds(self) -> list[tuple[int, int]]:
        """Third-stage block ranges [start, end) of each stage graph: graph 0 ends at the first pruning location."""
        return list(itertools.pairwise([0, *self.cfg.pruning_loc, self.cfg.depths[2]]))

    def select_positions(self, location: int, x: Tensor) -> Partition:
        """The slow (top keep_counts) and fast positions at a location (1-based). One full descending TopK (ties
        to the lower index, as ONNX TopK specifies; a stable sort in eager mode), sliced: the two sets always
        partition the map."""
        return rank_positions(self.keep_scores(location, x), self.cfg.keep_counts[location - 1])

    def forward_inference(self, images: Tensor) -> SpatialInferenceOutput:
        """Hard sparsification with static shapes: what the exported graphs and engines compute."""
        x = self.stem(images)
        kept: list[Tensor] = []
        inputs: list[Tensor] = [images]
        part: Partition | None = None
        for s, (start, end) in enumerate(self.stage_bounds()):
            if s > 0:
                inputs.append(x)
                part = self.select_positions(s, x)
                kept.append(part.slow)
            x = self.run_blocks(x, start, end, part)
        return SpatialInferenceOutput(self.finish(x), kept, inputs)
