"""Checkpoint filters: fit a state dict made for another input onto a ModelConfig, and say what changed.

timm's idea (its models' checkpoint_filter_fn): weights trained at one input size and channel count start a model
of another. Two differences are adaptable, both only when asked (`--interpolate-pos-embed`), because both change
what the weights compute:

- input size: the patch-grid part of the position embeddings is resampled bicubically to the new grid (timm's
  resample_abs_pos_embed: float32, antialias on, corners not aligned); the class token's embedding is kept as is;
- input channels: the first convolution (DeiT's patch_embed.proj, LV-ViT's stem patch_embed.conv1) is adapted as
  timm's adapt_input_conv does: summed over its input channels for a 1-channel model (a grey image repeated to RGB
  gives the same response), repeated and rescaled for more channels.

Without the flag a checkpoint of another input is refused in one line naming both inputs and the flag. The
classifier head is replaced only where the caller allows it (`--init-from` on data with other classes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ModelConfig
from .errors import CheckpointError

FLAG = "--interpolate-pos-embed"
FIRST_CONV = {"deit": "patch_embed.proj.weight", "lvvit": "patch_embed.conv1.weight"}
HEADS = ("head.", "aux_head.")  # the class head, and LV-ViT's auxiliary token head: both sized by the classes


@dataclass
class Fitted:
    """The state dict fitted to the config, what was changed (one line each), and the keys left for the model's own
    initialisation (a replaced head)."""

    state_dict: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)
    fresh: tuple[str, ...] = ()


def prefix_tokens(sd: dict[str, Tensor]) -> int:
    """Tokens before the patch grid in the position embeddings: the class token (and DeiT-distilled's dist token)."""
    return 1 + int("dist_token" in sd)


def pos_grid(sd: dict[str, Tensor]) -> int | None:
    """The side of the square patch grid the position embeddings cover; None without pos_embed or a square grid."""
    pos = sd.get("pos_embed")
    if pos is None or pos.ndim != 3:
        return None
    n = int(pos.shape[1]) - prefix_tokens(sd)
    g = math.isqrt(max(n, 0))
    return g if g * g == n and g > 0 else None


def resample_pos_embed(pos: Tensor, grid: int, prefix: int = 1) -> Tensor:
    """[1, prefix + g*g, C] -> [1, prefix + grid*grid, C]: the prefix tokens' rows kept, the g x g grid resampled
    bicubically as timm's resample_abs_pos_embed does (float32, antialias, align_corners False)."""
    old = math.isqrt(int(pos.shape[1]) - prefix)
    head, body = pos[:, :prefix], pos[:, prefix:]
    dim = int(pos.shape[-1])
    x = body.float().reshape(1, old, old, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)
    return torch.cat([head, x], dim=1)


def adapt_input_conv(weight: Tensor, in_chans: int) -> tuple[Tensor, str]:
    """A first-convolution weight [O, I, kh, kw] for `in_chans` input channels, and how (timm's adapt_input_conv):
    summed over I for one channel; from one channel, repeated and divided by in_chans; from three, repeated to
    in_chans and scaled by 3 / in_chans. Other changes have no sensible mapping and are refused."""
    have = int(weight.shape[1])
    if have == in_chans:
        return weight, "unchanged"
    w = weight.float()
    if in_chans == 1:
        out, how = w.sum(dim=1, keepdim=True), f"its {have} input channels' weights summed"
    elif have == 1:
        out, how = w.repeat(1, in_chans, 1, 1) / in_chans, f"repeated to {in_chans} channels and divided by {in_chans}"
    elif have == 3:
        reps = math.ceil(in_chans / 3)
        out = w.repeat(1, reps, 1, 1)[:, :in_chans] * (3.0 / in_chans)
        how = f"repeated to {in_chans} channels and scaled by 3/{in_chans}"
    else:
        raise CheckpointError(f"the checkpoint's first convolution takes {have} channels and no rule maps them to "
                              f"{in_chans}: pass --in-chans {have}")
    return out.to(weight.dtype), how


def _input(chans: int | None, size: int | None) -> str:
    c = f"{chans}x" if chans is not None else ""
    return f"{c}{size}x{size}" if size is not None else f"{chans}-channel"


def fit_input(sd: dict[str, Tensor], cfg: ModelConfig, *, allow: bool, source: str,
              replace_head: bool = False) -> Fitted:
    """`sd` fitted to `cfg`'s input size and channels (when `allow`), and, with `replace_head`, without a classifier
    head sized for other classes. Refuses in one line a checkpoint of another input when not `allow`. Anything
    else that differs (patch size, width, depth) is left for the strict load to name (checkpoint.load_weights)."""
    from .checkpoint import weights_architecture

    out = dict(sd)
    notes: list[str] = []
    arch = weights_architecture(sd)
    if arch.get("patch_size", cfg.patch_size) != cfg.patch_size or arch.get("embed_dim", cfg.embed_dim) != cfg.embed_dim:
        return Fitted(out)  # another architecture: no input to fit
    prefix = prefix_tokens(sd)
    grid = pos_grid(sd)
    size_differs = grid is not None and grid != cfg.grid_size
    conv_key = FIRST_CONV.get(cfg.family, FIRST_CONV["deit"])
    conv = sd.get(conv_key)
    have_chans = int(conv.shape[1]) if conv is not None and conv.ndim == 4 else None
    chans_differ = have_chans is not None and have_chans != cfg.in_chans
    if (size_differs or chans_differ) and not allow:
        old_size = grid * cfg.patch_size if grid is not None else None
        have = _input(have_chans if chans_differ else None, old_size) if size_differs else f"{have_chans}-channel"
        want = (_input(cfg.in_chans if chans_differ else None, cfg.img_size) if size_differs
                else f"{cfg.in_chans}-channel")
        what = " and ".join(w for w, on in (("resample its position embeddings", size_differs),
                                             ("adapt its first convolution", chans_differ)) if on)
        keep = " ".join(f for f, on in ((f"--img-size {old_size}", size_differs),
                                        (f"--in-chans {have_chans}", chans_differ)) if on)
        raise CheckpointError(
            f"{source} was made for {have} images and the model takes {want}: pass {FLAG} to {what} (as timm "
            f"does), or {keep} to train at the checkpoint's input"
        )
    if size_differs and grid is not None:
        out["pos_embed"] = resample_pos_embed(sd["pos_embed"], cfg.grid_size, prefix)
        tokens = "class and distillation tokens" if prefix == 2 else "class token"
        notes.append(f"{source}: position embeddings resampled from a {grid}x{grid} to a {cfg.grid_size}x"
                     f"{cfg.grid_size} patch grid ({grid * cfg.patch_size}x{grid * cfg.patch_size} -> {cfg.img_size}x"
                     f"{cfg.img_size} images; bicubic, as timm; {tokens} kept)")
    if chans_differ and conv is not None:
        out[conv_key], how = adapt_input_conv(conv, cfg.in_chans)
        notes.append(f"{source}: first convolution {conv_key} adapted from {have_chans} to {cfg.in_chans} input "
                     f"channel{'s' if cfg.in_chans != 1 else ''} ({how}, as timm's adapt_input_conv)")
    fresh: list[str] = []
    head = sd.get("head.weight")
    if replace_head and head is not None and head.ndim == 2 and int(head.shape[0]) != cfg.num_classes:
        fresh = [k for k in sd if k.startswith(HEADS)]
        for k in fresh:
            del out[k]
        notes.append(f"{source}: its classifier head{'s' if len(fresh) > 2 else ''} ({int(head.shape[0])} classes) "
                     f"left out: the data has {cfg.num_classes} classes, so the model's head starts fresh")
    return Fitted(out, notes, tuple(fresh))
