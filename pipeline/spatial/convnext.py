"""DynamicCNN (T-PAMI DynamicViT): ConvNeXt with dynamic spatial sparsification in its third stage.

Parameter names equal the official AdaConvNeXt's (models/dyconvnext.py), so official DynamicCNN releases load as they
are; with no pruning locations the model is the dense teacher, whose state dict is exactly Facebook's ConvNeXt
(`convnext_*_1k_224_ema.pth`, {'model': sd}) and the official ConvNeXt_Teacher's. timm renames the same tensors:
convnext_from_timm maps them back.

At a pruning location a predictor scores every position of the map; the depthwise convolution still runs on the
whole map, the top int(N * ratio) positions take the block's MLP (slow path) and the others LayerNorm + one Linear
(fast path), scattered back. Blocks after a location reuse its partition until the next one, as the official code
does. The eval pass is split into stage functions (stem, run_blocks, keep_scores, select_positions, classify)
because a static export cuts the graph at the pruning locations: its subgraphs and this module compute the same.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import extract_state_dict, read_checkpoint
from ..errors import CheckpointError, ConfigError
from ..model import DropPath
from .config import SpatialConfig
from .sparse import Partition, gather_positions, gumbel_decision, scatter_positions
from .stages import SpatialStages
from .weights import load_checked

EPS = 1e-6  # every ConvNeXt LayerNorm
LAYER_SCALE_INIT = 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of [B, C, H, W], computed as the official code does (mean, biased variance,
    sqrt), so the stem, the downsampling layers and the predictor round as the official ones.

    Exported, it is one LayerNormalization between two transposes instead: TensorRT builds that as its
    normalization layer, where the official form's ReduceMean/Pow/Sqrt chain risks FP16 overflow (TensorRT warns so
    when building it in FP16). The two agree to float rounding; the export's check against PyTorch covers it."""

    def __init__(self, dim: int, eps: float = EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    """ConvNeXt block: depthwise 7x7, then LayerNorm + MLP (the 'slow path') on channels-last, layer scale."""

    def __init__(self, dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
        self.drop_path = DropPath(drop_path)

    def forward_ffn(self, x: Tensor) -> Tensor:
        """[..., C] channels-last -> the block's residual branch after the convolution."""
        return self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(x))))

    def forward(self, x: Tensor) -> Tensor:
        y = self.forward_ffn(self.dwconv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class AdaBlock(Block):
    """A block of the third stage from the first pruning location on: the slow path for the kept positions, the
    fast path (LayerNorm + Linear, its own layer scale) for the others."""

    def __init__(self, dim: int, drop_path: float = 0.0) -> None:
        super().__init__(dim, drop_path)
        self.fast_path = nn.Sequential(nn.LayerNorm(dim, eps=EPS), nn.Linear(dim, dim))
        self.fast_path_gamma = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))

    def forward_fast(self, x: Tensor) -> Tensor:
        return self.fast_path_gamma * self.fast_path(x)

    def forward_sparse(self, x: Tensor, part: Partition) -> Tensor:
        """Eval: each position through one path, picked by `part` (gather both parts, scatter back)."""
        B, C, H, W = x.shape
        y = self.dwconv(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        slow = self.forward_ffn(gather_positions(y, part.slow))
        fast = self.forward_fast(gather_positions(y, part.fast))
        y = scatter_positions(torch.cat([slow, fast], dim=1), part.order)
        return x + self.drop_path(y.reshape(B, H, W, C).permute(0, 3, 1, 2))

    def forward_mixed(self, x1: Tensor, x2: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Training: both paths for every position, as the official AdaBlock does. x1 is the slow-path stream,
        x2 the fast-path one, mask [B, 1, H, W] the hard decision (1 = slow). The convolution sees the map the
        decision composes; where a stream is not selected it carries its own input, which the next decision's
        mixing or the final composition masks out (for positions whose decision does not change)."""
        y = self.dwconv(x1 * mask + x2 * (1 - mask))
        slow = y * mask + x1 * (1 - mask)
        fast = y * (1 - mask) + x2 * mask
        slow = self.forward_ffn(slow.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        fast = self.forward_fast(fast.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x1 + self.drop_path(slow), x2 + self.drop_path(fast)


class ConvPredictor(nn.Module):
    """The official ConvNeXt PredictorLG: 1x1 convolutions over local features beside a feature averaged over the
    whole map, to log-probabilities [keep, drop] along the channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(ChannelsFirstLayerNorm(dim), nn.Conv2d(dim, dim, 1), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 1), nn.GELU(),
            nn.Conv2d(dim // 2, dim // 4, 1), nn.GELU(),
            nn.Conv2d(dim // 4, 2, 1), nn.LogSoftmax(dim=1),
        )

    def logits(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> [B, 2, H, W] unnormalised [keep, drop] logits."""
        x = self.in_conv(x)
        B, C, H, W = x.shape
        pooled = x[:, C // 2 :].mean(dim=(2, 3), keepdim=True)
        x = torch.cat([x[:, : C // 2], pooled.expand(B, C - C // 2, H, W)], dim=1)
        return cast(Tensor, self.out_conv[:-1](x))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 2, H, W] log-probabilities [keep, drop], as the official module computes them."""
        return cast(Tensor, self.out_conv[-1](self.logits(x)))

    def keep_margin(self, x: Tensor) -> Tensor:
        """[B, H * W] keep - drop logit margin: the eval ranking score.

        The official eval ranks by log p(keep) = -softplus(drop - keep), strictly increasing in this margin, so
        both select the same positions, except that float32 log-softmax rounds every position with a margin
        above ~16.6 to exactly 0.0 (float16 much sooner): those tie, and the official argsort (not stable)
        breaks the tie arbitrarily. The margin keeps them ordered, and is one Sub in the exported graph."""
        lg = self.logits(x)
        return (lg[:, 0] - lg[:, 1]).flatten(1)


@dataclass
class CNNTrainOutput:
    logits: Tensor
    featmap: Tensor  # the final map after the norm [B, H, W, C]: what the official loss distils (MSE)
    decisions: list[Tensor]  # each location's hard decision [B, N], 1 = slow path, with the straight-through grad


def check_convnext_config(cfg: SpatialConfig) -> None:
    if cfg.family != "convnext":
        raise ConfigError(f"{cfg.name} is a {cfg.family} configuration: DynamicCNN needs a convnext one (e.g. convnext-t)")
    if cfg.pruning_loc and cfg.dims[2] < 4:
        raise ConfigError(f"{cfg.name}: the predictor needs at least 4 channels in the third stage, got {cfg.dims[2]}")


class DynamicCNN(SpatialStages, nn.Module):
    """ConvNeXt-T/S/B with predictors before `pruning_loc` blocks of the third stage; dense teacher without them."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        check_convnext_config(cfg)
        self.cfg = cfg
        dims, depths = cfg.dims, cfg.depths
        stem = nn.Sequential(nn.Conv2d(cfg.in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(depths)).tolist()
        first_ada = cfg.pruning_loc[0] if cfg.pruning_loc else depths[2]
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            blocks = [AdaBlock(dims[i], dpr[cur + j]) if i == 2 and j >= first_ada else Block(dims[i], dpr[cur + j])
                      for j in range(depths[i])]
            self.stages.append(nn.Sequential(*blocks))
            cur += depths[i]
        self.norm = nn.LayerNorm(dims[3], eps=EPS)
        self.head = nn.Linear(dims[3], cfg.num_classes)
        self.score_predictor = nn.ModuleList(ConvPredictor(dims[2]) for _ in cfg.pruning_loc)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- stage functions: a static export traces exactly these ----
    def stem(self, images: Tensor) -> Tensor:
        """Images -> the third stage's input map: the two first stages and the downsampling into the third."""
        x = images
        for i in range(2):
            x = self.stages[i](self.downsample_layers[i](x))
        return cast(Tensor, self.downsample_layers[2](x))

    def third_stage(self) -> list[nn.Module]:
        return list(cast(nn.Sequential, self.stages[2]))

    def run_blocks(self, x: Tensor, start: int, end: int, part: Partition | None = None) -> Tensor:
        """Third-stage blocks [start, end); from the first pruning location on, `part` picks each position's path."""
        for blk in self.third_stage()[start:end]:
            x = blk(x) if part is None else cast(AdaBlock, blk).forward_sparse(x, part)
        return x

    def predictor(self, loc: int) -> ConvPredictor:
        return cast(ConvPredictor, self.score_predictor[loc - 1])

    def keep_scores(self, loc: int, x: Tensor) -> Tensor:
        """[B, N] ranking score of every position at pruning location `loc` (1-based); see keep_margin."""
        return self.predictor(loc).keep_margin(x)

    def tail(self, x: Tensor) -> Tensor:
        """The third stage's output map -> the fourth stage's output map."""
        return cast(Tensor, self.stages[3](self.downsample_layers[3](x)))

    def classify(self, x: Tensor) -> Tensor:
        """The third stage's output map -> logits (global average pool, LayerNorm, head)."""
        return cast(Tensor, self.head(self.norm(self.tail(x).mean(dim=(-2, -1)))))

    finish = classify

    def map_shape(self, batch: int) -> tuple[int, ...]:
        """The third stage's map between stage graphs: NCHW, as the depthwise convolutions take it."""
        g = self.cfg.sparse_grid
        return (batch, self.cfg.dims[2], g, g)

    def stage_modules(self, index: int, bounds: list[tuple[int, int]] | None = None) -> dict[str, nn.Module]:
        bounds = bounds or self.stage_bounds()
        start, end = bounds[index]
        mods: dict[str, nn.Module] = {}
        if index == 0:
            mods.update({f"downsample_layers.{i}": self.downsample_layers[i] for i in range(3)})
            mods.update({f"stages.{i}": self.stages[i] for i in range(2)})
        elif self.cfg.pruning_loc:
            mods[f"score_predictor.{index - 1}"] = self.score_predictor[index - 1]
        mods.update({f"stages.2.{j}": self.third_stage()[j] for j in range(start, end)})
        if index == len(bounds) - 1:
            mods.update({"downsample_layers.3": self.downsample_layers[3], "stages.3": self.stages[3],
                         "norm": self.norm, "head": self.head})
        return mods

    # ---- whole-model passes ----
    def forward(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> Tensor | CNNTrainOutput:
        if self.training and self.cfg.pruning_loc:
            return self.forward_train(images, gumbel_noise)
        return self.forward_inference(images).logits

    def forward_train(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> CNNTrainOutput:
        """Both paths for every position, mixed by each location's hard Gumbel decision (official training).
        gumbel_noise: per location [B, 2, H, W], the predictor's shape (else drawn as F.gumbel_softmax draws)."""
        if not self.cfg.pruning_loc:
            raise ConfigError("the dense teacher has no pruning locations to train: use forward_teacher")
        if gumbel_noise is not None and len(gumbel_noise) != len(self.cfg.pruning_loc):
            raise ValueError(f"{len(gumbel_noise)} Gumbel noise tensors for {len(self.cfg.pruning_loc)} locations")
        bounds = self.stage_bounds()
        x = self.run_blocks(self.stem(images), *bounds[0])
        x1, x2, mask = x, x, None
        decisions: list[Tensor] = []
        for s, (start, end) in enumerate(bounds[1:], start=1):
            mixed = x1 if mask is None else x1 * mask + x2 * (1 - mask)
            noise = gumbel_noise[s - 1] if gumbel_noise is not None else None
            mask = gumbel_decision(self.predictor(s)(mixed), dim=1, noise=noise)
            decisions.append(mask.flatten(1))
            for blk in self.third_stage()[start:end]:
                x1, x2 = cast(AdaBlock, blk).forward_mixed(x1, x2, mask)
        assert mask is not None
        x = self.tail(x1 * mask + x2 * (1 - mask))
        featmap = self.norm(x.permute(0, 2, 3, 1))
        return CNNTrainOutput(self.head(self.norm(x.mean(dim=(-2, -1)))), featmap, decisions)

    def forward_teacher(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Dense pass: logits and the normed final map [B, H, W, C], the distillation targets (official
        ConvNeXt_Teacher). On a sparse model it runs every block's slow path on every position."""
        x = self.stem(images)
        for blk in self.third_stage():
            x = Block.forward(cast(Block, blk), x)
        x = self.tail(x)
        return self.head(self.norm(x.mean(dim=(-2, -1)))), self.norm(x.permute(0, 2, 3, 1))

    def predictor_parameters(self) -> list[nn.Parameter]:
        """The new modules the official get_costum_param_groups trains at the full rate: predictors, fast paths."""
        return [p for n, p in self.named_parameters() if is_sparse_key(n)]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not is_sparse_key(n)]


# ---- checkpoints ----
_TIMM_RULES = [
    (re.compile(r"^stem\.([01])\."), r"downsample_layers.0.\1."),
    (re.compile(r"^stages\.(\d+)\.downsample\.([01])\."), r"downsample_layers.\1.\2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\."), r"stages.\1.\2.dwconv."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\."), r"stages.\1.\2.pwconv1."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\."), r"stages.\1.\2.pwconv2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(norm\.|gamma$)"), r"stages.\1.\2.\3"),
    (re.compile(r"^head\.norm\."), "norm."),
    (re.compile(r"^head\.fc\."), "head."),
]


def convnext_from_timm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's ConvNeXt names -> the official ones; the tensors are stored alike. A key no rule maps (a conv_mlp
    or post-norm variant) is refused in one line."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        for pattern, repl in _TIMM_RULES:
            new, n = pattern.subn(repl, k)
            if n:
                out[new] = v
                break
        else:
            raise CheckpointError(f"timm ConvNeXt key {k} has no counterpart in the official ConvNeXt: pass a "
                                  "convnext_tiny/small/base file (LayerNorm, linear MLP, layer scale)")
    return out


def checkpoint_layout(sd: dict[str, Tensor]) -> str:
    """What the key names say a state dict is: convnext (official/Facebook), convnext-timm, swin, vit, unknown."""
    keys = list(sd)
    if any(k.startswith("downsample_layers.") for k in keys):
        return "convnext"
    if "stem.0.weight" in sd and any(".blocks." in k and ".conv_dw." in k for k in keys):
        return "convnext-timm"
    if any(k.startswith("layers.") and "relative_position_bias_table" in k for k in keys):
        return "swin"
    if "cls_token" in sd or any(k.startswith("blocks.") for k in keys):
        return "vit"
    return "unknown"


def is_sparse_key(k: str) -> bool:
    """Keys only a DynamicCNN has: the predictors and the fast paths."""
    return k.startswith("score_predictor.") or ".fast_path" in k


def describe_convnext(sd: dict[str, Tensor]) -> str:
    """dims, depths and pruning locations from an official-named ConvNeXt state dict, for one-line refusals."""
    dims = [int(sd[f"stages.{i}.0.gamma"].shape[0]) if f"stages.{i}.0.gamma" in sd else "?" for i in range(4)]
    depths = [len({k.split(".")[2] for k in sd if k.startswith(f"stages.{i}.")}) for i in range(4)]
    ada = sorted({int(k.split(".")[2]) for k in sd if k.startswith("stages.2.") and ".fast_path" in k})
    preds = len({k.split(".")[1] for k in sd if k.startswith("score_predictor.")})
    sparse = f"{preds} pruning locations from block {ada[0]}" if preds and ada else "dense"
    return f"a ConvNeXt with dims {dims}, depths {depths}, {sparse}"


def describe_config(cfg: SpatialConfig) -> str:
    pruning = f"pruning before blocks {list(cfg.pruning_loc)}" if cfg.pruning_loc else "dense"
    return f"{cfg.name} (dims {list(cfg.dims)}, depths {list(cfg.depths)}, {pruning})"


_OTHER = {"swin": "a Swin", "vit": "a ViT/DeiT", "unknown": "not a ConvNeXt"}


def load_dynamic_cnn(path: str | os.PathLike[str], cfg: SpatialConfig, *, from_dense: bool = False) -> DynamicCNN:
    """A DynamicCNN with the weights of an official DynamicCNN release, a Facebook ConvNeXt release or a timm
    ConvNeXt file, in eval mode; with from_dense, a dense file may initialise a sparse model (predictors and fast
    paths keep their initialisation, as the official main.py starts a student from its teacher)."""
    model = DynamicCNN(cfg)
    sd = extract_state_dict(read_checkpoint(path))
    layout = checkpoint_layout(sd)
    if layout not in ("convnext", "convnext-timm"):
        raise CheckpointError(f"{path} is {_OTHER[layout]} checkpoint, not a ConvNeXt one for {describe_config(cfg)}: "
                              "pass the matching --model or a ConvNeXt checkpoint")
    if layout == "convnext-timm":
        sd = convnext_from_timm(sd)
    load_checked(model, sd, path, from_dense=from_dense, is_sparse=is_sparse_key, file_is=describe_convnext(sd),
                 model_is=describe_config(cfg))
    return model.eval()

