"""The PyTorch reference: the model's inference path (forward_inference of DynamicViT, DynamicCNN or DynamicSwin)
behind the runner interface, emitting the graphs' tensor names. The only runner that needs torch; imported only to make one."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Runner


class PyTorchRunner(Runner):
    """images -> logits, kept_indices_i (int64: relative to stage i's input patch tokens, or grid positions for the
    spatial families) and tokens_i or features_i (what enters stage graph i, named by the config's boundary), for
    i = 1..S-1; a dense model gives logits only."""

    def __init__(self, model: Any, name: str = "pytorch", device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.name = name
        self.stages = len(model.cfg.pruning_loc) + 1
        self.boundary = model.cfg.boundary

    @property
    def input_names(self) -> list[str]:
        return ["images"]

    @property
    def output_names(self) -> list[str]:
        S = self.stages
        return ["logits", *(f"kept_indices_{i}" for i in range(1, S)), *(f"{self.boundary}_{i}" for i in range(1, S))]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.model.forward_inference(torch.from_numpy(np.ascontiguousarray(feeds["images"])).to(self.device))
        res = {"logits": out.logits.float().cpu().numpy()}
        for i, idx in enumerate(out.kept_indices, start=1):
            res[f"kept_indices_{i}"] = idx.cpu().numpy().astype(np.int64)
        for i, t in enumerate(out.stage_inputs[1:], start=1):
            res[f"{self.boundary}_{i}"] = t.float().cpu().numpy()
        return res
