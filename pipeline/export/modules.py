"""The torch modules the exporter traces, one per graph, and the plan of which graphs to export.

Each module calls the model's own stage functions (DynamicViT.embed, run_blocks, keep_scores, select_tokens,
classify; for the spatial families stem, select_positions, run_blocks, finish: pipeline.spatial.stages), so the
graphs compute exactly what the model's inference path computes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

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


class SpatialStageModule(nn.Module):
    """Stage `index` of a DynamicCNN or DynamicSwin: stage 0 runs the stem and the third stage's blocks before the
    first pruning location; stage i >= 1 ranks the map's positions (TopK), runs its blocks with the slow/fast
    partition (GatherElements, both paths, ScatterElements back) and returns the map and the slow positions; the
    last also runs the fourth stage and the head. Registers exactly what it runs, as StageModule does."""

    model: Any  # set with object.__setattr__: deliberately not a registered submodule

    def __init__(self, model: Any, index: int, bounds: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        bounds = bounds or model.stage_bounds()
        self.index = index
        self.start: int = bounds[index][0]
        self.end: int = bounds[index][1]
        self.is_last = index == len(bounds) - 1
        self.prunes = index > 0 and not model.cfg.is_dense
        self.keep_count: int | None = model.cfg.keep_counts[index - 1] if self.prunes else None
        for name, module in model.stage_modules(index, bounds).items():
            _register(self, name, module)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        m = self.model
        part = None
        if self.index == 0:
            x = m.stem(x)
        elif self.prunes:
            part = m.select_positions(self.index, x)
        x = m.run_blocks(x, self.start, self.end, part)
        if self.is_last:
            x = m.finish(x)
        return x if part is None else (x, part.slow)


def _register(root: nn.Module, dotted: str, module: nn.Module) -> None:
    """Register `module` under a dotted path ("stages.2.3"), making plain containers for the parents, so that
    the graph's node and initializer names follow the model's own state-dict names."""
    *parents, leaf = dotted.split(".")
    here = root
    for part in parents:
        if not hasattr(here, part):
            here.add_module(part, nn.Module())
        here = here.get_submodule(part)
    here.add_module(leaf, module)


def stage_module_for(model: Any) -> Callable[[Any, int], nn.Module]:
    return SpatialStageModule if model.cfg.boundary == "features" else StageModule


class FusedModule(nn.Module):
    """All stages in one graph, built from submodules stage0, stage1, ... (their names prefix every node).

    With `bounds` (spatial families only), a dense teacher split at its student's pruning locations: its nodes
    carry the same /stageN/ prefixes as the student's, so a per-stage precision mix converts the same blocks."""

    def __init__(self, model: Any, bounds: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.num_stages = len(bounds or model.stage_bounds())
        for i in range(self.num_stages):
            stage = SpatialStageModule(model, i, bounds) if bounds else stage_module_for(model)(model, i)
            self.add_module(f"stage{i}", stage)

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
    # Kept indices index the previous stage's kept tokens (token pruning) or the whole map (spatial families).
    nested_selection: bool = True

    @property
    def name(self) -> str:
        return f"stage{self.index}" if self.kind == "stage" else self.kind

    @property
    def rel(self) -> str:
        return f"b{self.batch}/{self.name}.onnx"


def stage_io(cfg: Any, batch: int, index: int, map_shape: tuple[int, ...] | None = None,
             ) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Input names/shapes and output names of stage `index`: the boundary tensor `{cfg.boundary}_i` in
    (tokens_i [B, n_i, C] for token pruning; features_i, the third stage's whole map of `map_shape`, for the
    spatial families), `{boundary}_{i+1}` or logits out."""
    n_stages = len(cfg.pruning_loc) + 1
    last = index == n_stages - 1
    name = cfg.boundary
    inputs: list[tuple[str, tuple[int, ...]]]
    if index == 0:
        inputs = [("images", (batch, cfg.in_chans, cfg.img_size, cfg.img_size))]
    elif map_shape is not None:
        inputs = [(f"{name}_{index}", map_shape)]
    else:
        inputs = [(f"{name}_{index}", (batch, cfg.tokens_per_stage[index - 1], cfg.embed_dim))]
    outputs = ["logits" if last else f"{name}_{index + 1}"]
    if index > 0:
        outputs.append(f"kept_indices_{index}")
    return inputs, outputs


def plan_graphs(model: Any, batch_sizes: Sequence[int], teacher: Any = None) -> list[GraphSpec]:
    """Per batch size: the stage graphs, the fused graph and (with a teacher) the dense teacher's graph, of a
    DynamicViT or of a spatial model (DynamicCNN, DynamicSwin: `blocks` are then third-stage block ranges)."""
    cfg = model.cfg
    specs: list[GraphSpec] = []
    image_shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    spatial = cfg.boundary == "features"
    make = stage_module_for(model)
    for b in batch_sizes:
        for i, (start, end) in enumerate(model.stage_bounds()):
            inputs, outputs = stage_io(cfg, b, i, model.map_shape(b) if spatial else None)
            keep = None if i == 0 else cfg.keep_counts[i - 1]
            specs.append(GraphSpec("stage", b, make(model, i).eval(), inputs, outputs, i, (start, end), keep,
                                   cfg.nested_selection))
        fused_out = ["logits", *(f"kept_indices_{i + 1}" for i in range(len(cfg.pruning_loc)))]
        specs.append(GraphSpec("fused", b, FusedModule(model).eval(), [("images", (b, *image_shape))], fused_out,
                               nested_selection=cfg.nested_selection))
        if teacher is not None:
            module = FusedModule(teacher, model.stage_bounds()) if spatial else TeacherModule(teacher)
            specs.append(GraphSpec("teacher", b, module.eval(), [("images", (b, *image_shape))], ["logits"]))
    return specs


