"""Training the spatially sparsified models (T-PAMI DynamicViT: DynamicCNN on ConvNeXt, DynamicSwin on Swin) as the
official main.py does for --model convnext-*/swin-*:

- the student starts from its dense teacher's weights (main.py loads the same pretrained file into both); the
  predictors and fast paths, which the teacher lacks, keep their initialisation;
- the loss is losses.ConvNextDistillDiffPruningLoss (pipeline.spatial.losses.spatial_distill_loss): CE 1, keep-ratio
  10 against rho, rho - 0.2, rho - 0.4, KL(teacher || student) 0.5 and the final feature map's MSE 0.5; the weights
  come from TrainConfig.loss, which recipe.train_config sets to these for a spatial --model;
- the optimiser's groups are optim_factory.get_parameter_groups': parameters named 'fast' or 'predictor' (the new
  modules) at the full rate, every other one at --backbone-lr-scale (the README trains every ConvNeXt and Swin with
  --lr_scale 0.2, the recipe's default for them); no weight decay on 1-D tensors and biases only (main.py passes
  model.no_weight_decay(), exact names, none of which these models' decayed tensors carry). Not reproduced:
  main.py's fix_step, which holds the backbone's rate at 0 for its first 5 epochs of 120.

The dense teacher is trained here too (the official code takes Facebook's and Microsoft's released ones): every
parameter at the full rate, and Swin's relative-position bias tables without weight decay, as Swin's own training
(no_weight_decay_keywords) does.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import article, check_family, extract_state_dict, is_ours, load_weights, read_checkpoint
from ..config import FAMILY_NAMES, TrainConfig
from ..errors import CheckpointError, ConfigError
from ..spatial.config import SpatialConfig, spatial_config
from ..spatial.convnext import CNNTrainOutput, check_convnext_config
from ..spatial.load import SpatialModel, build_spatial, family_loader, head_classes, sparse_key_of
from ..spatial.losses import spatial_distill_loss
from ..spatial.swin import DynamicSwin, check_swin_config, checkpoint_architecture


def spatial_model_config(name: str, *, dense: bool, keep_ratio: float | None, pruning_loc: tuple[int, ...] | None,
                         img_size: int | None, in_chans: int | None, drop_path: float | None) -> SpatialConfig:
    """A spatial preset with what the command line changes, refused in one line (ConfigError) where the model
    could not be built: a ratio that leaves a pruning location nothing, a size the stages or windows do not take."""
    if dense and (keep_ratio is not None or pruning_loc is not None):
        raise ConfigError("--keep-ratio/--pruning-loc apply to a student; drop them for --mode teacher")
    cfg = spatial_config(name, dense=dense)
    changes: dict[str, Any] = {}
    if keep_ratio is not None:
        changes["keep_ratio"] = keep_ratio
    if pruning_loc is not None:
        changes["pruning_loc"] = tuple(pruning_loc)
    if img_size is not None:
        changes["img_size"] = img_size
    if in_chans is not None:
        changes["in_chans"] = in_chans
    if drop_path is not None:
        changes["drop_path_rate"] = float(drop_path)
    cfg = cfg.replace(**changes) if changes else cfg  # SpatialConfig.validate: one replace, checked as a whole
    check_buildable(cfg)
    return cfg


def check_buildable(cfg: SpatialConfig) -> None:
    """What the model's constructor would refuse, said before any data is read."""
    if cfg.family == "convnext":
        check_convnext_config(cfg)
    else:
        check_swin_config(cfg)


# ---- checkpoints: the teacher and --init-from ----
def file_family(obj: dict[str, Any], sd: dict[str, Tensor]) -> str:
    """convnext, swin, swinv2, deit, lvvit, vit or unknown: what our file's config says, else its key names."""
    if is_ours(obj):
        return str(obj["config"].get("family", "deit"))
    arch = checkpoint_architecture(sd)
    return "swin" if arch == "swin-timm" else arch


def stem_channels(sd: dict[str, Tensor]) -> int | None:
    """Input channels of the first convolution: ConvNeXt's stem (official or timm) or Swin's patch embedding."""
    for k in ("downsample_layers.0.0.weight", "stem.0.weight", "patch_embed.proj.weight"):
        if k in sd and sd[k].ndim == 4:
            return int(sd[k].shape[1])
    return None


def check_input(sd: dict[str, Tensor], cfg: SpatialConfig, source: str, role: str) -> None:
    """Refuse a file made for another channel count, naming the flag that fits it."""
    chans = stem_channels(sd)
    if chans is not None and chans != cfg.in_chans:
        raise CheckpointError(f"{source} takes {chans}-channel images and '{cfg.name}' here {cfg.in_chans}: pass "
                              f"--in-chans {chans}, or {role} a checkpoint made for {cfg.in_chans}-channel images")


def check_ours_as_teacher(file_cfg: SpatialConfig, want: SpatialConfig, source: str) -> None:
    """Our teacher file against the dense model the student distils from: dense, same architecture and input."""
    fix = "or drop --teacher to train one first"
    if not file_cfg.is_dense:
        raise CheckpointError(f"{source} is a pruned student ({len(file_cfg.pruning_loc)} pruning locations), not a "
                              f"dense teacher: pass the dense teacher (written by 'dvit train --mode teacher --model "
                              f"{want.name}'), {fix}")
    arch = ("depths", "dims", "num_heads", "window_size")
    if any(getattr(file_cfg, k) != getattr(want, k) for k in arch):
        raise CheckpointError(f"{source} holds a '{file_cfg.name}' model (dims {list(file_cfg.dims)}, depths "
                              f"{list(file_cfg.depths)}), not the dense '{want.name}' (dims {list(want.dims)}, depths "
                              f"{list(want.depths)}) the student distils from: pass a teacher of the student's "
                              f"architecture, {fix}")
    if (file_cfg.in_chans, file_cfg.img_size) != (want.in_chans, want.img_size):
        raise CheckpointError(f"{source} was trained on {file_cfg.in_chans}x{file_cfg.img_size}x{file_cfg.img_size} "
                              f"images and the student takes {want.in_chans}x{want.img_size}x{want.img_size}: pass "
                              f"--img-size {file_cfg.img_size} --in-chans {file_cfg.in_chans}, {fix}")


def check_spatial_teacher(path: str | os.PathLike[str], student: SpatialConfig) -> None:
    """Every refusal of a teacher file, one line each, before the run reads data or writes anything: another
    family (a ConvNeXt teacher for a Swin student), a pruned student, another architecture, input or class count."""
    obj = read_checkpoint(path)
    sd = extract_state_dict(obj)
    want = student.as_dense()
    source = f"teacher checkpoint {path}"
    check_family(file_family(obj, sd), want, source, "--teacher")
    if is_ours(obj):
        check_ours_as_teacher(SpatialConfig.from_dict(obj["config"]), want, source)
    check_input(sd, want, source, "--teacher")
    classes = head_classes(sd)
    if classes is not None and classes != want.num_classes:
        raise CheckpointError(f"{source} has {classes} classes and the data {want.num_classes}: pass a teacher "
                              "trained on this data, or drop --teacher to train one first")


def load_spatial_teacher(path: str | os.PathLike[str], student: SpatialConfig) -> SpatialModel:
    """The dense teacher a spatial student distils from, in eval mode: ours, or an official release (Facebook
    ConvNeXt, Microsoft Swin, timm); the loaders refuse, one line, what the checks above cannot see."""
    check_spatial_teacher(path, student)
    model: SpatialModel = family_loader(student.family)(path, student.as_dense())
    return model.eval()


def check_init_spec(spec: str, cfg: SpatialConfig) -> None:
    """timm:<model> names timm's ViT weights (checkpoint.timm_pretrained_state_dict): refused for a spatial model."""
    if spec.startswith("timm:"):
        family = FAMILY_NAMES[cfg.family]
        raise ConfigError(f"--init-from timm:<model> fetches ViT weights, and '{cfg.name}' is {article(family)} "
                          f"{family} model: pass {article(family)} {family} checkpoint file, or drop --init-from")


def init_spatial_from(model: SpatialModel, spec: str, notes: list[str]) -> None:
    """--init-from for a spatial model: an official DynamicCNN/DynamicSwin release, a dense Facebook ConvNeXt,
    Microsoft Swin or timm file, or ours. Predictors and fast paths a dense file lacks keep the model's own
    initialisation, and a head for other classes starts fresh (fine-tuning on new data), each said in `notes`."""
    cfg = model.cfg
    check_init_spec(spec, cfg)
    obj = read_checkpoint(spec)
    sd = extract_state_dict(obj)
    source = f"checkpoint {spec}"
    check_family(file_family(obj, sd), cfg, source, "--init-from")
    check_input(sd, cfg, source, "--init-from")
    classes = head_classes(sd) or cfg.num_classes
    sparse = sparse_key_of(cfg.family)
    file_sparse = any(sparse(k) for k in sd)
    # The loaders check layout, architecture and buffers, one line each; a dense file may start a sparse model.
    state = family_loader(cfg.family)(spec, cfg.replace(num_classes=classes), from_dense=True).state_dict()
    fresh = {k for k in state if k.startswith("head.")} if classes != cfg.num_classes else set()
    if not file_sparse:
        fresh |= {k for k in state if sparse(k)}
    load_weights(model, {k: v for k, v in state.items() if k not in fresh}, allow_missing=tuple(sorted(fresh)),
                 source=source)
    if classes != cfg.num_classes:
        notes.append(f"init: {spec}'s head for {classes} classes replaced by a fresh one for {cfg.num_classes}")
    if not file_sparse and cfg.pruning_loc:
        notes.append(f"init: {spec} is dense: the predictors and fast paths start from their initialisation")


def start_from_teacher(model: SpatialModel, teacher: SpatialModel) -> None:
    """The student takes every weight of its dense teacher (official main.py loads the teacher's file into both);
    only the new modules keep their initialisation."""
    sparse = sparse_key_of(model.cfg.family)
    load_weights(model, teacher.state_dict(), allow_missing=tuple(k for k in model.state_dict() if sparse(k)),
                 source="the teacher")


# ---- optimiser ----
def spatial_param_groups(model: SpatialModel, cfg: TrainConfig, student: bool) -> list[dict[str, Any]]:
    """AdamW groups as the module docstring says: (new modules | backbone) x (decay | none)."""
    sparse = sparse_key_of(model.cfg.family)
    keywords = model.no_weight_decay_keywords() if isinstance(model, DynamicSwin) and not student else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in keywords)
        groups.setdefault((no_decay, not sparse(name)), []).append(p)
    out = []
    for (no_decay, backbone), params in groups.items():
        scale = cfg.backbone_lr_scale if (student and backbone) else 1.0
        out.append({"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr_scale": scale,
                    "lr": cfg.lr * scale})
    return out


# ---- one micro-batch ----
def predictor_noise(model_cfg: SpatialConfig, noise: list[Tensor]) -> list[Tensor]:
    """The step's Gumbel draws [B, N, 2] per location (optim.gumbel_noise_for, shared with token pruning) in the
    predictor's shape: ConvNeXt's scores [keep, drop] along the channels of [B, 2, H, W], Swin's along the last
    dimension of [B, N, 2]."""
    if model_cfg.family == "swin":
        return noise
    g = model_cfg.sparse_grid
    return [n.permute(0, 2, 1).reshape(n.shape[0], 2, g, g) for n in noise]


def dense_step(ddp_model: nn.Module, xs: Tensor, target: Tensor, classification: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """The dense teacher's cross-entropy on its inference pass (what forward returns without pruning locations)."""
    loss = classification(ddp_model(xs), target)
    return loss, {"total": loss.detach(), "ce": loss.detach()}


def student_step(ddp_model: nn.Module, teacher: SpatialModel, model_cfg: SpatialConfig, cfg: TrainConfig, xs: Tensor,
                 target: Tensor, noise: list[Tensor], classification: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """The distillation loss of one micro-batch and its terms (detached, 'kept': the last location's slow-path
    share) for the log."""
    with torch.no_grad():
        t_logits, t_featmap = teacher.forward_teacher(xs)
    o = ddp_model(xs, predictor_noise(model_cfg, noise))
    featmap = o.featmap if isinstance(o, CNNTrainOutput) else o.tokens
    lt = spatial_distill_loss(o.logits, featmap, o.decisions, target, t_logits, t_featmap, model_cfg.stage_ratios,
                              cfg.loss, ce=classification)
    terms = {k: v.detach() for k, v in vars(lt).items()}
    terms["kept"] = o.decisions[-1].mean().detach()
    return lt.total, terms


__all__ = ["build_spatial", "check_init_spec", "check_spatial_teacher", "dense_step", "init_spatial_from",
           "load_spatial_teacher", "spatial_model_config", "spatial_param_groups", "start_from_teacher",
           "student_step"]
