"""`dvit train` flags: a recipe supplies every default, any flag overrides it."""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..config import AMP_MODES, AUGMENT_POLICIES, LOADERS, PRESETS, TOKEN_PRUNING, ModelConfig, model_config
from ..errors import ConfigError
from ..spatial.config import SPATIAL_PRESETS, SpatialConfig
from .recipe import RECIPES, model_settings, spatial_note, train_config

MODELS = sorted(PRESETS) + sorted(SPATIAL_PRESETS)

EPILOG = """\
recipes (every value can be overridden by its flag):
""" + "\n".join(f"  {r.name:6s} {r.summary}" for r in RECIPES.values()) + """

data paths: 'auto' keeps small data with the shift-flip augmentation in memory and streams the rest (or
anything with --augment timm) through --workers decoding processes; the log says which and why. An
unreadable image met while streaming is skipped with a warning naming it and counted in metrics.json
(skipped_images); more than 1% of an epoch stops the run.

any input: --img-size and --in-chans compose with every --model (the patch grid follows the size); images of
any size and colour are turned into that input, and the log's 'data:' line says how. Classes come from the data.
A teacher or --init-from checkpoint made for another input size or channel count is refused unless
--interpolate-pos-embed resamples its position embeddings (bicubic) and adapts its first convolution, as timm does.
--mode student without --teacher trains the dense teacher first, into OUT/teacher, then distils from it.

spatial sparsification (T-PAMI DynamicViT): --model convnext-t|s|b, swin-t|s|b, or the small convnext-fmnist and
swin-fmnist (Fashion-MNIST at 64x64) train DynamicCNN/DynamicSwin the same way: the student starts from its dense
teacher's weights and is distilled with the official loss (CE 1, keep ratio 10 against rho, rho-0.2, rho-0.4, KL 0.5,
feature-map MSE 0.5; rho above 0.4), predictors and fast paths at --lr, the backbone at 0.2 x --lr.

many GPUs and nodes: run the same command on every node; it starts torchrun with the c10d rendezvous, e.g.
  dvit train --recipe deit --model deit_small_patch16_224 --data /data/imagenet --teacher T.pt --out runs/s \\
      --nnodes 2 --nproc-per-node 4 --rdzv-endpoint node0:29500
(or start `torchrun ... -m pipeline.cli train ...` yourself). --batch-size is the global batch, split over
processes and --accum-steps micro-batches."""


def _block_indices(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 3,6,9, got '{s}'") from None


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--mode", choices=["teacher", "student"], default="student",
                   help="teacher: dense ViT with cross-entropy; student: DynamicViT distilled from --teacher, or from a "
                   "teacher it trains first when none is given (default)")
    p.add_argument("--model", default="fmnist_tiny", choices=MODELS, metavar="MODEL",
                   help=f"architecture preset (default fmnist_tiny): one of {', '.join(MODELS)}")
    p.add_argument("--img-size", type=int, default=None, metavar="N",
                   help="input size N x N for any --model (a multiple of its patch size; default: the preset's)")
    p.add_argument("--in-chans", type=int, default=None, choices=(1, 3), metavar="C",
                   help="input channels: 1 (grey) or 3 (RGB); images are converted to it (default: the preset's)")
    p.add_argument("--num-classes", type=int, default=None, metavar="K",
                   help="the classes are always taken from the data; given, K is checked against it")
    p.add_argument("--out", required=True, help="output directory: last.pt (resumable), model.pt, metrics.json/.csv")
    p.add_argument("--data", default=None, help="'fashion-mnist' (default), a directory of idx.gz files, an ImageFolder, or train/+val/ folders")
    p.add_argument("--teacher", help="dense teacher checkpoint (ours, official/Token Labeling or timm/DeiT) for distillation; "
                   "its weights also initialise the student. Without it a student trains its teacher first, into OUT/teacher")
    p.add_argument("--teacher-epochs", type=int, default=None, metavar="N",
                   help="epochs of the teacher a student trains for itself when no --teacher is given (default: --epochs)")
    p.add_argument("--init-from", help="initial weights: an official DynamicViT, timm/DeiT or dvit-edge checkpoint file, or "
                   "timm:<model> to download timm's pretrained weights (only then is the network used); a head for other "
                   "classes starts fresh. With no --teacher it initialises the teacher trained first")
    p.add_argument("--interpolate-pos-embed", action="store_true",
                   help="let a --teacher/--init-from checkpoint of another input size or channel count in: resample its "
                   "position embeddings (bicubic) and adapt its first convolution, as timm does")
    p.add_argument("--drop-path", type=float, default=None, metavar="RATE",
                   help="stochastic depth rate (default: the recipe's for --model, e.g. deit: 0.2 for deit-b; else 0)")
    p.add_argument("--keep-ratio", type=float, default=None,
                   help="rho: stages keep rho, rho^2, rho^3 of the tokens (default 0.7); ConvNeXt/Swin: rho, rho-0.2, "
                   "rho-0.4 of the positions take the slow path, so rho must exceed 0.4")
    p.add_argument("--pruning-loc", type=_block_indices, default=None,
                   help="blocks before which to prune, e.g. 3,6,9 (default: quarters of the depth); ConvNeXt/Swin: "
                   "block indices within the third stage (default: the preset's)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="small", help="where every default below comes from (default small)")

    o = p.add_argument_group("schedule and optimiser (recipe defaults)")
    o.add_argument("--epochs", type=int)
    o.add_argument("--batch-size", type=int, help="global batch, split over torchrun processes and accumulation steps")
    o.add_argument("--lr", type=float, help="peak learning rate of the prediction modules (deit: 1e-3 x batch/1024)")
    o.add_argument("--min-lr", type=float)
    o.add_argument("--warmup-epochs", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--backbone-lr-scale", type=float, help="student backbone learning rate relative to --lr (paper: 0.01)")
    o.add_argument("--clip-grad", type=float, help="gradient norm clip; 0 disables")
    o.add_argument("--label-smoothing", type=float)
    o.add_argument("--ema-decay", type=float, help="keep an exponential moving average of the weights (deit: 0.9999; 0 off)")
    o.add_argument("--accum-steps", type=int, help="micro-batches per optimiser step, when the global batch does not fit")
    o.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA (auto: bf16, fp16 where bf16 is missing; off on CPU)")
    o.add_argument("--seed", type=int)
    o.add_argument("--token-pruning", choices=TOKEN_PRUNING,
                   help="how a token-pruning student trains: mask (default; the paper: every token kept, dropped ones "
                   "masked out of attention) or delete (dropped tokens removed, as at inference: cheaper steps); "
                   "see README, 'Mask or delete while training'")
    o.add_argument("--mask-epochs", type=int, help="with --token-pruning delete: mask for the first N epochs")

    a = p.add_argument_group("data and augmentation (recipe defaults)")
    a.add_argument("--loader", choices=LOADERS, help="in memory, streamed, or chosen by size (auto)")
    a.add_argument("--workers", type=int, help="decoding processes per training process when streaming (default: from the cores)")
    a.add_argument("--augment", dest="policy", choices=AUGMENT_POLICIES, help="shift-flip (small), timm (deit) or none")
    a.add_argument("--no-augment", action="store_true", help="same as --augment none")
    a.add_argument("--auto-augment", help="timm policy string (deit: rand-m9-mstd0.5-inc1)")
    a.add_argument("--color-jitter", type=float)
    a.add_argument("--interpolation", choices=["bicubic", "bilinear", "random"])
    a.add_argument("--reprob", dest="re_prob", type=float, help="random erasing probability (deit: 0.25)")
    a.add_argument("--mixup", type=float, help="Mixup alpha (deit: 0.8; 0 off)")
    a.add_argument("--cutmix", type=float, help="CutMix alpha (deit: 1.0; 0 off)")
    a.add_argument("--mixup-prob", type=float)
    a.add_argument("--mixup-switch-prob", type=float)
    a.add_argument("--crop-pct", type=float, help="evaluation centre crop (deit: 0.875)")
    a.add_argument("--normalization", choices=["dataset", "imagenet"], help="the data's mean/std or ImageNet's (deit)")

    w = p.add_argument_group("loss weights (recipe defaults; paper: 1, 0.5, 0.5, 2.0; ConvNeXt/Swin: 1, 0.5, 0.5, 10)")
    w.add_argument("--w-ce", type=float)
    w.add_argument("--w-distill", type=float, help="KL(teacher||student) weight")
    w.add_argument("--w-token", type=float, help="token MSE weight (ConvNeXt/Swin: the final feature map's MSE)")
    w.add_argument("--w-ratio", type=float, help="keep-ratio loss weight")

    r = p.add_argument_group("run control")
    r.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    r.add_argument("--train-subset", type=int, default=None, help="train on a deterministic subset of this many images")
    r.add_argument("--eval-subset", type=int, default=None, help="evaluate each epoch on this many test images")
    r.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (model, optimiser, schedule, RNG)")
    r.add_argument("--stop-after-epochs", type=int, default=None,
                   help="train this many epochs of the schedule now and stop (continue later with --resume)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    r.add_argument("--no-progress", action="store_true")

    d = p.add_argument_group("many processes (torchrun's flags; run the same command on every node)")
    d.add_argument("--nproc-per-node", type=int, help="start this many training processes here under torchrun (one per GPU)")
    d.add_argument("--nnodes", default="1", help="number of nodes (default 1)")
    d.add_argument("--rdzv-endpoint", help="HOST:PORT every node can reach, for the c10d rendezvous (one node: omit)")
    d.add_argument("--rdzv-id", default="dvit-train", help="job id shared by the nodes of one run")


OVERRIDES = ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "backbone_lr_scale", "clip_grad",
             "label_smoothing", "ema_decay", "accum_steps", "amp", "seed", "loader", "workers", "policy", "auto_augment",
             "color_jitter", "interpolation", "re_prob", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob",
             "crop_pct", "normalization", "w_ce", "w_distill", "w_token", "w_ratio", "max_steps_per_epoch",
             "train_subset", "eval_subset", "token_pruning", "mask_epochs")


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in OVERRIDES}
    if args.no_augment:
        if given["policy"] not in (None, "none"):
            raise ConfigError(f"--no-augment contradicts --augment {given['policy']}: pass one of them")
        given["policy"] = "none"
    return given


def main(args: argparse.Namespace) -> int:
    import torch

    from .loop import train

    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:
        from .launch import launch

        if args.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
        if args.nnodes != "1" and not args.rdzv_endpoint:
            raise ConfigError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT that every node can reach")
        return launch(args._argv, args.nproc_per_node, args.nnodes, args.rdzv_endpoint, args.rdzv_id)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {args.num_classes}: or drop it (the data says)")
    mcfg = run_model_config(args)
    tcfg, lr_note = train_config(args.recipe, overrides_of(args), model=args.model)
    log = [f"recipe {args.recipe}: {lr_note}"]
    if isinstance(mcfg, SpatialConfig):
        log.append(f"recipe {args.recipe}: {spatial_note(tcfg)}")
    result = train(mcfg, tcfg, args.out, teacher_path=args.teacher, init_from=args.init_from, data=args.data,
                   resume=args.resume, progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs,
                   interpolate_pos_embed=args.interpolate_pos_embed, num_classes=args.num_classes,
                   teacher_epochs=args.teacher_epochs, log=log)
    if "checkpoint" in result:
        print(f"wrote {result['checkpoint']}")
    return 0


def run_model_config(args: argparse.Namespace) -> ModelConfig | SpatialConfig:
    """The model the flags ask for, of either family; every refusal one line (ConfigError)."""
    dense = args.mode == "teacher"
    drop_path = args.drop_path if args.drop_path is not None else model_settings(args.recipe, args.model).drop_path_rate
    if drop_path is not None and not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"--drop-path {drop_path} is outside [0, 1): DeiT-B uses 0.2, 0 disables it")
    if args.model in SPATIAL_PRESETS:
        from .spatial import spatial_model_config

        return spatial_model_config(args.model, dense=dense, keep_ratio=args.keep_ratio, pruning_loc=args.pruning_loc,
                                    img_size=args.img_size, in_chans=args.in_chans, drop_path=drop_path)
    if dense and (args.keep_ratio is not None or args.pruning_loc is not None):
        raise ConfigError("--keep-ratio/--pruning-loc apply to a student; drop them for --mode teacher")
    if args.img_size is not None:
        check_img_size(args.img_size, args.model)
    mcfg = model_config(args.model, keep_ratio=args.keep_ratio, pruning_loc=args.pruning_loc, dense=dense,
                        img_size=args.img_size, in_chans=args.in_chans)
    if drop_path is not None:
        mcfg = mcfg.replace(drop_path_rate=float(drop_path))
    return mcfg


def check_img_size(img_size: int, model: str) -> None:
    """One line naming the nearest sizes that divide into the model's patches (ModelConfig would say less)."""
    patch = PRESETS[model].patch_size if model in PRESETS else None
    if patch is None or (img_size >= patch and img_size % patch == 0):
        return
    below = (img_size // patch) * patch
    near = [n for n in (below, below + patch) if n >= patch] or [patch]
    raise ConfigError(f"--img-size {img_size} does not divide into {model}'s {patch}x{patch} patches: pass --img-size "
                      f"{' or '.join(map(str, near))}")
