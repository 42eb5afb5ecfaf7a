"""The torch modules the exporter traces, one per graph, and the plan of which graphs to export.

Each module calls the model's own stage functions (DynamicViT.embed, run_blocks, keep_scores, select_tokens,
classify), so the graphs compute exactly what the model's inference path computes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ..config import ModelConfig
from ..model import DynamicViT, select_tokens


# ---- modules traced into the graphs ----
class StageModule(nn.Module):
    """Stage `index` of a DynamicViT as its own module, calling the model's stage functions.

    It registers exactly the parts it runs (patch embedding, prediction module, its blocks under their global
    index, the head), so every ONNX node and initializer it produces is named after the stage: inside the fused
    graph "/stage2/blocks.5/attn/MatMul". The model itself is held unregistered: a module registered under two
    stages would be named after only one of them.
    """

    model: DynamicViT  # set with object.__setattr__: deliberately not a registered submodule

    def __init__(self, model: DynamicViT, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        bounds = model.stage_bounds()
        self.index = index
        self.start, self.end = bounds[index]
        self.is_last = index == len(bounds) - 1
        self.keep_count: int | None = None if index == 0 else model.cfg.keep_counts[index - 1]
        if index == 0:
            self.patch_embed = model.patch_embed
            self.cls_token = model.cls_token
            self.pos_embed = model.pos_embed
        else:
            self.score_predictor = model.score_predictor[index - 1]
        self.blocks = nn.Module()
        for j in range(self.start, self.end):
            self.blocks.add_module(str(j), model.blocks[j])
        if self.is_last:
            self.norm = model.norm
            self.head = model.head
            if model.aux_head is not None:
                self.aux_head = model.aux_head

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        m = self.model
        idx = None
        if self.index == 0:
            x = m.embed(x)
        else:
            assert self.keep_count is not None
            x, idx = select_tokens(x, m.keep_scores(self.index, x), self.keep_count)
        x = m.run_blocks(x, self.start, self.end)
        if self.is_last:
            x = m.classify(x)
        return x if idx is None else (x, idx)


class FusedModule(nn.Module):
    """All stages in one graph, built from submodules stage0, stage1, ... (their names prefix every node)."""

    def __init__(self, model: DynamicViT) -> None:
        super().__init__()
        self.num_stages = len(model.stage_bounds())
        for i in range(self.num_stages):
            self.add_module(f"stage{i}", StageModule(model, i))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        x, kept = images, []
        for i in range(self.num_stages):
            out = self.get_submodule(f"stage{i}")(images if i == 0 else x)
            if isinstance(out, tuple):
                x, idx = out
                kept.append(idx)
            else:
                x = out
        return (x, *kept)


class TeacherModule(nn.Module):
    """The dense teacher: images -> logits."""

    def __init__(self, teacher: DynamicViT) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, images: Tensor) -> Tensor:
        t = self.teacher
        return t.classify(t.run_blocks(t.embed(images), 0, t.cfg.depth))


@dataclass
class GraphSpec:
    kind: str  # "stage", "fused" or "teacher"
    batch: int
    module: nn.Module
    inputs: list[tuple[str, tuple[int, ...]]]
    outputs: list[str]
    index: int | None = None
    blocks: tuple[int, int] | None = None
    keep_count: int | None = None

    @property
    def name(self) -> str:
        return f"stage{self.index}" if self.kind == "stage" else self.kind

    @property
    def rel(self) -> str:
        return f"b{self.batch}/{self.name}.onnx"


def stage_io(cfg: ModelConfig, batch: int, index: int) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Input names/shapes and output names of stage `index` (tokens_i in, tokens_{i+1} or logits out)."""
    n_stages = len(cfg.pruning_loc) + 1
    last = index == n_stages - 1
    inputs: list[tuple[str, tuple[int, ...]]]
    if index == 0:
        inputs = [("images", (batch, cfg.in_chans, cfg.img_size, cfg.img_size))]
    else:
        inputs = [(f"tokens_{index}", (batch, cfg.tokens_per_stage[index - 1], cfg.embed_dim))]
    outputs = ["logits" if last else f"tokens_{index + 1}"]
    if index > 0:
        outputs.append(f"kept_indices_{index}")
    return inputs, outputs


def plan_graphs(model: DynamicViT, batch_sizes: Sequence[int], teacher: DynamicViT | None = None) -> list[GraphSpec]:
    cfg = model.cfg
    specs: list[GraphSpec] = []
    image_shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    for b in batch_sizes:
        for i, (start, end) in enumerate(model.stage_bounds()):
            inputs, outputs = stage_io(cfg, b, i)
            keep = None if i == 0 else cfg.keep_counts[i - 1]
            specs.append(GraphSpec("stage", b, StageModule(model, i).eval(), inputs, outputs, i, (start, end), keep))
        fused_out = ["logits", *(f"kept_indices_{i + 1}" for i in range(len(cfg.pruning_loc)))]
        specs.append(GraphSpec("fused", b, FusedModule(model).eval(), [("images", (b, *image_shape))], fused_out))
        if teacher is not None:
            specs.append(GraphSpec("teacher", b, TeacherModule(teacher).eval(), [("images", (b, *image_shape))], ["logits"]))
    return specs


