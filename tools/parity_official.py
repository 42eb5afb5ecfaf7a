#!/usr/bin/env python3
"""Parity of dvit-edge's models with the official DynamicViT code (raoyongming/DynamicViT).

    python tools/parity_official.py --official /tmp/dynamicvit-official \\
        [--models deit-256,deit-s,deit-b,lvvit-s,lvvit-m] [--images 8] [--real-images 4] [--keep-ratio 0.7] \\
        [--seed 0] [--reduced] [--predictor-gain 16] [--json OUT.json]

--official is the root of a checkout of the official repository (models/dyvit.py and models/dylvvit.py; imgs/ for
the real images). From a bare mirror: `mkdir /tmp/dynamicvit-official && git --git-dir=<mirror> archive HEAD models imgs
| tar -x -C /tmp/dynamicvit-official` (naming the paths: archiving the whole tree stops at a blob the mirror lacks,
figs/video.gif, before models/ is written).

For each official name, the official model is built as its infer.py builds it (VisionTransformerDiffPruning for
deit-256/deit-s/deit-b, LVViTDiffPruning for lvvit-s/lvvit-m; token_ratio [rho, rho^2, rho^3]) and given seeded random
weights drawn like trained ones (LayerNorm/BatchNorm affine near 1/0, BatchNorm running statistics away from 0/1,
non-zero biases, prediction modules large enough that the keep scores spread out without saturating the
log-softmax). Its state dict is saved as an official checkpoint ({'model': state_dict}) and loaded with OUR loader,
pipeline.checkpoint.load_model(path, preset=name, keep_ratio=rho); missing or unexpected keys are reported. Both
models then run the same images in eval mode: --images seeded randn images and --real-images of the official
imgs/*.jpg (shorter side resized to the input size with bicubic filtering, centre-cropped, ImageNet mean/std).

Reported per name: max |logit difference|, its ratio to the logit scale (max |official logit|), top-1 agreement,
and for each pruning stage the fraction of images whose kept SET of patch-grid positions is identical, with the
smallest gap (official log p(keep)) between the last kept and the first dropped token (a near-tie there makes
a set difference a rounding matter, not a semantic one). The official kept indices come from the model itself:
the `utils.batch_index_select` the tool provides records the keep_policy of each pruning stage (LV-ViT's
viz_mode=True decisions are checked against the record; the DeiT class has no viz_mode), and are composed across
stages into grid positions as our kept_patch_ids are. For each image whose sets differ, the first stage that differs
is reported and whether our set is one the official code may keep there: the official ranking is a torch.argsort
(not stable) of log p(keep), which float32 rounds to exactly 0.0 for confident tokens, so among tokens tied at the
boundary the official choice is unspecified (--predictor-gain 400 drives the prediction modules into that regime).

The official models import `utils.batch_index_select` (its utils.py needs torch._six, gone from today's torch, and
tensorboardX), so the tool puts its own module `utils` into sys.modules while importing them, and
`timm.models.layers` is aliased to `timm.layers` when a timm lacks the old path.

--reduced: a quick check on the same code paths with 4 blocks, pruning before blocks 1, 2, 3; LV-ViT on 64x64 images,
DeiT on 224x224 ones (the official VisionTransformerDiffPruning.forward hard-codes the 14x14 grid,
init_n = 14 * 14). Ours is the official name's preset with those changes, registered in pipeline.config.PRESETS for
the loader while the check runs.

DynamicCNN (issue 18), on request: --models convnext-t,convnext-s,convnext-b builds models/dyconvnext.py's AdaConvNeXt
as infer.py does (sparse_ratio [rho, rho - 0.2, rho - 0.4]), loads it with pipeline.spatial.convnext.load_dynamic_cnn
and compares the same columns (kept sets from hooks on the official predictors); it also compares the dense
ConvNeXt_Teacher (Facebook's layout) and the training forward on the same Gumbel draws. --reduced: depths 1, 1, 4, 1.

DynamicSwin, on request: --models swin-t,swin-s,swin-b builds models/dyswin.py's AdaSwinTransformer with infer.py's
arguments (sparse_ratio [rho, rho - 0.2, rho - 0.4], pruning in the third stage), except drop_path_rate 0.0 (infer.py
leaves swin-t at the class default 0.1 and passes swin-s/b args.drop_path, which its parser lacks; stochastic depth
is the identity in eval, and 0 is main.py's default). It is loaded with OUR loader, pipeline.checkpoint.load_model(
path, preset=name, keep_ratio=rho), and compared as ConvNeXt is: eval logits and kept sets (hooks on the official
predictors), the dense SwinTransformer_Teacher (Microsoft's layout) against our dense load of the same file less the
predictors and fast paths, and the training forward on the official Gumbel draws (recorded from its
F.gumbel_softmax and passed to our forward_train as gumbel_noise). The official eval forward cannot take a batch of
exactly 2 images (AdaSwinTransformer's BasicLayer.forward tests `len(x) == 2`, meant for the training pair [x1, x2],
and len of an eval tensor is its batch size): the tool runs it (and ours, alike) on the whole batch, or one image at
a time when the batch holds 2 images, and says which. --reduced: depths 2, 2, 4, 2 (every stage keeps its
shifted-window block), at 224x224 (the 7x7 windows must tile the maps).

Prints a Markdown table; --json writes the figures. Exit status 0 when every name matches (max |logit difference|
within 1e-4 of the logit scale, every kept set identical, every key mapped), 1 otherwise, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import sys
import tempfile
import time
import types
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch
from torch import Tensor, nn

OFFICIAL_NAMES = ("deit-256", "deit-s", "deit-b", "lvvit-s", "lvvit-m")
REQUIRED_FILES = ("models/dyvit.py", "models/dylvvit.py")
# DynamicCNN (issue 18): models/dyconvnext.py AdaConvNeXt as infer.py builds it; on request only (not the default).
CNN_NAMES = ("convnext-t", "convnext-s", "convnext-b")
CNN_FILE = "models/dyconvnext.py"
CNN_BUILD: dict[str, dict[str, Any]] = {
    "convnext-t": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768], "pruning_loc": [1, 2, 3]},
    "convnext-s": {"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768], "pruning_loc": [3, 6, 9]},
    "convnext-b": {"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024], "pruning_loc": [3, 6, 9]},
}
CNN_REDUCED_DEPTHS = [1, 1, 4, 1]
# DynamicSwin: models/dyswin.py AdaSwinTransformer as infer.py builds it (window_size 7, drop_rate 0.0); on request.
SWIN_NAMES = ("swin-t", "swin-s", "swin-b")
SWIN_FILE = "models/dyswin.py"
SWIN_BUILD: dict[str, dict[str, Any]] = {
    "swin-t": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "pruning_loc": [1, 2, 3]},
    "swin-s": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24], "pruning_loc": [2, 4, 6]},
    "swin-b": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "pruning_loc": [2, 4, 6]},
}
SWIN_REDUCED_DEPTHS = [2, 2, 4, 2]
LOGIT_TOL = 1e-4  # max |logit difference| / logit scale
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What the official infer.py builds for each name (besides pruning_loc and token_ratio).
OFFICIAL_BUILD: dict[str, tuple[str, dict[str, Any], list[int]]] = {
    "deit-256": ("deit", {"patch_size": 16, "embed_dim": 256, "depth": 12, "num_heads": 4, "mlp_ratio": 4,
                          "qkv_bias": True}, [3, 6, 9]),
    "deit-s": ("deit", {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4,
                        "qkv_bias": True}, [3, 6, 9]),
    "deit-b": ("deit", {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4,
                        "qkv_bias": True}, [3, 6, 9]),
    "lvvit-s": ("lvvit", {"patch_size": 16, "embed_dim": 384, "depth": 16, "num_heads": 6, "mlp_ratio": 3.0,
                          "p_emb": "4_2", "skip_lam": 2.0, "return_dense": True, "mix_token": True}, [4, 8, 12]),
    "lvvit-m": ("lvvit", {"patch_size": 16, "embed_dim": 512, "depth": 20, "num_heads": 8, "mlp_ratio": 3.0,
                          "p_emb": "4_2", "skip_lam": 2.0, "return_dense": True, "mix_token": True}, [5, 10, 15]),
}
REDUCED_DEPTH = 4
REDUCED_PRUNING_LOC = [1, 2, 3]
REDUCED_IMG = {"deit": 224, "lvvit": 64}


class ToolError(Exception):
    """A usage problem: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------
# The `utils` module the official models import
# ---------------------------------------------------------------------------------------------------------------
def batch_index_select(x: Tensor, idx: Tensor) -> Tensor:
    """Rows of x picked per batch element: x [B, N, C] or [B, N], idx [B, k] (long) -> [B, k, C] or [B, k],
    out[b, j] = x[b, idx[b, j]]."""
    if idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must be [B, k] with B = {x.shape[0]}, got {tuple(idx.shape)}")
    if x.dim() == 3:
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    raise ValueError(f"x must be [B, N, C] or [B, N], got {tuple(x.shape)}")


class SelectRecorder:
    """Records every batch_index_select call the official models make while active."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], Tensor]] | None = None

    def __call__(self, x: Tensor, idx: Tensor) -> Tensor:
        if self.calls is not None:
            self.calls.append((tuple(x.shape), idx.detach().clone()))
        return batch_index_select(x, idx)

    @contextlib.contextmanager
    def recording(self):
        self.calls = []
        try:
            yield self.calls
        finally:
            self.calls = None


RECORDER = SelectRecorder()


def make_utils_module() -> types.ModuleType:
    mod = types.ModuleType("utils", "dvit-edge stand-in for the official DynamicViT utils.py (batch_index_select only)")
    mod.batch_index_select = RECORDER  # type: ignore[attr-defined]
    mod.batch_index_fill = batch_index_fill  # type: ignore[attr-defined]
    return mod


def batch_index_fill(x: Tensor, x1: Tensor, x2: Tensor, idx1: Tensor, idx2: Tensor) -> Tensor:
    """x [B, N, C] with rows idx1 [B, k1] replaced by x1 and rows idx2 by x2, out of place (the official utils.py
    writes into x, which its callers build with zeros_like). models/dyconvnext.py imports it from `utils`, then
    defines its own; models/dyswin.py's eval forward uses this one, scattering each block's two paths back."""
    out = x.scatter(1, idx1.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x1)
    return out.scatter(1, idx2.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x2)


class GumbelRecorder:
    """Stands in for torch.nn.functional as models/dyswin.py's `F` during its training forward: every function is
    torch's, and each F.gumbel_softmax call (torch's own, unchanged) also records the Gumbel sample it drew, by
    drawing it again from the generator state before the call (torch draws -log(Exponential(1)) shaped like the
    logits) and restoring the state after. The decision the sample gives is checked against torch's output, so a
    torch that draws otherwise is an error here, not a silent mismatch. CPU only."""

    def __init__(self) -> None:
        self.noise: list[Tensor] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.nn.functional, name)

    def gumbel_softmax(self, logits: Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10,
                       dim: int = -1) -> Tensor:
        if logits.device.type != "cpu":
            raise RuntimeError("GumbelRecorder replays the CPU generator: run the official model on the CPU")
        before = torch.get_rng_state()
        out = torch.nn.functional.gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)
        after = torch.get_rng_state()
        torch.set_rng_state(before)
        noise = -torch.empty_like(logits).exponential_().log()
        torch.set_rng_state(after)
        if not torch.equal(((logits + noise) / tau).argmax(dim), out.argmax(dim)):
            raise RuntimeError("the replayed Gumbel sample does not give torch's gumbel_softmax decision: this torch "
                               "draws its noise otherwise")
        self.noise.append(noise.detach())
        return out


@contextlib.contextmanager
def recording_gumbel(mod: types.ModuleType):
    """mod.F is a GumbelRecorder inside the block (yielded), torch.nn.functional again after it."""
    saved = mod.F
    rec = GumbelRecorder()
    mod.F = rec
    try:
        yield rec
    finally:
        mod.F = saved


def check_checkout(path: str | Path) -> Path:
    root = Path(path)
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ToolError(
            f"{root} is not a checkout of the official DynamicViT repository (no {' or '.join(missing)}): make one with "
            "'mkdir /tmp/dynamicvit-official && git --git-dir=<mirror of raoyongming/DynamicViT> archive HEAD "
            "models imgs | tar -x -C /tmp/dynamicvit-official' (or clone https://github.com/raoyongming/DynamicViT) "
            "and pass its root to --official"
        )
    return root


def timm_layers_note() -> str:
    """The official models import timm.models.layers; alias it to timm.layers where this timm lacks it."""
    import timm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import timm.models.layers
        return f"timm {timm.__version__}: timm.models.layers present (deprecated alias of timm.layers), no shim"
    except ImportError:
        import timm.layers

        sys.modules["timm.models.layers"] = timm.layers
        return f"timm {timm.__version__}: timm.models.layers missing, aliased to timm.layers"


def _exec_official(root: Path, rels: tuple[str, ...]) -> list[types.ModuleType]:
    """The checkout's files `rels`, imported under private names with the tool's `utils` in sys.modules (the
    previous `utils`, if any, is restored afterwards)."""
    import importlib.util

    saved = sys.modules.get("utils")
    sys.modules["utils"] = make_utils_module()
    mods = []
    try:
        for rel in rels:
            name = "dynamicvit_official_" + Path(rel).stem
            spec = importlib.util.spec_from_file_location(name, root / rel)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                spec.loader.exec_module(mod)
            mods.append(mod)
    finally:
        if saved is None:
            sys.modules.pop("utils", None)
        else:
            sys.modules["utils"] = saved
    return mods


def import_official(root: Path) -> tuple[types.ModuleType, types.ModuleType, str]:
    """models/dyvit.py and models/dylvvit.py of the checkout (see _exec_official)."""
    note = timm_layers_note()
    vit, lvvit = _exec_official(root, tuple(REQUIRED_FILES))
    return vit, lvvit, note


def import_official_cnn(root: Path) -> types.ModuleType:
    """models/dyconvnext.py of the checkout, imported as import_official imports the ViT families."""
    if not (root / CNN_FILE).is_file():
        raise ToolError(f"{root} has no {CNN_FILE}: extract it too ('git --git-dir=<mirror> archive HEAD models imgs | "
                        "tar -x -C <dir>') or drop the convnext-* names from --models")
    return _exec_official(root, (CNN_FILE,))[0]


def import_official_swin(root: Path) -> types.ModuleType:
    """models/dyswin.py of the checkout, imported as import_official imports the ViT families."""
    if not (root / SWIN_FILE).is_file():
        raise ToolError(f"{root} has no {SWIN_FILE}: extract it too ('git --git-dir=<mirror> archive HEAD models "
                        "imgs | tar -x -C <dir>') or drop the swin-* names from --models")
    return _exec_official(root, (SWIN_FILE,))[0]


# ---------------------------------------------------------------------------------------------------------------
# Models and weights
# ---------------------------------------------------------------------------------------------------------------
def official_spec(name: str, rho: float, reduced: bool) -> tuple[str, dict[str, Any], int]:
    family, kwargs, locs = OFFICIAL_BUILD[name]
    kwargs = dict(kwargs, pruning_loc=list(locs), token_ratio=[rho, rho**2, rho**3])
    img = 224
    if reduced:
        img = REDUCED_IMG[family]
        kwargs.update(depth=REDUCED_DEPTH, pruning_loc=list(REDUCED_PRUNING_LOC), img_size=img)
    if family == "lvvit":
        kwargs["viz_mode"] = True
    return family, kwargs, img


def build_official(dyvit: types.ModuleType, dylvvit: types.ModuleType, family: str, kwargs: dict[str, Any]) -> nn.Module:
    cls = dyvit.VisionTransformerDiffPruning if family == "deit" else dylvvit.LVViTDiffPruning
    with contextlib.redirect_stdout(io.StringIO()):  # the DeiT class prints '## diff vit pruning method'
        return cls(**kwargs)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int, predictor_gain: float = 16.0) -> None:
    """Weights drawn like trained ones, from a seeded generator: linear and convolution weights of unit gain
    (std 1/sqrt(fan_in)) with non-zero biases, LayerNorm/BatchNorm affine near 1/0, BatchNorm running statistics
    away from 0/1, position embedding and class token of std 0.2, and each prediction module's last layer scaled
    (predictor_gain, in units of 1/sqrt(fan_in)) so that the keep-drop margin spreads over a few units: at the
    default 16, distinct keep log-probabilities that float32's log-softmax does not round to 0.0."""
    g = torch.Generator().manual_seed(seed)

    def normal_(t: Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for mname, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = mname.startswith("score_predictor") and m.out_features == 2
            gain = predictor_gain if last else 1.0
            normal_(m.weight, gain / m.in_features**0.5)
            if m.bias is not None:
                normal_(m.bias, 0.05)
        elif isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            normal_(m.weight, 1.0 / fan_in**0.5)
            if m.bias is not None:
                normal_(m.bias, 0.05)
        elif isinstance(m, nn.LayerNorm):
            normal_(m.weight, 0.1, 1.0)
            normal_(m.bias, 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            normal_(m.weight, 0.1, 1.0)
            normal_(m.bias, 0.1)
            assert m.running_mean is not None and m.running_var is not None
            normal_(m.running_mean, 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(1000)
    for pname in ("cls_token", "pos_embed"):
        normal_(getattr(model, pname), 0.2)
    unknown = [n for n, mod in model.named_modules()
               if not list(mod.children()) and list(mod.parameters(recurse=False))
               and not isinstance(mod, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm2d))]
    if unknown:
        raise RuntimeError(f"randomize_ does not know how to draw {unknown}")


def our_preset(name: str, rho: float, reduced: bool, img: int) -> tuple[str, Any]:
    """The preset name our loader is given, and the configuration the official build corresponds to."""
    from pipeline.config import PRESETS, model_config

    if not reduced:
        return name, model_config(name, keep_ratio=rho)
    cfg = model_config(name).replace(name=f"{name}-parity-reduced", img_size=img, depth=REDUCED_DEPTH,
                                     pruning_loc=tuple(REDUCED_PRUNING_LOC))
    PRESETS[cfg.name] = cfg
    return cfg.name, cfg.replace(keep_ratio=rho)


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------
def real_images(root: Path, count: int, size: int) -> tuple[Tensor, list[str]]:
    from PIL import Image

    files = sorted((root / "imgs").glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))[:count]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3)
        out.append(((t.permute(2, 0, 1).float() / 255.0) - mean) / std)
    if not out:
        return torch.empty(0, 3, size, size), []
    return torch.stack(out), [str(f.relative_to(root)) for f in files]


# ---------------------------------------------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class OfficialRun:
    logits: Tensor
    grid_ids: list[Tensor]  # per stage [B, k_s], positions in the patch grid
    boundary_gap: list[float]  # per stage: min over images of log p(keep) of last kept - first dropped
    saturated: list[int]  # per stage: most tokens of one image whose official log p(keep) is exactly 0.0
    scores: list[Tensor]  # per stage [B, N_s]: official log p(keep) of the tokens entering the stage
    input_ids: list[Tensor]  # per stage [B, N_s]: their grid positions


@torch.no_grad()
def run_official(model: nn.Module, images: Tensor, family: str) -> OfficialRun:
    scores: list[Tensor] = []
    hooks = [p.register_forward_hook(lambda _m, _i, out: scores.append(out[:, :, 0].detach().clone()))
             for p in model.score_predictor]
    try:
        with RECORDER.recording() as calls:
            out = model(images)
    finally:
        for h in hooks:
            h.remove()
    B = images.shape[0]
    # Per pruning stage the official inference calls batch_index_select(x, now_policy) on the tokens, then
    # batch_index_select(prev_decision, keep_policy) on the [B, N, 1] decision: the latter is the keep_policy.
    keep_policies = [idx for shape, idx in calls if len(shape) == 3 and shape[-1] == 1]
    token_policies = [idx for shape, idx in calls if len(shape) == 3 and shape[-1] != 1]
    stages = len(model.pruning_loc)
    if len(keep_policies) != stages or len(token_policies) != stages:
        raise RuntimeError(f"expected {stages} keep_policy selections from the official model, recorded "
                           f"{len(keep_policies)} (and {len(token_policies)} token selections)")
    for kp, tp in zip(keep_policies, token_policies):
        if not (torch.equal(tp[:, 0], torch.zeros_like(tp[:, 0])) and torch.equal(tp[:, 1:] - 1, kp)):
            raise RuntimeError("the official token selection is not [class token, keep_policy + 1]")
    if family == "lvvit":
        logits, decisions = out
        for p, (d, kp) in enumerate(zip(decisions, keep_policies)):
            if len(d) != 1 or not torch.equal(d[0], kp):
                raise RuntimeError(f"viz_mode decisions of stage {p} differ from the recorded keep_policy")
    else:
        logits = out
    n = scores[0].shape[1]
    ids = torch.arange(n).expand(B, -1)
    grid_ids, gaps, saturated, input_ids = [], [], [], []
    for s, kp in enumerate(keep_policies):
        input_ids.append(ids)
        ids = torch.gather(ids, 1, kp)
        grid_ids.append(ids)
        k = kp.shape[1]
        srt = scores[s].sort(dim=1, descending=True).values
        gaps.append(float((srt[:, k - 1] - srt[:, k]).min()) if k < srt.shape[1] else float("inf"))
        saturated.append(int((scores[s] == 0).sum(dim=1).max()))
    return OfficialRun(logits, grid_ids, gaps, saturated, scores, input_ids)


def first_divergences(our_ids: list[Tensor], off: OfficialRun, n_random: int) -> list[dict[str, Any]]:
    """For each image whose kept sets differ: the first stage that differs and whether the difference lies within
    the official ranking's tie at the keep boundary. Where tokens share the k-th largest official log p(keep)
    (float32's log-softmax rounds every confident token's to exactly 0.0), the official torch.argsort (not stable)
    keeps an unspecified subset of them; our set is 'within official ties' when it holds every token scored above
    that value and only tokens scored at least that value, i.e. one of the sets the official code may keep."""
    out = []
    B = off.logits.shape[0]
    for b in range(B):
        for s, (ours, theirs) in enumerate(zip(our_ids, off.grid_ids)):
            mine = set(ours[b].tolist())
            if mine == set(theirs[b].tolist()):
                continue
            sc, ids = off.scores[s][b], off.input_ids[s][b]
            k = theirs.shape[1]
            t = sc.sort(descending=True).values[k - 1]
            must, allowed = set(ids[sc > t].tolist()), set(ids[sc >= t].tolist())
            out.append({
                "image": b, "source": "random" if b < n_random else "real", "stage": s + 1,
                "positions_differing": len(mine ^ set(theirs[b].tolist())) // 2,
                "tied_at_boundary": int((sc == t).sum()), "boundary_logp": float(t),
                "within_official_ties": bool(len(mine) == k and must <= mine <= allowed),
            })
            break
    return out


def same_sets(a: Tensor, b: Tensor) -> Tensor:
    """[B] bool: row b of a and of b hold the same set of positions."""
    if a.shape != b.shape:
        return torch.zeros(a.shape[0], dtype=torch.bool)
    return (a.sort(dim=1).values == b.sort(dim=1).values).all(dim=1)


def key_diff(sd: dict[str, Tensor], cfg: Any) -> tuple[list[str], list[str]]:
    from pipeline.model import DynamicViT

    ours = DynamicViT(cfg).state_dict()
    return sorted(k for k in ours if k not in sd), sorted(k for k in sd if k not in ours)


def check_one(name: str, args: argparse.Namespace, root: Path, mods: tuple[types.ModuleType, types.ModuleType],
              log: Any) -> dict[str, Any]:
    from pipeline.checkpoint import load_model
    from pipeline.config import PRESETS
    from pipeline.errors import CheckpointError

    rho = args.keep_ratio
    family, kwargs, img = official_spec(name, rho, args.reduced)
    t0 = time.perf_counter()
    official = build_official(*mods, family, kwargs)
    seed = args.seed * 1_000_003 + zlib.crc32(name.encode())
    randomize_(official, seed, args.predictor_gain)
    official.eval()
    sd = official.state_dict()
    preset, cfg = our_preset(name, rho, args.reduced, img)
    result: dict[str, Any] = {
        "official_class": type(official).__name__,
        "official_kwargs": {k: v for k, v in kwargs.items()},
        "our_preset": preset,
        "img_size": img,
        "weights_seed": seed,
        "parameters": sum(p.numel() for p in official.parameters()),
    }
    try:
        missing, unexpected = key_diff(sd, cfg)
        result.update(missing_keys=missing, unexpected_keys=unexpected, state_dict_keys=len(sd))
        with tempfile.TemporaryDirectory(prefix="parity-official-") as tmp:
            path = Path(tmp) / f"{name}.pth"
            torch.save({"model": sd}, path)
            try:
                ours = load_model(path, preset=preset, keep_ratio=rho)
            except CheckpointError as e:
                result.update(load_error=str(e), match=False)
                return result
        ours.eval()
        images = torch.randn(args.images, 3, img, img, generator=torch.Generator().manual_seed(args.seed))
        real, real_files = real_images(root, args.real_images, img)
        batch = torch.cat([images, real])
        result.update(random_images=args.images, real_images=real_files)
        off = run_official(official, batch, family)
        with torch.no_grad():
            our = ours.forward_inference(batch)
        result["seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        if args.reduced:
            PRESETS.pop(preset, None)
    diff = (our.logits - off.logits).abs()
    scale = float(off.logits.abs().max())
    top1 = our.logits.argmax(1) == off.logits.argmax(1)
    stage_same = [same_sets(o, f) for o, f in zip(our.kept_patch_ids, off.grid_ids)]
    n_rand = args.images
    all_same = torch.stack(stage_same).all(dim=0)

    def frac(t: Tensor) -> float | None:
        return float(t.float().mean()) if t.numel() else None

    stages = []
    for s, same in enumerate(stage_same):
        k_ours, k_off = our.kept_patch_ids[s].shape[1], off.grid_ids[s].shape[1]
        stages.append({
            "kept": k_off, "kept_ours": k_ours, "same_set": frac(same), "same_set_random": frac(same[:n_rand]),
            "same_set_real": frac(same[n_rand:]), "min_boundary_gap_logp": off.boundary_gap[s],
            "max_tokens_with_logp_0": off.saturated[s],
            "differing_images": [int(i) for i in torch.nonzero(~same).flatten()],
        })
    ratio = float(diff.max()) / scale if scale > 0 else float("inf")
    keys_ok = not result["missing_keys"] and not result["unexpected_keys"]
    result.update(
        max_abs_logit_diff=float(diff.max()), logit_scale=scale, ratio=ratio,
        max_abs_logit_diff_random=float(diff[:n_rand].max()) if n_rand else None,
        max_abs_logit_diff_real=float(diff[n_rand:].max()) if len(real_files) else None,
        bit_exact_logits=bool(torch.equal(our.logits, off.logits)), top1_agreement=frac(top1),
        distinct_top1_classes=int(off.logits.argmax(1).unique().numel()), stages=stages,
        max_abs_logit_diff_where_sets_agree=float(diff[all_same].max()) if bool(all_same.any()) else None,
        first_divergences=first_divergences(our.kept_patch_ids, off, n_rand),
        match=bool(keys_ok and ratio <= LOGIT_TOL and all(bool(s.all()) for s in stage_same)),
    )
    sets = ", ".join(f"{st['same_set']:.3f}" for st in stages)
    log(f"{name}: ratio {ratio:.2e}, top-1 {result['top1_agreement']:.3f}, kept sets {sets} ({result['seconds']} s)")
    return result


# ---------------------------------------------------------------------------------------------------------------
# DynamicCNN (ConvNeXt) and DynamicSwin: spatial sparsification
# ---------------------------------------------------------------------------------------------------------------
# What infer.py passes AdaSwinTransformer beside SWIN_BUILD (drop_path_rate 0.0: see the module docstring).
SWIN_FIXED: dict[str, Any] = {"window_size": 7, "drop_rate": 0.0, "drop_path_rate": 0.0}


def spatial_spec(name: str, rho: float, reduced: bool) -> tuple[dict[str, Any], Any]:
    """The official AdaConvNeXt or AdaSwinTransformer kwargs (sparse_ratio [rho, rho - 0.2, rho - 0.4], as infer.py's
    KEEP_RATE2) and our SpatialConfig for them (--reduced: named '<name>-parity-reduced'; the Swin check registers it
    as a preset while it runs)."""
    from pipeline.spatial.config import spatial_config

    swin = name in SWIN_BUILD
    build, depths = (({**SWIN_BUILD[name], **SWIN_FIXED}, SWIN_REDUCED_DEPTHS) if swin
                     else (CNN_BUILD[name], CNN_REDUCED_DEPTHS))
    kwargs: dict[str, Any] = dict(build, sparse_ratio=[rho, rho - 0.2, rho - 0.4])
    cfg = spatial_config(name, keep_ratio=rho)
    if reduced:
        kwargs.update(depths=list(depths), pruning_loc=list(REDUCED_PRUNING_LOC))
        cfg = cfg.replace(name=f"{name}-parity-reduced", depths=tuple(depths), pruning_loc=tuple(REDUCED_PRUNING_LOC))
    return kwargs, cfg


@torch.no_grad()
def randomize_spatial_(model: nn.Module, seed: int, predictor_gain: float = 16.0) -> None:
    """randomize_'s draws for a ConvNeXt or a Swin, by parameter name (a ConvNeXt's channels-first LayerNorm and
    layer scales, a Swin's relative position bias tables are bare parameters): matrices and convolutions of unit
    gain, layer scales in [0.1, 0.6] (not the 1e-6 init, which would hide every residual branch), norms 1 +- 0.1 /
    0 +- 0.05, other biases std 0.05, relative position biases std 1 (a trained Swin's are of that order; the 0.02
    init would hide a wrong index), each predictor's last layer at predictor_gain."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
        elif name.endswith("relative_position_bias_table"):
            p.copy_(torch.randn(p.shape, generator=g))
        elif p.ndim == 1 and name.endswith("weight"):  # 1-D weights are norms' in a ConvNeXt and a Swin
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + 1.0)
        elif p.ndim == 1:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        else:
            gain = predictor_gain if "score_predictor" in name and p.shape[0] == 2 else 1.0
            p.copy_(torch.randn(p.shape, generator=g) * gain / p[0].numel() ** 0.5)


def official_eval_batches(n: int) -> list[int]:
    """Batch sizes the official Swin eval forward runs n images in: all at once, except 2, which its
    BasicLayer.forward takes for the training pair (`len(x) == 2`): then one at a time."""
    return [1, 1] if n == 2 else [n]


@torch.no_grad()
def run_official_spatial(model: nn.Module, predictors: nn.ModuleList, keep_logp: Any, images: Tensor,
                         batches: list[int] | None = None) -> OfficialRun:
    """Eval forward (in `batches`, default all at once); each predictor's partition (idx1 = slow-path positions) and
    log p(keep) (keep_logp of its out_conv's output -> [B, N]) come from hooks."""
    all_scores: list[Tensor] = []  # chunk-major: chunk c's predictor s at c * len(predictors) + s
    all_kept: list[Tensor] = []
    hooks = [p.register_forward_hook(lambda _m, _i, out: all_kept.append(out[1][0].clone())) for p in predictors]
    hooks += [p.out_conv.register_forward_hook(lambda _m, _i, out: all_scores.append(keep_logp(out).clone()))
              for p in predictors]
    try:
        logits = torch.cat([model(chunk) for chunk in images.split(batches or [images.shape[0]])])
    finally:
        for h in hooks:
            h.remove()
    n = len(predictors)
    scores = [torch.cat(all_scores[s::n]) for s in range(n)]
    kept = [torch.cat(all_kept[s::n]) for s in range(n)]
    B, N = scores[0].shape
    ids = torch.arange(N).expand(B, -1)
    gaps, saturated = [], []
    for sc, kp in zip(scores, kept):
        srt = sc.sort(dim=1, descending=True).values
        k = kp.shape[1]
        gaps.append(float((srt[:, k - 1] - srt[:, k]).min()) if k < N else float("inf"))
        saturated.append(int((sc == 0).sum(dim=1).max()))
    return OfficialRun(logits, kept, gaps, saturated, scores, [ids] * len(kept))


def run_official_cnn(model: nn.Module, images: Tensor) -> OfficialRun:
    return run_official_spatial(model, model.score_predictor, lambda out: out[:, 0].flatten(1), images)


@dataclass
class SpatialRuns:
    """What check_spatial_result compares, each family's outputs brought to one form."""
    ours: Any  # SpatialInferenceOutput: logits, kept_positions
    official: OfficialRun
    teacher_ours: tuple[Tensor, Tensor]  # dense logits, final normed feature map
    teacher_official: tuple[Tensor, Tensor]
    teacher_keys: int
    train_ours: tuple[Tensor, Tensor, list[Tensor]]  # training logits, feature map, decisions
    train_official: tuple[Tensor, Tensor, list[Tensor]]


def randomized_official(official: Any, name: str, args: argparse.Namespace, kwargs: dict[str, Any],
                        cfg: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A spatial official model given seeded random weights (randomize_spatial_), in eval mode: its state dict and
    the start of its result record."""
    seed = args.seed * 1_000_003 + zlib.crc32(name.encode())
    randomize_spatial_(official, seed, args.predictor_gain)
    official.eval()
    result: dict[str, Any] = {
        "official_class": type(official).__name__, "official_kwargs": dict(kwargs), "our_config": cfg.to_dict(),
        "img_size": cfg.img_size, "weights_seed": seed, "parameters": sum(p.numel() for p in official.parameters()),
    }
    return official.state_dict(), result


def load_ours(name: str, sd: dict[str, Tensor], teacher: nn.Module, result: dict[str, Any],
              load_student: Any, load_dense: Any) -> tuple[Any, Any, int] | None:
    """The official state dict `sd` saved in the release format and loaded by our `load_student`, then the official
    dense `teacher` given the keys of `sd` it has, saved alike and loaded by our `load_dense`: (ours, our teacher,
    the teacher's key count). Records the key comparison in `result`; None (and load_error) when our loader
    refuses the file."""
    from pipeline.errors import CheckpointError

    with tempfile.TemporaryDirectory(prefix="parity-official-") as tmp:
        path = Path(tmp) / f"{name}.pth"
        torch.save({"model": sd}, path)
        try:
            ours = load_student(path)
        except CheckpointError as e:
            result.update(load_error=str(e), match=False, missing_keys=[], unexpected_keys=[])
            return None
        own = ours.state_dict()
        result.update(missing_keys=sorted(set(own) - set(sd)), unexpected_keys=sorted(set(sd) - set(own)),
                      state_dict_keys=len(sd))
        tsd = {k: v for k, v in sd.items() if k in teacher.state_dict()}
        teacher.load_state_dict(tsd)
        teacher.eval()
        torch.save({"model": tsd}, path)
        return ours, load_dense(path), len(tsd)


def check_cnn(name: str, args: argparse.Namespace, root: Path, mod: types.ModuleType, log: Any) -> dict[str, Any]:
    """check_one for DynamicCNN, plus the dense teacher (ConvNeXt_Teacher, Facebook's layout) and the training
    forward on the same Gumbel draws (same seed: neither model draws anything else)."""
    from pipeline.spatial.convnext import load_dynamic_cnn

    rho = args.keep_ratio
    kwargs, cfg = spatial_spec(name, rho, args.reduced)
    img = cfg.img_size
    t0 = time.perf_counter()
    official = mod.AdaConvNeXt(**kwargs)
    sd, result = randomized_official(official, name, args, kwargs, cfg)
    teacher = mod.ConvNeXt_Teacher(depths=kwargs["depths"], dims=kwargs["dims"])
    loaded = load_ours(name, sd, teacher, result, lambda path: load_dynamic_cnn(path, cfg),
                       lambda path: load_dynamic_cnn(path, cfg.as_dense()))
    if loaded is None:
        return result
    ours, our_teacher, n_teacher_keys = loaded
    images = torch.randn(args.images, 3, img, img, generator=torch.Generator().manual_seed(args.seed))
    real, real_files = real_images(root, args.real_images, img)
    batch = torch.cat([images, real])
    result.update(random_images=args.images, real_images=real_files)
    off = run_official_cnn(official, batch)
    with torch.no_grad():
        our = ours.forward_inference(batch)
        t_off, t_ours = teacher(batch), our_teacher.forward_teacher(batch)
    official.train()
    ours.train()
    torch.manual_seed(args.seed + 1)
    off_train = official(batch)
    torch.manual_seed(args.seed + 1)
    our_train = ours(batch)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    runs = SpatialRuns(our, off, (t_ours[0], t_ours[1]), (t_off[0], t_off[1]), n_teacher_keys,
                       (our_train.logits, our_train.featmap, our_train.decisions),
                       (off_train[0], off_train[1], off_train[2]))
    return check_spatial_result(name, args, result, runs, len(real_files), log)


def check_swin(name: str, args: argparse.Namespace, root: Path, mod: types.ModuleType, log: Any) -> dict[str, Any]:
    """check_cnn for DynamicSwin: our model through pipeline.checkpoint.load_model (official name as preset), the
    dense SwinTransformer_Teacher (Microsoft's layout) against our dense load of the same file less the predictors
    and fast paths, and the training forward on the official Gumbel draws (recorded, passed as gumbel_noise). The
    official eval runs in official_eval_batches (never a batch of 2), and ours in the same batches."""
    from pipeline.checkpoint import load_model
    from pipeline.spatial.config import SPATIAL_PRESETS

    rho = args.keep_ratio
    kwargs, cfg = spatial_spec(name, rho, args.reduced)
    img = cfg.img_size
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # torch.meshgrid without indexing= in WindowAttention
        warnings.simplefilter("ignore", UserWarning)
        official = mod.AdaSwinTransformer(**kwargs)
        teacher = mod.SwinTransformer_Teacher(embed_dim=kwargs["embed_dim"], depths=kwargs["depths"],
                                              num_heads=kwargs["num_heads"], window_size=kwargs["window_size"])
    sd, result = randomized_official(official, name, args, kwargs, cfg)
    preset = name
    if args.reduced:
        preset = cfg.name
        SPATIAL_PRESETS[preset] = cfg
    try:
        loaded = load_ours(name, sd, teacher, result, lambda path: load_model(path, preset=preset, keep_ratio=rho),
                           lambda path: load_model(path, preset=preset))
    finally:
        if args.reduced:
            SPATIAL_PRESETS.pop(preset, None)
    if loaded is None:
        return result
    ours, our_teacher, n_teacher_keys = loaded
    if not our_teacher.cfg.is_dense:
        raise RuntimeError(f"our loader read the teacher file (no predictors) as a sparse {our_teacher.cfg.name}")
    ours.eval()
    our_teacher.eval()
    images = torch.randn(args.images, 3, img, img, generator=torch.Generator().manual_seed(args.seed))
    real, real_files = real_images(root, args.real_images, img)
    batch = torch.cat([images, real])
    batches = official_eval_batches(batch.shape[0])
    result.update(random_images=args.images, real_images=real_files, official_eval_batches=batches)
    off = run_official_spatial(official, official.layers[2].score_predictor, lambda out: out[:, :, 0], batch, batches)
    with torch.no_grad():
        # ours in the same batches, so that a bit-level difference is not a matter of batch size
        parts = [ours.forward_inference(chunk) for chunk in batch.split(batches)]
        our = types.SimpleNamespace(logits=torch.cat([o.logits for o in parts]),
                                    kept_positions=[torch.cat(k) for k in zip(*(o.kept_positions for o in parts))])
        t_off, t_ours = teacher(batch), our_teacher.forward_teacher(batch)
    official.train()
    ours.train()
    torch.manual_seed(args.seed + 1)
    with torch.no_grad(), recording_gumbel(mod) as gumbel:
        off_train = official(batch)
    with torch.no_grad():
        our_train = ours.forward_train(batch, gumbel_noise=gumbel.noise)
    official.eval()
    ours.eval()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    runs = SpatialRuns(our, off, (t_ours[0], t_ours[1]), (t_off[0], t_off[1]), n_teacher_keys,
                       (our_train.logits, our_train.tokens, our_train.decisions),
                       (off_train[0], off_train[1], off_train[2]))
    return check_spatial_result(name, args, result, runs, len(real_files), log,
                                note=f"; official eval in batches of {batches}")


def check_spatial_result(name: str, args: argparse.Namespace, result: dict[str, Any], runs: SpatialRuns,
                         n_real: int, log: Any, note: str = "") -> dict[str, Any]:
    """The columns of check_one, plus the teacher and training comparisons, into `result`; match when every key
    maps, the eval logits are within LOGIT_TOL of their scale with every kept set identical, the teacher's logits
    and the training logits within LOGIT_TOL too, and every training decision equal."""
    our, off = runs.ours, runs.official
    diff = (our.logits - off.logits).abs()
    scale = float(off.logits.abs().max())
    stage_same = [same_sets(o, f) for o, f in zip(our.kept_positions, off.grid_ids)]
    n_rand = args.images

    def frac(t: Tensor) -> float | None:
        return float(t.float().mean()) if t.numel() else None

    stages = [{
        "kept": off.grid_ids[s].shape[1], "kept_ours": our.kept_positions[s].shape[1], "same_set": frac(same),
        "same_set_random": frac(same[:n_rand]), "same_set_real": frac(same[n_rand:]),
        "same_order": bool(torch.equal(our.kept_positions[s], off.grid_ids[s])),
        "min_boundary_gap_logp": off.boundary_gap[s], "max_tokens_with_logp_0": off.saturated[s],
        "differing_images": [int(i) for i in torch.nonzero(~same).flatten()],
    } for s, same in enumerate(stage_same)]
    ratio = float(diff.max()) / scale if scale > 0 else float("inf")
    all_same = torch.stack(stage_same).all(dim=0)
    (tr_ours, fm_ours, dec_ours), (tr_off, fm_off, dec_off) = runs.train_ours, runs.train_official
    train = {
        "max_abs_logit_diff": float((tr_ours - tr_off).detach().abs().max()),
        "max_abs_featmap_diff": float((fm_ours - fm_off).detach().abs().max()),
        "decisions_equal": len(dec_off) == len(dec_ours) and all(
            torch.equal(a.flatten(1), b.flatten(1)) for a, b in zip(dec_off, dec_ours)),
        "mean_slow_share": [round(float(d.detach().mean()), 4) for d in dec_ours],
    }
    (t_ours, tf_ours), (t_off, tf_off) = runs.teacher_ours, runs.teacher_official
    dense = {
        "state_dict_keys": runs.teacher_keys, "max_abs_logit_diff": float((t_ours - t_off).abs().max()),
        "max_abs_featmap_diff": float((tf_ours - tf_off).abs().max()),
        "bit_exact": bool(torch.equal(t_ours, t_off) and torch.equal(tf_ours, tf_off)),
    }
    keys_ok = not result["missing_keys"] and not result["unexpected_keys"]
    t_scale = float(t_off.abs().max())
    result.update(
        max_abs_logit_diff=float(diff.max()), logit_scale=scale, ratio=ratio,
        max_abs_logit_diff_random=float(diff[:n_rand].max()) if n_rand else None,
        max_abs_logit_diff_real=float(diff[n_rand:].max()) if n_real else None,
        bit_exact_logits=bool(torch.equal(our.logits, off.logits)),
        top1_agreement=frac(our.logits.argmax(1) == off.logits.argmax(1)),
        distinct_top1_classes=int(off.logits.argmax(1).unique().numel()), stages=stages,
        max_abs_logit_diff_where_sets_agree=float(diff[all_same].max()) if bool(all_same.any()) else None,
        first_divergences=first_divergences(our.kept_positions, off, n_rand), teacher=dense, training=train,
        match=bool(keys_ok and ratio <= LOGIT_TOL and all(bool(s.all()) for s in stage_same)
                   and dense["max_abs_logit_diff"] <= LOGIT_TOL * t_scale and train["decisions_equal"]
                   and train["max_abs_logit_diff"] <= LOGIT_TOL * float(tr_off.detach().abs().max())),
    )
    sets = ", ".join(f"{st['same_set']:.3f}" for st in stages)
    log(f"{name}: ratio {ratio:.2e}, top-1 {result['top1_agreement']:.3f}, kept sets {sets}; teacher |dlogit| "
        f"{dense['max_abs_logit_diff']:.2e}; training |dlogit| {train['max_abs_logit_diff']:.2e}, decisions equal "
        f"{train['decisions_equal']}{note} ({result['seconds']} s)")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def markdown_table(report: dict[str, Any]) -> str:
    stages = max([len(REDUCED_PRUNING_LOC), *(len(r.get("stages", [])) for r in report["models"].values())])
    head = (["model", "images (random+real)", "keys missing/unexpected", "max abs dlogit", "logit scale", "ratio",
             "bit-exact logits", "top-1 agree (distinct classes)"] + [f"kept set = (stage {s + 1}, k)" for s in range(stages)]
            + ["min keep gap (log p) per stage", "first divergence", "match"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in report["models"].items():
        keys = f"{len(r.get('missing_keys', []))}/{len(r.get('unexpected_keys', []))}"
        if "load_error" in r:
            lines.append(f"| {name} | - | {keys} (load failed: {r['load_error']}) |" + " - |" * (len(head) - 4)
                         + " no |")
            continue
        cells = [name, f"{r['random_images']}+{len(r['real_images'])}", keys, f"{r['max_abs_logit_diff']:.2e}",
                 f"{r['logit_scale']:.3g}", f"{r['ratio']:.2e}", "yes" if r["bit_exact_logits"] else "no",
                 f"{r['top1_agreement']:.3f} ({r['distinct_top1_classes']})"]
        cells += [f"{st['same_set']:.3f} (k={st['kept']})" for st in r["stages"]]
        cells += [" / ".join(f"{st['min_boundary_gap_logp']:.2e}" for st in r["stages"]),
                  divergence_cell(r["first_divergences"]), "yes" if r["match"] else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def divergence_cell(divs: list[dict[str, Any]]) -> str:
    """'none', or per stage: images whose kept sets first differ there, and how many of them within official ties."""
    if not divs:
        return "none"
    parts = []
    for st in sorted({d["stage"] for d in divs}):
        at = [d for d in divs if d["stage"] == st]
        ties = sum(d["within_official_ties"] for d in at)
        parts.append(f"stage {st}: {len(at)} img ({ties} within official ties)")
    return "; ".join(parts)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="parity_official.py",
        description="Check dvit-edge's DynamicViT against the official DynamicViT code: the official model (built as "
                    "its infer.py does, seeded random weights) is saved as an official checkpoint, loaded with our "
                    "loader, and both run the same images; reports logit differences, top-1 agreement and whether "
                    "each pruning stage keeps the same set of patch positions. Exit 0: all match; 1: a mismatch; "
                    "2: usage error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python tools/parity_official.py --official /tmp/dynamicvit-official --reduced",
    )
    p.add_argument("--official", required=True, metavar="DIR",
                   help="root of a checkout of github.com/raoyongming/DynamicViT (holding models/dyvit.py and "
                        "models/dylvvit.py; its imgs/*.jpg are the real images)")
    p.add_argument("--models", default=",".join(OFFICIAL_NAMES), metavar="NAMES",
                   help=f"comma-separated official names (default: all of {','.join(OFFICIAL_NAMES)}; "
                        f"DynamicCNN on request: {','.join(CNN_NAMES)}, from models/dyconvnext.py; DynamicSwin "
                        f"on request: {','.join(SWIN_NAMES)}, from models/dyswin.py, whose eval forward the tool "
                        "never gives a batch of 2)")
    p.add_argument("--images", type=int, default=8, metavar="N", help="seeded randn images per model (default 8)")
    p.add_argument("--real-images", type=int, default=4, metavar="N",
                   help="real images from the checkout's imgs/*.jpg, resized and ImageNet-normalised (default 4)")
    p.add_argument("--keep-ratio", type=float, default=0.7, metavar="RHO",
                   help="keep ratio rho: stages keep rho, rho^2, rho^3 of the patch tokens (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and random images (default 0)")
    p.add_argument("--reduced", action="store_true",
                   help="quick check: 4 blocks, pruning before blocks 1,2,3; LV-ViT at 64x64, DeiT at 224x224 "
                        "(the official DeiT class hard-codes the 14x14 grid)")
    p.add_argument("--predictor-gain", type=float, default=16.0, metavar="G",
                   help="scale of the prediction modules' last layer (default 16: keep-drop margins of a few units, "
                        "no saturated keep log-probabilities); large values (e.g. 200) push confident tokens' "
                        "official log p(keep) to exactly 0.0 in float32, the tie regime of trained checkpoints")
    p.add_argument("--json", metavar="OUT.json", help="write the figures to this file")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    known = OFFICIAL_NAMES + CNN_NAMES + SWIN_NAMES
    bad = [n for n in names if n not in known]
    if bad or not names:
        p.error(f"unknown model name(s) {bad or [args.models]}: choose from {','.join(known)}")
    args.names = names
    if args.images < 0 or args.real_images < 0 or args.images + args.real_images == 0:
        p.error("--images and --real-images must be >= 0 and not both 0")
    if not 0.0 < args.keep_ratio <= 1.0:
        p.error(f"--keep-ratio {args.keep_ratio} is outside (0, 1]: e.g. 0.7")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        root = check_checkout(args.official)
        cnn = import_official_cnn(root) if any(n in CNN_NAMES for n in args.names) else None
        swin = import_official_swin(root) if any(n in SWIN_NAMES for n in args.names) else None
    except ToolError as e:
        print(f"parity_official.py: error: {e}", file=sys.stderr)
        return 2
    import timm

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    torch.manual_seed(args.seed)
    dyvit, dylvvit, timm_note = import_official(root)
    report: dict[str, Any] = {
        "command": "python tools/parity_official.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "official": {"path": str(root), **{f: file_digest(root / f) for f in REQUIRED_FILES},
                     **({CNN_FILE: file_digest(root / CNN_FILE)} if cnn is not None else {}),
                     **({SWIN_FILE: file_digest(root / SWIN_FILE)} if swin is not None else {})},
        "shims": {"utils": "tool-provided module with batch_index_select (official utils.py needs torch._six and "
                           "tensorboardX)", "timm": timm_note},
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        "keep_ratio": args.keep_ratio, "reduced": args.reduced, "seed": args.seed,
        "predictor_gain": args.predictor_gain,
        "logit_tolerance": LOGIT_TOL, "logit_scale": "max |official logit| over the images",
        "min_keep_gap": "smallest official log p(keep) of the last kept minus the first dropped token, per stage",
        "models": {},
    }
    for name in args.names:
        if name in CNN_NAMES:
            assert cnn is not None
            report["models"][name] = check_cnn(name, args, root, cnn, log)
        elif name in SWIN_NAMES:
            assert swin is not None
            report["models"][name] = check_swin(name, args, root, swin, log)
        else:
            report["models"][name] = check_one(name, args, root, (dyvit, dylvvit), log)
    report["all_match"] = all(r["match"] for r in report["models"].values())
    print(markdown_table(report))
    print()
    swin_batches = {tuple(r["official_eval_batches"]) for r in report["models"].values()
                    if "official_eval_batches" in r}
    if swin_batches:
        print(f"note: official Swin eval forward run in batches of {' / '.join(str(list(b)) for b in swin_batches)} "
              "(models/dyswin.py BasicLayer.forward tests len(x) == 2 for its training pair, so it fails on an eval "
              "batch of 2 images)")
    print("all match" if report["all_match"] else "MISMATCH: see the rows marked no")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["all_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
