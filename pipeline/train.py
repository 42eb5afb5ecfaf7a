"""`dvit train`: a dense teacher, or a DynamicViT student distilled from it.

Distributed runs go through torchrun (DistributedDataParallel; NCCL on GPUs, Gloo on CPU). Data order,
augmentation and Gumbel noise derive from (seed, epoch, step) for the *global* batch and each rank takes its
slice, so a 2-process run draws exactly what a 1-process run with the same global batch draws.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import init_from_pretrained, load_model, read_checkpoint, save_checkpoint
from .config import PRESETS, LossWeights, ModelConfig, TrainConfig, model_config
from .data import TrainBatches, load_dataset
from .errors import CheckpointError, ConfigError
from .io import atomic_write_json, atomic_write_text, ensure_writable_dir
from .losses import dynamicvit_loss
from .measure import accuracy
from .model import DynamicViT, TrainOutput


class Dist:
    """Rank and world of this process; a single process when not started by torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend=backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def param_groups(model: DynamicViT, cfg: TrainConfig, student: bool) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings; a student's backbone learns at backbone_lr_scale."""
    skip = model.no_weight_decay()
    predictor_ids = {id(p) for p in model.predictor_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name in skip
        is_backbone = id(p) not in predictor_ids
        groups.setdefault((no_decay, is_backbone), []).append(p)
    out = []
    for (no_decay, is_backbone), params in groups.items():
        scale = cfg.backbone_lr_scale if (student and is_backbone) else 1.0
        out.append(
            {"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr_scale": scale,
             "lr": cfg.lr * scale}
        )
    return out


def lr_factor(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up, then cosine from base down to floor; returned relative to base."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    lr = floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr / base


def gumbel_noise_for(step_seed: int, global_batch: int, num_patches: int, stages: int, offset: int, local: int) -> list[Tensor]:
    """This rank's slice of the global batch's Gumbel noise for every pruning stage."""
    g = torch.Generator().manual_seed(step_seed)
    out = []
    for _ in range(stages):
        u = torch.rand(global_batch, num_patches, 2, generator=g).clamp_(1e-10, 1.0)
        out.append(-torch.log(-torch.log(u))[offset : offset + local])
    return out


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    teacher_path: str | None = None,
    init_from: str | None = None,
    data: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train and return the final metrics; writes last.pt (every epoch), model.pt and metrics logs to out_dir."""
    cfg.validate()
    student = not model_cfg.is_dense
    if student and teacher_path is None:
        raise ConfigError("a DynamicViT student needs a dense teacher: pass --teacher CKPT (see 'make teacher')")
    dd = Dist()
    out = Path(out_dir)
    if dd.is_main:
        ensure_writable_dir(out)
    device = torch.device(f"cuda:{dd.local_rank}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    train_set = load_dataset(data, "train", model_cfg.in_chans, model_cfg.img_size).subset(cfg.train_subset, cfg.seed)
    test_set = load_dataset(data, "test", model_cfg.in_chans, model_cfg.img_size).subset(cfg.eval_subset, cfg.seed)
    if train_set.in_chans != model_cfg.in_chans or train_set.img_size != model_cfg.img_size:
        raise ConfigError(
            f"data has {train_set.in_chans}x{train_set.img_size}x{train_set.img_size} images but model "
            f"'{model_cfg.name}' expects {model_cfg.in_chans}x{model_cfg.img_size}x{model_cfg.img_size}: choose a matching --model"
        )
    if len(train_set.classes) != model_cfg.num_classes:
        model_cfg = model_cfg.replace(num_classes=len(train_set.classes))

    teacher: DynamicViT | None = None
    if student:
        assert teacher_path is not None
        teacher = load_model(teacher_path, expect=model_cfg.as_dense()).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    model = DynamicViT(model_cfg)
    if init_from:
        init_from_pretrained(model, init_from)
    elif teacher is not None:
        model.load_state_dict(teacher.state_dict(), strict=False)  # backbone from the teacher; predictors fresh
    model.to(device)

    batches = TrainBatches(train_set, cfg.batch_size, cfg.seed, cfg.augment, dd.rank, dd.world)
    steps_per_epoch = batches.steps_per_epoch()
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ConfigError(f"batch size {cfg.batch_size} exceeds the {len(train_set)} training images: lower --batch-size")
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    optimizer = torch.optim.AdamW(param_groups(model, cfg, student), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.lr, cfg.min_lr)
    )
    start_epoch, history = 0, []
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise CheckpointError(f"--resume given but {last} does not exist: drop --resume to start fresh")
        state = read_checkpoint(last)
        if state.get("config") != model_cfg.to_dict():
            raise CheckpointError(f"{last} was written for another model configuration: use another --out or drop --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, history = int(state["epoch"]) + 1, list(state.get("history", []))

    ddp_model: nn.Module = model
    if dd.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[dd.local_rank] if device.type == "cuda" else None)
    use_amp = cfg.amp in ("auto", "bf16") and device.type == "cuda"

    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress and dd.is_main)
        for step, (x, y, offset) in enumerate(batches.epoch(epoch)):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if teacher is None:
                    o: TrainOutput = ddp_model(x)
                    loss = F.cross_entropy(o.logits, y, label_smoothing=cfg.label_smoothing)
                    terms = {"total": loss.detach(), "ce": loss.detach()}
                else:
                    noise = gumbel_noise_for(
                        cfg.seed * 1_000_003 + epoch * 100_003 + step, cfg.batch_size, model_cfg.num_patches,
                        len(model_cfg.pruning_loc), offset - step * cfg.batch_size, batches.local_batch,
                    )
                    with torch.no_grad():
                        t_logits, t_tokens = teacher.forward_teacher(x)
                    o = ddp_model(x, [n.to(device) for n in noise])
                    lt = dynamicvit_loss(o, y, t_logits, t_tokens, model_cfg.stage_ratios, cfg.loss, cfg.label_smoothing)
                    loss = lt.total
                    terms = {k: v.detach() for k, v in vars(lt).items()}
                    terms["kept"] = o.decisions[-1].mean().detach()  # last stage's kept fraction
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            scheduler.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if epoch == start_epoch == 0 and step == 0:
                first_step = {k: dd.mean(float(v)) for k, v in terms.items()}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if bar is not None:
            bar.close()
        means = {f"train_{k}": dd.mean(v / steps_per_epoch) for k, v in sums.items()}
        record: dict[str, Any] = {"epoch": epoch + 1, **means, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - t0}
        if epoch == 0 and start_epoch == 0:
            record["first_step"] = first_step
        if dd.is_main:
            model.eval()
            top1, top5 = accuracy(model, test_set, device=device)
            record.update(test_top1=top1, test_top5=top5)
            history.append(record)
            _write_logs(out, history)
            save_checkpoint(
                last, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), epoch=epoch,
                rng=_rng_state(), history=history, train_config=cfg.to_dict(),
            )
            print(_epoch_line(record), file=sys.stderr, flush=True)
        dd.barrier()

    result: dict[str, Any] = {"history": history}
    if dd.is_main and end_epoch == cfg.epochs:
        final = history[-1] if history else {}
        save_checkpoint(out / "model.pt", model, history=history, train_config=cfg.to_dict(), metrics=final)
        result.update(final=final, checkpoint=str(out / "model.pt"))
        atomic_write_json(out / "summary.json", {"model_config": model_cfg.to_dict(), "train_config": cfg.to_dict(),
                                                 "final": final, "teacher": teacher_path, "world_size": dd.world})
    dd.close()
    return result


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)


def _epoch_line(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}", f"loss {r.get('train_total', float('nan')):.4f}"]
    if "test_top1" in r:
        parts.append(f"test top-1 {r['test_top1']:.2f}%")
    if "train_kept" in r:
        parts.append(f"last-stage keep {r['train_kept']:.3f}")
    parts.append(f"{r['seconds']:.0f}s")
    return " | ".join(parts)


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_json(out / "metrics.json", history)
    keys = sorted({k for r in history for k, v in r.items() if not isinstance(v, dict)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in history:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(out / "metrics.csv", buf.getvalue())


# ---------------- CLI ----------------
def _block_indices(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 3,6,9, got '{s}'") from None


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["teacher", "student"], default="student",
                   help="teacher: dense ViT with cross-entropy; student: DynamicViT distilled from --teacher (default)")
    p.add_argument("--model", default="fmnist_tiny", choices=sorted(PRESETS), help="architecture preset (default fmnist_tiny)")
    p.add_argument("--out", required=True, help="output directory: last.pt (resumable), model.pt, metrics.json/.csv")
    p.add_argument("--data", default=None, help="'fashion-mnist' (default), a directory of idx.gz files, an ImageFolder, or train/+val/ folders")
    p.add_argument("--teacher", help="dense teacher checkpoint (ours) for distillation; its weights also initialise the student")
    p.add_argument("--init-from", help="initial weights: an official DynamicViT, timm/DeiT or dvit-edge checkpoint file, or "
                   "timm:<model> to download timm's pretrained weights (only then is the network used)")
    p.add_argument("--keep-ratio", type=float, default=None, help="rho: stages keep rho, rho^2, rho^3 of the tokens (default 0.7)")
    p.add_argument("--pruning-loc", type=_block_indices, default=None, help="blocks before which to prune, e.g. 3,6,9 (default: quarters of the depth)")
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch, split over torchrun processes")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (the prediction modules' for a student)")
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--backbone-lr-scale", type=float, default=d.backbone_lr_scale,
                   help="student backbone learning rate relative to --lr (paper: 0.01)")
    p.add_argument("--clip-grad", type=float, default=d.clip_grad)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    w = LossWeights()
    p.add_argument("--w-ce", type=float, default=w.ce)
    p.add_argument("--w-distill", type=float, default=w.distill_kl, help="KL(teacher||student) weight (paper 0.5)")
    p.add_argument("--w-token", type=float, default=w.distill_token, help="token MSE weight (paper 0.5)")
    p.add_argument("--w-ratio", type=float, default=w.ratio, help="keep-ratio loss weight (paper 2.0)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    p.add_argument("--train-subset", type=int, default=None, help="train on a deterministic subset of this many images")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate each epoch on this many test images")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (model, optimiser, schedule, RNG)")
    p.add_argument("--stop-after-epochs", type=int, default=None,
                   help="train this many epochs of the schedule now and stop (continue later with --resume)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    dense = args.mode == "teacher"
    if dense and (args.keep_ratio is not None or args.pruning_loc is not None):
        raise ConfigError("--keep-ratio/--pruning-loc apply to a student; drop them for --mode teacher")
    mcfg = model_config(args.model, keep_ratio=args.keep_ratio, pruning_loc=args.pruning_loc, dense=dense)
    if not dense and args.pruning_loc is None and mcfg.pruning_loc and max(mcfg.pruning_loc) >= mcfg.depth:
        raise ConfigError(f"default pruning locations do not fit depth {mcfg.depth}: pass --pruning-loc")
    tcfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay, backbone_lr_scale=args.backbone_lr_scale, clip_grad=args.clip_grad,
        seed=args.seed, label_smoothing=args.label_smoothing, augment=not args.no_augment,
        max_steps_per_epoch=args.max_steps_per_epoch, train_subset=args.train_subset, eval_subset=args.eval_subset,
        loss=LossWeights(ce=args.w_ce, distill_kl=args.w_distill, distill_token=args.w_token, ratio=args.w_ratio),
    )
    result = train(mcfg, tcfg, args.out, teacher_path=args.teacher, init_from=args.init_from, data=args.data,
                   resume=args.resume, progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs)
    if "checkpoint" in result:
        print(f"wrote {result['checkpoint']}")
    return 0

