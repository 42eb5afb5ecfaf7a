"""DynamicSwin (T-PAMI DynamicViT): Swin with dynamic spatial sparsification in its third stage.

Parameter and buffer names equal the official AdaSwinTransformer's (models/dyswin.py), so official DynamicSwin
releases load as they are; with no pruning locations the model is the dense teacher, whose state dict is exactly
Microsoft's swin_*_patch4_window7_224.pth (relative_position_index and the shifted blocks' attn_mask included, as
persistent buffers). timm's names differ (downsample at the start of the next stage, head.fc, no buffers):
swin_from_timm maps them.

At a pruning location the feature map keeps its shape: a predictor ranks every position, windowed attention still
runs on the whole map, the top int(N * ratio) positions take the block's MLP and the others the fast path (LayerNorm +
Linear), scattered back. Blocks after the last location reuse its partition, as the official code does. The forward
pass is split into stage functions (stem, rank_positions, run_blocks, tail, classify) because a static export cuts
the graph at the pruning locations: its subgraphs and this module must compute the same thing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from ..checkpoint import extract_state_dict, read_checkpoint
from ..errors import CheckpointError, ConfigError
from ..model import DropPath, Mlp, PredictorLG, gumbel_hard_keep, init_linear_and_norm
from .config import SpatialConfig
from .sparse import Partition, gather_positions, scatter_positions
from .stages import SpatialStages
from .weights import load_checked

PATCH = 4  # Swin's stem: a 4x4 stride-4 convolution
MASK_FILL = -100.0  # the official shifted-window mask value between positions of different regions


# ---- windows ----
def window_partition(x: Tensor, w: int) -> Tensor:
    """[B, H, W, C] -> [B * nW, w * w, C], windows row-major over the map."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def window_merge(windows: Tensor, w: int, H: int, W: int) -> Tensor:
    """Inverse of window_partition: [B * nW, w * w, C] -> [B, H, W, C]."""
    C = windows.shape[-1]
    x = windows.reshape(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(w: int) -> Tensor:
    """[w*w, w*w] row of the bias table for each (query, key) pair: (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + w - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    return dy * (2 * w - 1) + dx


def shifted_window_mask(H: int, W: int, w: int, shift: int) -> Tensor:
    """[nW, w*w, w*w] additive mask of the shifted windows for a static H x W map: 0 between positions of the same
    region of the rolled map, MASK_FILL between positions that the cyclic shift brought together."""
    def region(n: int) -> Tensor:
        i = torch.arange(n)
        return (i >= n - w).long() + (i >= n - shift).long()

    labels = (region(H)[:, None] * 3 + region(W)[None, :]).float()
    win = window_partition(labels.reshape(1, H, W, 1), w).squeeze(-1)  # [nW, w*w]
    differ = win[:, None, :] != win[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, MASK_FILL)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per relative offset."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x [B * nW, w*w, C]; mask [nW, w*w, w*w] or None."""
        Bw, N, C = x.shape
        qkv = self.qkv(x).reshape(Bw, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index = cast(Tensor, self.relative_position_index).reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(N, N, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.reshape(Bw // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape(Bw, self.num_heads, N, N)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(Bw, N, C)
        return self.proj(x)


class FastMlp(nn.Module):
    """The dropped positions' path: LayerNorm + one Linear (official fastMlp; fc1 = Sequential(LN, Linear))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.fc1(x))


# ---- blocks ----
class SwinBlock(nn.Module):
    """Swin block on a static H x W map; `adaptive` adds the fast path used at and after the pruning locations."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int, drop_path: float,
                 mlp_ratio: float = 4.0, adaptive: bool = False) -> None:
        super().__init__()
        if resolution <= window:  # the official rule: one window covers the map, nothing to shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.fastmlp = FastMlp(dim) if adaptive else None
        # Persistent where the official code has one (shifted blocks), absent otherwise: release files carry it.
        self.attn_mask: Tensor | None
        self.register_buffer("attn_mask", shifted_window_mask(resolution, resolution, window, shift) if shift else None)

    def attend(self, x: Tensor) -> Tensor:
        """The residual windowed attention over the whole map: x [B, H*W, C]."""
        B, L, C = x.shape
        R, w, s = self.resolution, self.window, self.shift
        y = self.norm1(x).reshape(B, R, R, C)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_merge(self.attn(window_partition(y, w), self.attn_mask), w, R, R)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        return x + self.drop_path(y.reshape(B, L, C))

    def fast(self, x: Tensor) -> Tensor:
        if self.fastmlp is None:
            raise ConfigError("this block has no fast path: it lies before the first pruning location")
        return cast(Tensor, self.fastmlp(x))

    def forward(self, x: Tensor, partition: Partition | None = None) -> Tensor:
        """Dense (partition None) or the inference split: slow positions take the MLP, the others the fast path."""
        x = self.attend(x)
        if partition is None:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        slow = self.mlp(self.norm2(gather_positions(x, partition.slow)))
        fast = self.fast(gather_positions(x, partition.fast))
        return x + self.drop_path(scatter_positions(torch.cat([slow, fast], dim=1), partition.order))

    def forward_mixed(self, x1: Tensor, x2: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Training: both paths for every position, mixed by the hard decision mask [B, N, 1] (1 = slow path).

        As the official code: the block's input is the slow stream where mask is 1 and the fast stream elsewhere;
        each path then reads the new map where it was chosen and its own previous stream elsewhere."""
        x = self.attend(x1 * mask + x2 * (1 - mask))
        slow_in = x * mask + x1 * (1 - mask)
        fast_in = x * (1 - mask) + x2 * mask
        return x + self.drop_path(self.mlp(self.norm2(slow_in))), x + self.drop_path(self.fast(fast_in))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1) as (row, column)), LayerNorm, Linear to 2C."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, _, C = x.shape
        R = self.resolution
        x = x.reshape(B, R // 2, 2, R // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, (R // 2) ** 2, 4 * C)
        return cast(Tensor, self.reduction(self.norm(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=PATCH, stride=PATCH)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.norm(self.proj(x).flatten(2).transpose(1, 2)))


class SwinStage(nn.Module):
    """One official BasicLayer: blocks, the patch merging at its end, and (third stage only) the predictors."""

    def __init__(self, cfg: SpatialConfig, i: int, dpr: list[float]) -> None:
        super().__init__()
        dim, res = cfg.dims[i], cfg.img_size // PATCH // 2**i
        first_adaptive = cfg.pruning_loc[0] if i == 2 and cfg.pruning_loc else cfg.depths[i]
        self.blocks = nn.ModuleList(
            SwinBlock(dim, res, cfg.num_heads[i], cfg.window_size, 0 if j % 2 == 0 else cfg.window_size // 2,
                      dpr[j], adaptive=j >= first_adaptive)
            for j in range(cfg.depths[i])
        )
        self.downsample = PatchMerging(dim, res) if i < 3 else None
        if i == 2 and cfg.pruning_loc:
            self.score_predictor = nn.ModuleList(PredictorLG(dim) for _ in cfg.pruning_loc)

    def block(self, j: int) -> SwinBlock:
        return cast(SwinBlock, self.blocks[j])

    def predictor(self, s: int) -> PredictorLG:
        return cast(PredictorLG, self.score_predictor[s])


# ---- the model ----
@dataclass
class SwinTrainOutput:
    logits: Tensor
    # What distillation compares with swin_token=True: the final normed feature map [B, L4, C4] (official featmap).
    tokens: Tensor
    # Each location's hard decision [B, N, 1], 1 = slow path, carrying the straight-through gradient (ratio loss).
    decisions: list[Tensor]


def check_swin_config(cfg: SpatialConfig) -> None:
    if cfg.family != "swin":
        raise ConfigError(f"{cfg.name} is a {cfg.family} configuration: DynamicSwin needs a swin one (e.g. swin-t)")
    for i in range(4):
        res = cfg.img_size // PATCH // 2**i
        if res > cfg.window_size and res % cfg.window_size:
            raise ConfigError(f"stage {i + 1}'s {res}x{res} map does not divide into {cfg.window_size}x"
                              f"{cfg.window_size} windows: pass an image size that is a multiple of "
                              f"{32 * cfg.window_size} or another window size")


class DynamicSwin(SpatialStages, nn.Module):
    """Swin-T/S/B with predictors before `pruning_loc` blocks of the third stage; dense teacher without them."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        check_swin_config(cfg)
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.dims[0])
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(4)]
        self.layers = nn.ModuleList(SwinStage(cfg, i, dpr[starts[i]:starts[i] + cfg.depths[i]]) for i in range(4))
        self.norm = nn.LayerNorm(cfg.dims[3])
        self.head = nn.Linear(cfg.dims[3], cfg.num_classes)
        self.apply(init_linear_and_norm)

    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}

    @property
    def sparse_stage(self) -> SwinStage:
        return cast(SwinStage, self.layers[2])

    # ---- stage functions: a static export traces exactly these ----
    def stem(self, images: Tensor) -> Tensor:
        """Images -> the third stage's input map [B, N, C3]: patch embedding, stages 1 and 2 with their mergings."""
        x = self.patch_embed(images)
        for i in (0, 1):
            stage = cast(SwinStage, self.layers[i])
            for blk in stage.blocks:
                x = blk(x)
            x = cast(PatchMerging, stage.downsample)(x)
        return x

    def keep_scores(self, location: int, x: Tensor) -> Tensor:
        """[B, N] score of each position at pruning location `location` (1-based): the keep-drop logit margin.

        log p(keep) = -softplus(drop - keep) is strictly increasing in the margin, so ranking by it selects what the
        official ranking of log p(keep) selects, except where float32 log-softmax rounds confident positions'
        log p(keep) to exactly 0.0 (margin above ~17): the official argsort (not stable) then picks among the tie
        arbitrarily, the margin keeps them ordered. It also spares the export a LogSoftmax."""
        return self.sparse_stage.predictor(location - 1).keep_margin(x)

    def run_blocks(self, x: Tensor, start: int, end: int, partition: Partition | None = None) -> Tensor:
        """Third-stage blocks [start, end), all with the same partition (None: dense)."""
        stage = self.sparse_stage
        for j in range(start, end):
            x = stage.block(j)(x, partition)
        return x

    def tail(self, x: Tensor) -> Tensor:
        """The third stage's output map -> the final normed map [B, L4, C4]: merging, fourth stage, norm."""
        x = cast(PatchMerging, self.sparse_stage.downsample)(x)
        for blk in cast(SwinStage, self.layers[3]).blocks:
            x = blk(x)
        return cast(Tensor, self.norm(x))

    def classify(self, featmap: Tensor) -> Tensor:
        return cast(Tensor, self.head(featmap.mean(dim=1)))

    def finish(self, x: Tensor) -> Tensor:
        """The third stage's output map -> logits."""
        return self.classify(self.tail(x))

    def map_shape(self, batch: int) -> tuple[int, ...]:
        """The third stage's map between stage graphs: [B, N, C] in raster order, as Swin's blocks take it."""
        return (batch, self.cfg.positions, self.cfg.dims[2])

    def stage_modules(self, index: int, bounds: list[tuple[int, int]] | None = None) -> dict[str, nn.Module]:
        bounds = bounds or self.stage_bounds()
        start, end = bounds[index]
        stage = self.sparse_stage
        mods: dict[str, nn.Module] = {}
        if index == 0:
            mods.update({"patch_embed": self.patch_embed, "layers.0": self.layers[0], "layers.1": self.layers[1]})
        elif self.cfg.pruning_loc:
            mods[f"layers.2.score_predictor.{index - 1}"] = stage.predictor(index - 1)
        mods.update({f"layers.2.blocks.{j}": stage.block(j) for j in range(start, end)})
        if index == len(bounds) - 1:
            mods.update({"layers.2.downsample": cast(nn.Module, stage.downsample), "layers.3": self.layers[3],
                         "norm": self.norm, "head": self.head})
        return mods

    # ---- whole-model passes ----
    def forward(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> Tensor | SwinTrainOutput:
        if self.training and not self.cfg.is_dense:
            return self.forward_train(images, gumbel_noise)
        return self.forward_inference(images).logits

    def forward_train(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> SwinTrainOutput:
        """Both paths for every position, mixed by each location's hard Gumbel decision (official training).

        gumbel_noise: one Gumbel sample [B, N, 2] per location, so that distributed ranks reproduce a single run."""
        if gumbel_noise is not None and len(gumbel_noise) != len(self.cfg.pruning_loc):
            raise ConfigError(f"{len(gumbel_noise)} Gumbel noise tensors for {len(self.cfg.pruning_loc)} pruning "
                              "locations: pass one [B, N, 2] tensor per location")
        stage = self.sparse_stage
        x = self.run_blocks(self.stem(images), *self.stage_bounds()[0])
        x1, x2, mask = x, x, None
        decisions: list[Tensor] = []
        for s, (start, end) in enumerate(self.stage_bounds()[1:]):
            seen = x1 if mask is None else x1 * mask + x2 * (1 - mask)
            noise = gumbel_noise[s] if gumbel_noise is not None else None
            mask = gumbel_hard_keep(stage.predictor(s)(seen), noise)
            decisions.append(mask)
            for j in range(start, end):
                x1, x2 = stage.block(j).forward_mixed(x1, x2, mask)
        x = x1 if mask is None else x1 * mask + x2 * (1 - mask)
        featmap = self.tail(x)
        return SwinTrainOutput(self.classify(featmap), featmap, decisions)

    def forward_teacher(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Dense pass: logits and the final normed map, as the official SwinTransformer_Teacher returns them."""
        featmap = self.tail(self.run_blocks(self.stem(images), 0, self.cfg.depths[2]))
        return self.classify(featmap), featmap

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.sparse_stage.score_predictor.parameters()) if self.cfg.pruning_loc else []

    def backbone_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.predictor_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]


# ---- checkpoints ----
BUFFERS = ("relative_position_index", "attn_mask")  # computed from the configuration; timm does not save them
TIMM_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
SWIN_V2 = ("logit_scale", "cpb_mlp", "relative_coords_table")


def checkpoint_architecture(sd: dict[str, Tensor]) -> str:
    """What a state dict's key names say it is: swin (official/Microsoft), swin-timm, swinv2, convnext, vit or
    unknown. Shared with the ConvNeXt loader's refusal of a Swin file."""
    keys = sd.keys()
    if any(part in k for k in keys for part in SWIN_V2):
        return "swinv2"
    if any(k.startswith("layers.") and ".attn.relative_position_bias_table" in k for k in keys):
        timm = "head.fc.weight" in sd or any(k.startswith("layers.3.downsample.") for k in keys)
        return "swin-timm" if timm else "swin"
    if any(k.startswith(("downsample_layers.", "stages.", "stem.")) for k in keys):
        return "convnext"
    if "cls_token" in sd or any(k.startswith("blocks.") for k in keys):
        return "vit"
    return "unknown"


def describe_swin(sd: dict[str, Tensor]) -> str:
    """embed_dim, depths and pruning from a Swin state dict's shapes, for one-line refusals."""
    proj = sd.get("patch_embed.proj.weight")
    depths = [len({k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}) for i in range(4)]
    preds = len({k.split(".")[3] for k in sd if k.startswith("layers.2.score_predictor.")})
    dim = int(proj.shape[0]) if proj is not None else "?"
    return f"a Swin with embed_dim {dim}, depths {depths}, " + (f"{preds} pruning locations" if preds else "dense")


def describe_config(cfg: SpatialConfig) -> str:
    pruning = f"pruning before blocks {list(cfg.pruning_loc)}" if cfg.pruning_loc else "dense"
    return f"{cfg.name} (embed_dim {cfg.dims[0]}, depths {list(cfg.depths)}, {pruning})"


def swin_from_timm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's Swin names -> the official ones: each stage's merging moves from the start of stage i+1 (timm) to
    the end of stage i, head.fc becomes head; the tensors themselves are stored alike (timm's merging concatenates
    the 2x2 neighbours in the official order). timm keeps no relative_position_index/attn_mask: the loader
    supplies them from the configuration."""
    bad = [k for k in sd if any(p in k for p in SWIN_V2) or k.startswith("absolute_pos_embed")]
    if bad:
        raise CheckpointError(f"timm Swin keys {bad[:3]} have no counterpart in Swin V1 without absolute position "
                              "embedding: pass a swin_*_patch4_window7_224 file")
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        m = TIMM_DOWNSAMPLE.match(k)
        if m:
            i = int(m.group(1))
            if i == 0:
                raise CheckpointError(f"timm Swin key {k} merges before the first stage: not a Swin V1 layout")
            k = f"layers.{i - 1}.downsample.{k[m.end():]}"
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        out[k] = v
    return out


def is_sparse_key(k: str) -> bool:
    """Keys only a DynamicSwin has: the predictors and the fast paths."""
    return k.startswith("layers.2.score_predictor.") or ".fastmlp." in k


def load_dynamic_swin(path: str | os.PathLike[str], cfg: SpatialConfig, *, from_dense: bool = False) -> DynamicSwin:
    """A DynamicSwin with the weights of an official DynamicSwin release, a Microsoft Swin release or a timm Swin
    file; with from_dense, a dense file may initialise a sparse model (predictors and fast paths keep their
    initialisation, as the official main.py starts a student from its teacher)."""
    model = DynamicSwin(cfg)
    sd = extract_state_dict(read_checkpoint(path))
    arch = checkpoint_architecture(sd)
    if arch not in ("swin", "swin-timm"):
        what = {"swinv2": "a Swin V2", "convnext": "a ConvNeXt", "vit": "a ViT/DeiT"}.get(arch, "not a Swin")
        raise CheckpointError(f"{path} is {what} checkpoint, not a Swin one for {describe_config(cfg)}: pass the "
                              "matching --model or a Swin checkpoint")
    if arch == "swin-timm":
        sd = swin_from_timm(sd)
    own = model.state_dict()
    for k, v in own.items():  # buffers: computed here; a file's must agree (else it was built for other sizes)
        if k.endswith(BUFFERS):
            if k not in sd:
                sd[k] = v
            elif sd[k].shape != v.shape or not torch.equal(sd[k].to(v.dtype), v):
                raise CheckpointError(f"{path}: {k} differs from {describe_config(cfg)}'s at image size {cfg.img_size}, "
                                      f"window {cfg.window_size}: pass the image and window size the file was built for")
    load_checked(model, sd, path, from_dense=from_dense, is_sparse=is_sparse_key, file_is=describe_swin(sd),
                 model_is=describe_config(cfg))
    return model.eval()
