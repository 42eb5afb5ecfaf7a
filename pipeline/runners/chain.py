"""The stage chain: stage runners composed as the pipeline runs them, stage i fed what stage i-1 produced."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import ManifestError
from .base import Runner


class StageChain(Runner):
    """Stage 0 takes the chain's input (`images`); stage i >= 1 takes its input (`tokens_i`) from the outputs
    of stage i-1. The outputs are every stage's outputs, so the tensors between stages are visible too."""

    def __init__(self, stages: Sequence[Runner], name: str = "chain") -> None:
        if not stages:
            raise ValueError("internal: a stage chain needs at least one stage")
        for prev, nxt in itertools.pairwise(stages):
            if nxt.input_names[0] not in prev.output_names:
                raise ManifestError(
                    f"{nxt.name} takes {nxt.input_names[0]}, which {prev.name} does not produce "
                    f"({', '.join(prev.output_names)}): the graphs do not follow the export contract; re-export them"
                )
        self.stages = list(stages)
        self.name = name
        batches = {s.batch for s in stages if s.batch is not None}
        if len(batches) > 1:
            raise ManifestError(f"{name}: its stages take different batch sizes {sorted(batches)}: re-export them")
        self.batch = batches.pop() if batches else None

    @property
    def input_names(self) -> list[str]:
        return self.stages[0].input_names

    @property
    def output_names(self) -> list[str]:
        return [n for s in self.stages for n in s.output_names]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        x = feeds
        for i, st in enumerate(self.stages):
            res = st.infer(x)
            out.update(res)
            if i + 1 < len(self.stages):
                name = self.stages[i + 1].input_names[0]
                x = {name: res[name]}
        return out

    def close(self) -> None:
        for s in self.stages:
            s.close()
