"""The training loop: a dense teacher with cross-entropy, or a DynamicViT student distilled from it (a student
given no teacher trains its own first, into OUT/teacher). Token pruning (DeiT, LV-ViT: pipeline.model) and spatial
sparsification (ConvNeXt, Swin: pipeline.spatial, whose training parts are in .spatial) share it: the data, schedule,
accumulation, distribution, checkpoints and logs are the same; the model, its teacher, its optimiser groups and its
loss come from the family.

Distributed runs go through torchrun (DistributedDataParallel; NCCL on GPUs, Gloo on CPU). Data order,
augmentation, Mixup and Gumbel noise derive from (seed, epoch, step) for the *global* batch and each rank takes
its slice, so a 2-process run draws exactly what a 1-process run with the same global batch draws (Mixup pairs
images within each process's micro-batch, as DeiT does). A global batch that does not fit is cut into
--accum-steps micro-batches per process; their gradients add up before one optimiser step.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import init_from_pretrained, load_teacher, read_checkpoint, save_checkpoint
from ..config import ModelConfig, TrainConfig
from ..errors import CheckpointError, ConfigError, DataError, DvitError
from ..io import atomic_write_json, atomic_write_text, ensure_writable_dir
from ..losses import dynamicvit_loss
from ..measure import accuracy
from ..model import DynamicViT, TrainOutput
from ..spatial.config import SpatialConfig
from . import augment
from . import spatial as sp
from .distributed import Dist
from .optim import gumbel_noise_for, lr_factor, param_groups
from .progress import EpochClock, duration, progress_bar, starvation_warning
from .rng import rng_state, seeded, set_rng_state, step_seed
from .sources import data_classes, open_training_data

MAX_BAD_FRACTION = 0.01  # more unreadable images than this in an epoch stops the run
AnyModelConfig = ModelConfig | SpatialConfig


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ConfigError(f"--amp {cfg.amp} needs a CUDA device and this run is on {device.type}: drop --amp")
    if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _check_batch(cfg: TrainConfig, world: int, mixes: bool) -> int:
    """The micro-batch each process runs per forward pass."""
    if cfg.batch_size % (world * cfg.accum_steps):
        raise ConfigError(
            f"global batch {cfg.batch_size} is not divisible by {world} process(es) x {cfg.accum_steps} accumulation "
            "step(s): change --batch-size or --accum-steps"
        )
    micro = cfg.batch_size // (world * cfg.accum_steps)
    if mixes and micro % 2:
        raise ConfigError(f"Mixup/CutMix pairs images within a micro-batch, and {micro} is odd: make --batch-size "
                          "an even multiple of processes x --accum-steps")
    return micro


def _check_out(out: Path) -> None:
    """Refuse, creating nothing, an output directory that cannot be made: its nearest existing ancestor must be a
    writable directory. (Created later, once every other refusal has had its say.)"""
    p = out.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise DvitError(f"cannot write {out}: {p} is a file (errno ENOTDIR): choose a writable --out")
    if not os.access(p, os.W_OK):
        raise DvitError(f"cannot write {out}: {p} is not writable (errno EACCES): choose a writable --out")


def train(
    model_cfg: AnyModelConfig,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    teacher_path: str | None = None,
    init_from: str | None = None,
    data: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    interpolate_pos_embed: bool = False,
    num_classes: int | None = None,
    teacher_epochs: int | None = None,
    log: Sequence[str] = (),
) -> dict[str, Any]:
    """Train and return the final metrics; writes last.pt (every epoch), model.pt and metrics logs to out_dir.

    Classes come from the data (`num_classes`, when given, must agree). A student without `teacher_path` first
    trains its dense teacher on the same data and settings into out_dir/teacher (`teacher_epochs`, default
    cfg.epochs; initialised from `init_from`), then distils from it. A teacher or `init_from` of another input size
    or channel count is fitted only with `interpolate_pos_embed`. Every refusal comes before anything is written or
    logged (`log`: lines the log starts with once they are past, e.g. the recipe's choice of lr).

    A SpatialConfig trains DynamicCNN/DynamicSwin (see .spatial): cfg.loss weighs its objective too, and
    recipe.train_config gives a spatial model the official weights and backbone rate.
    """
    cfg.validate()
    student = not model_cfg.is_dense
    out = Path(out_dir)
    _check_out(out)
    if isinstance(model_cfg, SpatialConfig):
        _check_spatial_run(model_cfg, teacher_path, init_from, interpolate_pos_embed)
        if cfg.token_pruning != "mask":
            raise ConfigError(f"--token-pruning {cfg.token_pruning} removes tokens, and '{model_cfg.name}' keeps every "
                              "position (spatial sparsification): drop it")
    if teacher_epochs is not None and (not student or teacher_path is not None):
        raise ConfigError("--teacher-epochs sets the epochs of the teacher a student trains for itself (no --teacher): "
                          "drop it")
    if teacher_epochs is not None and teacher_epochs < 1:
        raise ConfigError(f"--teacher-epochs must be at least 1, got {teacher_epochs}")
    classes = data_classes(data)
    if num_classes is not None and num_classes != len(classes):
        shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
        raise ConfigError(f"--num-classes {num_classes} disagrees with the data, which has {len(classes)} classes "
                          f"({shown}): drop --num-classes (the classes come from the data) or pass the matching data")
    if len(classes) != model_cfg.num_classes:
        model_cfg = model_cfg.replace(num_classes=len(classes))
    dd = Dist()
    if student and teacher_path is None:
        own = _own_teacher(model_cfg, cfg, out, dd=dd, init_from=init_from, data=data, resume=resume,
                           progress=progress, stop_after_epochs=stop_after_epochs, interpolate=interpolate_pos_embed,
                           epochs=teacher_epochs or cfg.epochs, log=log)
        if isinstance(own, dict):  # --stop-after-epochs spent on the teacher
            dd.close()
            return own
        teacher_path, stop_after_epochs = own
        init_from = None  # the student starts from the teacher it distils from, which --init-from initialised
        resume = resume and (out / "last.pt").is_file()  # the student's part may not have begun before
        log = ()  # said before the teacher's part
    result = _train(model_cfg, cfg, out, dd=dd, teacher_path=teacher_path, init_from=init_from, data=data,
                    resume=resume, progress=progress, stop_after_epochs=stop_after_epochs,
                    interpolate=interpolate_pos_embed, log=log)
    dd.close()
    return result


def _check_spatial_run(model_cfg: SpatialConfig, teacher_path: str | None, init_from: str | None,
                       interpolate: bool) -> None:
    """A spatial run's refusals that need no data: they come before the data is read or anything is written."""
    if interpolate:
        raise ConfigError(f"--interpolate-pos-embed resamples ViT position embeddings, and '{model_cfg.name}' has "
                          "none: drop it (its weights take any input size its stages divide)")
    if init_from is not None:
        sp.check_init_spec(init_from, model_cfg)
    if teacher_path is not None:
        sp.check_spatial_teacher(teacher_path, model_cfg)


def _build(model_cfg: AnyModelConfig) -> nn.Module:
    return sp.build_spatial(model_cfg) if isinstance(model_cfg, SpatialConfig) else DynamicViT(model_cfg)


def _load_teacher(path: str, model_cfg: AnyModelConfig, interpolate: bool, notes: list[str]) -> nn.Module:
    """The dense teacher of the student's family, in eval mode, every refusal one line."""
    if isinstance(model_cfg, SpatialConfig):
        return sp.load_spatial_teacher(path, model_cfg)
    return load_teacher(path, model_cfg, interpolate=interpolate, notes=notes)


def _initialise(model: nn.Module, model_cfg: AnyModelConfig, init_from: str | None, teacher: nn.Module | None,
                interpolate: bool, notes: list[str]) -> None:
    """--init-from's weights, else a student's dense teacher's (its new modules keep their initialisation)."""
    if isinstance(model_cfg, SpatialConfig):
        if init_from:
            sp.init_spatial_from(cast(sp.SpatialModel, model), init_from, notes)
        elif teacher is not None:
            sp.start_from_teacher(cast(sp.SpatialModel, model), cast(sp.SpatialModel, teacher))
        return
    if init_from:
        init_from_pretrained(cast(DynamicViT, model), init_from, interpolate=interpolate, notes=notes)
    elif teacher is not None:
        model.load_state_dict(teacher.state_dict(), strict=False)  # backbone from the teacher; predictors fresh


def _param_groups(model: nn.Module, model_cfg: AnyModelConfig, cfg: TrainConfig,
                  student: bool) -> list[dict[str, Any]]:
    if isinstance(model_cfg, SpatialConfig):
        return sp.spatial_param_groups(cast(sp.SpatialModel, model), cfg, student)
    return param_groups(cast(DynamicViT, model), cfg, student)


def _train(model_cfg: AnyModelConfig, cfg: TrainConfig, out: Path, *, dd: Dist, teacher_path: str | None,
           init_from: str | None, data: str | None, resume: bool, progress: bool, stop_after_epochs: int | None,
           interpolate: bool, log: Sequence[str]) -> dict[str, Any]:
    """One model's training in the process group `dd` (the teacher's and the student's share one)."""
    student = not model_cfg.is_dense
    device = torch.device(f"cuda:{dd.local_rank}" if torch.cuda.is_available() else "cpu")
    amp_dtype = _amp_dtype(cfg, device)
    micro = _check_batch(cfg, dd.world, cfg.aug.mixes)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    td = open_training_data(data, model_cfg, cfg, dd.rank, dd.world, dd.local_world, device.type == "cuda")
    batches, test_set = td.train, td.test
    if len(td.classes) != model_cfg.num_classes:
        model_cfg = model_cfg.replace(num_classes=len(td.classes))

    notes: list[str] = []
    teacher: Any = None  # DynamicViT, DynamicCNN or DynamicSwin: each has forward_teacher
    if student:
        assert teacher_path is not None
        teacher = _load_teacher(teacher_path, model_cfg, interpolate, notes).to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)

    model = _build(model_cfg)
    _initialise(model, model_cfg, init_from, teacher, interpolate, notes)
    model.to(device)
    # What measure.accuracy and save_checkpoint read of a model (cfg, forward_inference, state_dict) every family has.
    measured = cast(DynamicViT, model)
    if dd.is_main:  # every refusal is past: what the run is, then the run
        for line in [*log, *td.notes, *notes]:
            print(line, file=sys.stderr, flush=True)

    steps_per_epoch = batches.steps_per_epoch()  # --max-steps-per-epoch applied by the batch source
    if steps_per_epoch < 1:
        raise ConfigError(f"batch size {cfg.batch_size} exceeds the {len(batches)} training images: lower --batch-size")
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    optimizer = torch.optim.AdamW(_param_groups(model, model_cfg, cfg, student), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.lr, cfg.min_lr)
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
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
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "model_ema" not in state:
                raise CheckpointError(f"{last} was written without --ema-decay: resume with the same settings")
            ema.module.load_state_dict(state["model_ema"])
        set_rng_state(state["rng"])
        start_epoch, history = int(state["epoch"]) + 1, list(state.get("history", []))

    if dd.is_main:
        ensure_writable_dir(out)  # only now: every refusal above leaves nothing behind
    ddp_model: nn.Module = model
    if dd.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[dd.local_rank] if device.type == "cuda" else None)
    mix = augment.mixer(cfg.aug, model_cfg.num_classes, cfg.label_smoothing)
    ce_fn = augment.classification_loss(cfg.aug, cfg.label_smoothing)

    def classification(logits: Tensor, target: Tensor) -> Tensor:
        return ce_fn(logits, target) if ce_fn is not None else F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)

    epoch_now = [start_epoch]  # the epoch forward() runs in (its pruning mode: cfg.pruning_mode)

    def forward(xs: Tensor, target: Tensor, noise: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One micro-batch's loss and its terms (detached) for the log."""
        if isinstance(model_cfg, SpatialConfig):
            if teacher is None:
                return sp.dense_step(ddp_model, xs, target, classification)
            return sp.student_step(ddp_model, teacher, model_cfg, cfg, xs, target, [n.to(device) for n in noise],
                                   classification)
        if teacher is None:
            o: TrainOutput = ddp_model(xs)
            loss = classification(o.dense_prediction, target)
            return loss, {"total": loss.detach(), "ce": loss.detach()}
        with torch.no_grad():
            t_logits, t_tokens = teacher.forward_teacher(xs)
        mode = cfg.pruning_mode(epoch_now[0])
        o = (ddp_model(xs, [n.to(device) for n in noise]) if mode == "mask"
             else ddp_model(xs, [n.to(device) for n in noise], token_pruning=mode))
        lt = dynamicvit_loss(o, target, t_logits, t_tokens, model_cfg.stage_ratios, cfg.loss, ce=classification,
                             token_kind=model_cfg.token_distillation)
        terms = {k: v.detach() for k, v in vars(lt).items()}
        terms["kept"] = o.decisions[-1].mean().detach()  # last stage's kept fraction
        return lt.total, terms

    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    skipped_total = sum(int(h.get("skipped_images", 0)) for h in history)
    first_step: dict[str, float] = {}
    for epoch in range(start_epoch, end_epoch):
        epoch_now[0] = epoch
        model.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        clock = EpochClock(cfg.batch_size)
        skipped_before = len(batches.skipped)
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress and dd.is_main)
        stream = batches.epoch(epoch)
        for step in range(steps_per_epoch):
            clock.start()
            x, y, offset = next(stream)
            clock.data_ready()
            optimizer.zero_grad(set_to_none=True)
            noise: list[Tensor] = []
            if teacher is not None:  # this rank's slice of the global batch's draws, cut into micro-batches below
                noise = gumbel_noise_for(
                    cfg.seed * 1_000_003 + epoch * 100_003 + step, cfg.batch_size, model_cfg.num_patches,
                    len(model_cfg.pruning_loc), offset - step * cfg.batch_size, batches.local_batch,
                )
            step_terms: dict[str, float] = {}
            for m in range(cfg.accum_steps):
                xs = x[m * micro : (m + 1) * micro].to(device, non_blocking=True)
                target = y[m * micro : (m + 1) * micro].to(device, non_blocking=True)
                if mix is not None:
                    with seeded(step_seed(cfg.seed, epoch, step, m)):
                        xs, target = mix(xs, target)
                no_sync = dd.enabled and m < cfg.accum_steps - 1  # gradients all-reduce once, after the last micro-batch
                with cast(Any, ddp_model).no_sync() if no_sync else contextlib.nullcontext():
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        loss, terms = forward(xs, target, [n[m * micro : (m + 1) * micro] for n in noise])
                    scaled = loss / cfg.accum_steps  # backward outside autocast, as torch.autocast asks
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                for k, t in terms.items():
                    step_terms[k] = step_terms.get(k, 0.0) + float(t) / cfg.accum_steps
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            clock.step_done()
            for k, f in step_terms.items():
                sums[k] = sums.get(k, 0.0) + f
            if epoch == start_epoch == 0 and step == 0:
                first_step = {k: dd.mean(v) for k, v in step_terms.items()}
            if bar is not None:
                bar.update(1)
                left = steps_per_epoch - step - 1 + (end_epoch - epoch - 1) * steps_per_epoch
                bar.set_postfix(loss=f"{step_terms['total']:.4f}", **clock.postfix(left))
        if bar is not None:
            bar.close()
        stream.close()  # ends the epoch's loader: its decoding workers exit before evaluation starts its own
        skipped = int(dd.sum(len(batches.skipped) - skipped_before))
        skipped_total += skipped
        if skipped > max(10, MAX_BAD_FRACTION * steps_per_epoch * cfg.batch_size):
            first_bad = batches.skipped[skipped_before][0] if len(batches.skipped) > skipped_before else "on another rank"
            raise DataError(f"{skipped} unreadable images in epoch {epoch + 1} (first: {first_bad}), over 1% of the "
                            "epoch: the dataset looks damaged; fix or remove the files")
        means = {f"train_{k}": dd.mean(v / steps_per_epoch) for k, v in sums.items()}
        record: dict[str, Any] = {"epoch": epoch + 1, **means, "lr": optimizer.param_groups[0]["lr"],
                                  "seconds": time.time() - t0, **clock.record(), "skipped_images": skipped}
        if epoch == 0 and start_epoch == 0:
            record["first_step"] = first_step
        if dd.is_main:
            top1, top5 = accuracy(measured, test_set, device=device)
            record.update(test_top1=top1, test_top5=top5)
            if ema is not None:
                record["test_top1_ema"], record["test_top5_ema"] = accuracy(ema.module, test_set, device=device)
            history.append(record)
            _write_logs(out, history)
            extra: dict[str, Any] = {"model_ema": ema.module.state_dict()} if ema is not None else {}
            save_checkpoint(
                last, measured, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), epoch=epoch,
                rng=rng_state(), history=history, train_config=cfg.to_dict(), data=td.describe(),
                scaler=scaler.state_dict() if scaler is not None else None, **extra,
            )
            eta = clock.eta((end_epoch - epoch - 1) * steps_per_epoch)
            print(_epoch_line(record, eta if epoch + 1 < end_epoch else None), file=sys.stderr, flush=True)
            warning = starvation_warning(clock, getattr(batches, "workers", None), batches.kind)
            if warning:
                print(warning, file=sys.stderr, flush=True)
        dd.barrier()
    batches.close()

    result: dict[str, Any] = {"history": history, "epochs_run": end_epoch - start_epoch,
                              "finished": end_epoch == cfg.epochs}
    if dd.is_main and end_epoch == cfg.epochs:
        final = history[-1] if history else {}
        extra = {"model_ema": ema.module.state_dict()} if ema is not None else {}
        save_checkpoint(out / "model.pt", measured, history=history, train_config=cfg.to_dict(), metrics=final,
                        data=td.describe(), **extra)
        result.update(final=final, checkpoint=str(out / "model.pt"))
        atomic_write_json(out / "summary.json", {"model_config": model_cfg.to_dict(), "train_config": cfg.to_dict(),
                                                 "final": final, "teacher": teacher_path, "world_size": dd.world,
                                                 "data": td.describe(), "skipped_images": skipped_total})
    return result


def _say(line: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(line, file=sys.stderr, flush=True)


def _own_teacher(model_cfg: AnyModelConfig, cfg: TrainConfig, out: Path, *, dd: Dist, init_from: str | None,
                 data: str | None,
                 resume: bool, progress: bool, stop_after_epochs: int | None, interpolate: bool,
                 epochs: int, log: Sequence[str]) -> tuple[str, int | None] | dict[str, Any]:
    """Train the dense teacher a student without --teacher distils from, into out/teacher, on the same data and
    settings: (its model.pt, the --stop-after-epochs left for the student), or the result to return when the
    teacher used up --stop-after-epochs. With --resume, a finished teacher is reused and an unfinished one resumed."""
    tdir = out / "teacher"
    done = tdir / "model.pt"
    if resume and done.is_file():
        _say(f"teacher: {done}, trained by this run before (--resume); the student is distilled from it")
        return str(done), stop_after_epochs
    if resume and not (tdir / "last.pt").is_file() and (out / "last.pt").is_file():
        raise CheckpointError(f"--resume: {out / 'last.pt'} exists but {tdir} holds no teacher: pass the --teacher "
                              "the student was distilled from")
    start = "initialised from " + str(init_from) if init_from else "from random weights"
    first = (f"teacher: no --teacher given, so the dense teacher trains first ({epochs} epoch{'s' if epochs != 1 else ''}, "
             f"same data and settings, {start}) into {tdir}; the student is distilled from it next")
    res = _train(model_cfg.as_dense(), dataclasses.replace(cfg, epochs=epochs), tdir, dd=dd, teacher_path=None,
                 init_from=init_from, data=data, resume=resume and (tdir / "last.pt").is_file(), progress=progress,
                 stop_after_epochs=stop_after_epochs, interpolate=interpolate, log=[*log, first])
    dd.barrier()  # every rank loads the teacher that rank 0 has just written
    left = None if stop_after_epochs is None else stop_after_epochs - int(res["epochs_run"])
    stopped = {"history": [], "epochs_run": 0, "finished": False, "teacher": res}
    if not res["finished"]:
        _say(f"teacher: stopped after {res['epochs_run']} epoch(s) as --stop-after-epochs asks: continue with --resume")
        return stopped
    top1 = (res.get("final") or {}).get("test_top1")
    _say(f"teacher: done{f' (test top-1 {top1:.2f}%)' if top1 is not None else ''}, {done}; "
         + ("--stop-after-epochs reached: continue with --resume to distil the student" if left == 0
            else "distilling the student from it"))
    return stopped if left == 0 else (str(done), left)


def _epoch_line(r: dict[str, Any], eta: float | None) -> str:
    parts = [f"epoch {r['epoch']}", f"loss {r.get('train_total', float('nan')):.4f}"]
    if "test_top1" in r:
        parts.append(f"test top-1 {r['test_top1']:.2f}%")
    if "test_top1_ema" in r:
        parts.append(f"EMA {r['test_top1_ema']:.2f}%")
    if "train_kept" in r:
        parts.append(f"last-stage keep {r['train_kept']:.3f}")
    parts.append(f"{r['images_per_second']:,.0f} img/s, data wait {100 * r['data_wait_fraction']:.0f}%")
    if r.get("skipped_images"):
        parts.append(f"{r['skipped_images']} unreadable images skipped")
    parts.append(f"{r['seconds']:.0f}s")
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return " | ".join(parts)


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_json(out / "metrics.json", history)
    keys = sorted({k for r in history for k, v in r.items() if not isinstance(v, dict)}, key=lambda k: (k != "epoch", k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in history:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(out / "metrics.csv", buf.getvalue())
