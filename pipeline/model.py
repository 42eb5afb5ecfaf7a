"""DynamicViT (Rao et al., NeurIPS 2021) on a timm-compatible ViT/DeiT backbone, and on LV-ViT.

Parameter names equal timm's VisionTransformer and the official VisionTransformerDiffPruning (DeiT family) and the
official LVViTDiffPruning (LV-ViT family: Token Labeling's model), so timm/DeiT, Token Labeling and official
DynamicViT state dicts load as they are. The LV-ViT family differs only where its ModelConfig says (family,
skip_lam, qkv_bias): its stem, LayerNorm eps, scaled residuals and the auxiliary token head. The forward pass is split into stage functions
(embed, run_blocks, score_tokens, select_tokens, classify) because export cuts the graph at exactly
those seams: the ONNX subgraphs and this module must compute the same thing.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def softmax_with_policy(attn: Tensor, policy: Tensor, eps: float = 1e-6) -> Tensor:
    """Softmax in which dropped tokens receive no attention, but every token still attends to itself.

    attn [B, H, N, N], policy [B, N, 1] with 1 = kept. Computed in float32 with the max subtracted and
    eps spread over the row, as the official code does, so a row whose keys are all dropped stays finite.
    """
    B, N, _ = policy.shape
    key_keep = policy.reshape(B, 1, 1, N)
    eye = torch.eye(N, dtype=key_keep.dtype, device=key_keep.device).view(1, 1, N, N)
    key_keep = key_keep + (1.0 - key_keep) * eye
    attn = attn - attn.max(dim=-1, keepdim=True).values
    weights = attn.float().exp() * key_keep.float()
    weights = (weights + eps / N) / (weights.sum(dim=-1, keepdim=True) + eps)
    return weights.type_as(attn)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1) if policy is None else softmax_with_policy(attn, policy)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class DropPath(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def norm_eps(cfg: ModelConfig) -> float:
    """timm's ViT builds its LayerNorms with eps 1e-6; LV-ViT keeps nn.LayerNorm's default 1e-5."""
    return 1e-5 if cfg.family == "lvvit" else 1e-6


class Block(nn.Module):
    """Pre-norm transformer block. LV-ViT divides both residual branches by skip_lam (2.0 in its releases)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 eps: float = 1e-6, skip_lam: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.skip_lam = skip_lam

    def forward(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        if self.skip_lam == 1.0:
            x = x + self.drop_path(self.attn(self.norm1(x), policy))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.attn(self.norm1(x), policy)) / self.skip_lam
        return x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam


class PatchEmbed(nn.Module):
    """timm's patch embedding: one patch_size x patch_size convolution with that stride."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStem(nn.Module):
    """LV-ViT's '4_2' patch embedding: a 7x7 stride-2 convolution and two 3x3 ones (64 channels, BatchNorm, ReLU)
    at half resolution, then a (patch_size/2)-sized projection with that stride, so the grid is img/patch as in
    timm's. Attribute names are Token Labeling's (conv1, bn1, ..., proj), so its checkpoints load as they are."""

    width = 64

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, half = self.width, cfg.patch_size // 2
        self.conv1 = nn.Conv2d(cfg.in_chans, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, w, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w)
        self.proj = nn.Conv2d(w, cfg.embed_dim, kernel_size=half, stride=half)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.proj(x).flatten(2).transpose(1, 2)


class PredictorLG(nn.Module):
    """The paper's prediction module: per-token local features beside a global feature pooled over the
    tokens still kept, then an MLP to log-probabilities [keep, drop]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Linear(dim // 2, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 2),
            nn.LogSoftmax(dim=-1),
        )

    def logits(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        """x [B, N, C] patch tokens; policy [B, N, 1] current keep mask, None when every token is kept
        (inference after a physical gather). Returns [B, N, 2] unnormalised [keep, drop] logits."""
        x = self.in_conv(x)
        B, N, C = x.shape
        local_x, global_x = x[:, :, : C // 2], x[:, :, C // 2 :]
        if policy is None:
            pooled = global_x.mean(dim=1, keepdim=True)
        else:
            pooled = (global_x * policy).sum(dim=1, keepdim=True) / policy.sum(dim=1, keepdim=True)
        x = torch.cat([local_x, pooled.expand(B, N, C // 2)], dim=-1)
        return self.out_conv[:-1](x)

    def forward(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        """[B, N, 2] log-probabilities [keep, drop], as the official module returns."""
        return self.out_conv[-1](self.logits(x, policy))

    def keep_margin(self, x: Tensor) -> Tensor:
        """[B, N] logit margin keep - drop: the inference ranking score.

        log p(keep) = -softplus(drop - keep) is strictly increasing in this margin, so top-k over it selects
        what the official top-k over log p(keep) selects, except that log-softmax rounds every confident
        token's log p(keep) to exactly 0.0 in float32 (and sooner in float16), turning the ranking into a tie
        broken by token index. The margin keeps those tokens ordered.
        """
        lg = self.logits(x)
        return lg[:, :, 0] - lg[:, :, 1]


def gumbel_hard_keep(log_probs: Tensor, noise: Tensor | None = None, tau: float = 1.0) -> Tensor:
    """Hard Gumbel-softmax keep decision [B, N, 1] with the straight-through gradient.

    `noise` (Gumbel samples shaped like log_probs) may be given so that distributed ranks reproduce
    exactly the draws of a single-process run; otherwise it is drawn here.
    """
    if noise is None:
        noise = -torch.empty_like(log_probs).exponential_().log()
    soft = ((log_probs + noise) / tau).softmax(dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), num_classes=2).to(soft.dtype)
    return (hard - soft.detach() + soft)[:, :, 0:1]


def select_tokens(tokens: Tensor, keep_scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the class token and the k highest-scoring patch tokens, in descending score order.

    tokens [B, N+1, C], keep_scores [B, N]. Returns kept tokens [B, k+1, C] and the kept patch indices
    [B, k]. TopK (not the official argsort, which does not export cleanly) then one batched gather:
    the exact pattern the TensorRT plugin pass looks for and replaces.
    """
    B, _, C = tokens.shape
    if torch.onnx.is_in_onnx_export():
        idx = torch.topk(keep_scores, k, dim=1, largest=True, sorted=True).indices
    else:
        # Same result, but ties go to the lower index as ONNX TopK (and the plugin) specify; torch.topk leaves
        # tie order undefined, and a trained predictor's saturated log-probabilities tie exactly at 0.0.
        idx = torch.sort(keep_scores, dim=1, descending=True, stable=True).indices[:, :k]
    rows = torch.cat([torch.zeros_like(idx[:, :1]), idx + 1], dim=1)
    kept = torch.gather(tokens, 1, rows.unsqueeze(-1).expand(B, k + 1, C))
    return kept, idx


@dataclass
class TrainOutput:
    logits: Tensor  # the class head's (LV-ViT: without the auxiliary head, as the official distillation uses it)
    # What token distillation compares, for every patch token (no physical pruning while training): the final
    # normed patch tokens [B, N, C] (DeiT), or LV-ViT's auxiliary head logits on them [B, N, classes].
    tokens: Tensor
    keep_mask: Tensor  # last stage's keep decision [B, N, 1], detached
    decisions: list[Tensor]  # each stage's keep decision [B, N]
    # The inference rule's logits over every token (LV-ViT: cls + 0.5 * max of the auxiliary logits): what a dense
    # model trains on with cross-entropy (the official LV-ViT returns it when not distilling). Equals `logits`
    # for DeiT.
    dense_prediction: Tensor


@dataclass
class InferenceOutput:
    logits: Tensor
    kept_indices: list[Tensor]  # per stage [B, k_i], indices into that stage's input patch tokens
    kept_patch_ids: list[Tensor]  # per stage [B, k_i], positions in the original patch grid
    # What enters each exported stage graph: the images, then the tokens before each pruning point
    # (stage graph i >= 1 does its own selection): tokens_1 .. tokens_S of the graphs' interface.
    stage_inputs: list[Tensor]


def init_linear_and_norm(m: nn.Module) -> None:
    """timm's ViT/Swin initialisation: truncated-normal Linear weights, zero biases, unit LayerNorms; convolutions
    and BatchNorm keep PyTorch's, as in the official code."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class DynamicViT(nn.Module):
    """ViT with prediction modules before `pruning_loc` blocks; with no pruning locations it is the dense
    teacher, whose state dict is a plain timm ViT's."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, eps = cfg.embed_dim, norm_eps(cfg)
        self.patch_embed: nn.Module = ConvStem(cfg) if cfg.family == "lvvit" else PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, C))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, dpr[i], eps, cfg.skip_lam) for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(C, eps=eps)
        self.head = nn.Linear(C, cfg.num_classes)
        # LV-ViT's token head (the official return_dense=True): class logits for every patch token.
        self.aux_head = nn.Linear(C, cfg.num_classes) if cfg.family == "lvvit" else None
        self.score_predictor = nn.ModuleList(PredictorLG(C) for _ in cfg.pruning_loc)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_linear_and_norm)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    # ---- stage functions: export traces exactly these ----
    def embed(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def stage_bounds(self) -> list[tuple[int, int]]:
        """Block ranges [start, end) of each stage: stage 0 ends at the first pruning point."""
        edges = [0, *self.cfg.pruning_loc, self.cfg.depth]
        return list(itertools.pairwise(edges))

    def run_blocks(self, x: Tensor, start: int, end: int, policy: Tensor | None = None) -> Tensor:
        for blk in self.blocks[start:end]:
            x = blk(x, policy)
        return x

    def keep_scores(self, stage: int, tokens: Tensor) -> Tensor:
        """Keep score [B, N] of each patch token at pruning stage `stage` (1-based): the keep-drop logit
        margin, a monotone (tie-free) form of the keep log-probability; see PredictorLG.keep_margin."""
        predictor = cast(PredictorLG, self.score_predictor[stage - 1])
        return predictor.keep_margin(tokens[:, 1:])

    def classify(self, x: Tensor) -> Tensor:
        """Logits from the last stage's tokens. LV-ViT adds half the auxiliary head's maximum over the tokens
        present (the kept ones), as the official inference does: final = cls + 0.5 * max(aux)."""
        x = self.norm(x)
        logits = self.head(x[:, 0])
        if self.aux_head is not None:
            logits = logits + 0.5 * self.aux_head(x[:, 1:]).max(dim=1).values
        return logits

    def distilled_tokens(self, normed: Tensor) -> Tensor:
        """What token distillation compares: the normed patch tokens, or LV-ViT's auxiliary logits on them."""
        return normed if self.aux_head is None else self.aux_head(normed)

    # ---- whole-model passes ----
    def forward(self, images: Tensor, gumbel_noise: list[Tensor] | None = None,
                token_pruning: str = "mask") -> Tensor | TrainOutput:
        if self.training:
            if token_pruning == "delete":
                return self.forward_train_delete(images, gumbel_noise)
            if token_pruning != "mask":
                raise ValueError(f"token pruning while training is 'mask' or 'delete', not {token_pruning!r}")
            return self.forward_train(images, gumbel_noise)
        return self.forward_inference(images).logits

    def forward_train(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> TrainOutput:
        """Soft pruning: Gumbel decisions mask attention; no token is removed, so shapes stay fixed."""
        x = self.embed(images)
        B, N = x.shape[0], self.cfg.num_patches
        prev = x.new_ones(B, N, 1)
        policy: Tensor | None = None
        decisions: list[Tensor] = []
        for s, (start, end) in enumerate(self.stage_bounds()):
            if s > 0:
                log_probs = self.score_predictor[s - 1](x[:, 1:], prev)
                noise = gumbel_noise[s - 1] if gumbel_noise is not None else None
                prev = gumbel_hard_keep(log_probs, noise) * prev
                decisions.append(prev.reshape(B, N))
                policy = torch.cat([x.new_ones(B, 1, 1), prev], dim=1)
            x = self.run_blocks(x, start, end, policy)
        x = self.norm(x)
        logits, tokens = self.head(x[:, 0]), self.distilled_tokens(x[:, 1:])
        dense_prediction = logits if self.aux_head is None else logits + 0.5 * tokens.max(dim=1).values
        return TrainOutput(logits, tokens, prev.detach(), decisions, dense_prediction)

    def forward_train_delete(self, images: Tensor, gumbel_noise: list[Tensor] | None = None) -> TrainOutput:
        """Training that deletes, as inference does: each pruning point keeps keep_counts[s] tokens (a static count
        per sample, so the batch keeps one shape) and the blocks after it run on those only.

        The kept tokens are the top ones by the Gumbel-perturbed keep margin (the sample the hard decision takes);
        they are multiplied by 1 + soft - soft.detach(): exactly 1, with the Gumbel softmax's gradient, so the
        prediction module learns through the tokens it keeps (straight-through) and through the keep-ratio loss on
        its hard decisions. `gumbel_noise` is given on the patch grid ([B, N, 2] per pruning point, as for mask
        mode) and read at the tokens still present, so distributed ranks draw alike. Outputs are laid out on the
        patch grid: `decisions` hold each point's hard decisions at the tokens present then (0 where deleted
        earlier), `keep_mask` marks the tokens kept to the end and `tokens` holds their final values there (zero
        elsewhere), so that the token distillation compares the kept tokens only."""
        x = self.embed(images)
        B, N = x.shape[0], self.cfg.num_patches
        ids = torch.arange(N, device=x.device).expand(B, N)  # patch ids of the tokens present
        decisions: list[Tensor] = []
        for s, (start, end) in enumerate(self.stage_bounds()):
            if s > 0:
                log_probs = self.score_predictor[s - 1](x[:, 1:])
                noise = (torch.gather(gumbel_noise[s - 1], 1, ids.unsqueeze(-1).expand(-1, -1, 2))
                         if gumbel_noise is not None else -torch.empty_like(log_probs).exponential_().log())
                soft = (log_probs + noise).softmax(dim=-1)[:, :, 0]
                hard = (soft > 0.5).to(soft.dtype)
                decisions.append(x.new_zeros(B, N).scatter(1, ids, hard + (soft - soft.detach())))
                k = self.cfg.keep_counts[s - 1]
                order = torch.sort(log_probs[:, :, 0] + noise[:, :, 0] - log_probs[:, :, 1] - noise[:, :, 1],
                                   dim=1, descending=True, stable=True).indices[:, :k]
                kept = torch.gather(x[:, 1:], 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
                kept_soft = torch.gather(soft, 1, order)
                gate = 1.0 + (kept_soft - kept_soft.detach()).unsqueeze(-1)
                x = torch.cat([x[:, :1], kept * gate], dim=1)
                ids = torch.gather(ids, 1, order)
            x = self.run_blocks(x, start, end)
        x = self.norm(x)
        logits, kept_tokens = self.head(x[:, 0]), self.distilled_tokens(x[:, 1:])
        width = kept_tokens.shape[-1]
        tokens = kept_tokens.new_zeros(B, N, width).scatter(1, ids.unsqueeze(-1).expand(-1, -1, width), kept_tokens)
        keep_mask = x.new_zeros(B, N, 1).scatter(1, ids.unsqueeze(-1), 1.0)
        dense_prediction = logits if self.aux_head is None else logits + 0.5 * kept_tokens.max(dim=1).values
        return TrainOutput(logits, tokens, keep_mask, decisions, dense_prediction)

    def forward_teacher(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Dense pass returning the class head's logits and the distilled tokens: the distillation targets
        (the official LVViT_Teacher returns its class and auxiliary logits the same way)."""
        x = self.run_blocks(self.embed(images), 0, self.cfg.depth)
        x = self.norm(x)
        return self.head(x[:, 0]), self.distilled_tokens(x[:, 1:])

    def forward_inference(self, images: Tensor) -> InferenceOutput:
        """Hard pruning with static top-k: the computation the exported graphs and engines perform."""
        x = self.embed(images)
        B = x.shape[0]
        patch_ids = torch.arange(self.cfg.num_patches, device=x.device).expand(B, -1)
        kept_idx: list[Tensor] = []
        kept_ids: list[Tensor] = []
        stage_inputs: list[Tensor] = [images]
        for s, (start, end) in enumerate(self.stage_bounds()):
            if s > 0:
                stage_inputs.append(x)
                k = self.cfg.keep_counts[s - 1]
                x, idx = select_tokens(x, self.keep_scores(s, x), k)
                patch_ids = torch.gather(patch_ids, 1, idx)
                kept_idx.append(idx)
                kept_ids.append(patch_ids)
            x = self.run_blocks(x, start, end)
        return InferenceOutput(self.classify(x), kept_idx, kept_ids, stage_inputs)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.score_predictor.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.predictor_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]


def build_model(cfg: ModelConfig) -> DynamicViT:
    return DynamicViT(cfg)
