"""Which data path a run takes, and the batches and evaluation set it gets from it.

'memory' decodes everything up front (fast for small images, vectorised shift-and-flip); 'stream' decodes in
worker processes per step (memory flat in dataset size, any per-sample transform). 'auto' keeps the embedded
default in memory and streams whatever would not fit comfortably or needs timm's per-sample transforms; the
log says which was chosen and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig, TrainConfig
from ..data import ImageSet, decode_index, is_fashion_mnist, load_dataset, subset_indices
from ..errors import ConfigError, DataError
from ..image_index import folder_splits
from . import augment
from .memory import MemoryBatches
from .stream import ArraySource, FolderSource, StreamBatches, StreamEval, default_workers, sample_stats

MEMORY_LIMIT_BYTES = 2 << 30  # decoded train + test images above this are streamed by 'auto'


@dataclass
class TrainingData:
    train: MemoryBatches | StreamBatches
    test: ImageSet | StreamEval
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    notes: list[str] = field(default_factory=list)  # what the log says about the choice

    def describe(self) -> dict[str, Any]:
        return {"loader": self.train.kind, "source": self.source, "classes": list(self.classes), "mean": list(self.mean),
                "std": list(self.std), "train_images": len(self.train), "test_images": len(self.test)}


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def choose_loader(cfg: TrainConfig, images: int, bytes_per_image: int) -> tuple[str, str]:
    """('memory' | 'stream', the reason in words)."""
    decoded = images * bytes_per_image
    size = f"{images:,} train + test images, {decoded / 2**20:,.1f} MiB decoded"
    if cfg.loader == "memory" and cfg.aug.policy == "timm":
        raise ConfigError("timm's per-sample transforms (--augment timm, the deit recipe) run on the streamed path: "
                          "drop --loader memory")
    if cfg.loader != "auto":
        return cfg.loader, f"{size}; --loader {cfg.loader}"
    if cfg.aug.policy == "timm":
        return "stream", f"{size}; timm's per-sample transforms need the source images (auto)"
    limit = MEMORY_LIMIT_BYTES
    avail = _available_memory()
    if avail is not None:
        limit = min(limit, avail // 4)
    if decoded > limit:
        return "stream", f"{size}, over the {limit / 2**20:,.0f} MiB in-memory limit (auto)"
    return "memory", f"{size}, within the {limit / 2**20:,.0f} MiB in-memory limit (auto; --loader stream to stream)"


def open_training_data(spec: str | None, model_cfg: ModelConfig, cfg: TrainConfig, rank: int, world: int,
                       local_world: int, pin_memory: bool) -> TrainingData:
    c, s = model_cfg.in_chans, model_cfg.img_size
    workers = cfg.workers if cfg.workers is not None else default_workers(local_world)
    if spec is not None and not is_fashion_mnist(spec) and not Path(spec).exists():
        raise DataError(f"dataset path {spec} does not exist: pass 'fashion-mnist' or an image directory")
    if is_fashion_mnist(spec):
        train_set = load_dataset(spec, "train", c, s).subset(cfg.train_subset, cfg.seed)
        test_set = load_dataset(spec, "test", c, s).subset(cfg.eval_subset, cfg.seed)
        if train_set.in_chans != c or train_set.img_size != s:
            raise ConfigError(
                f"data has {train_set.in_chans}x{train_set.img_size}x{train_set.img_size} images but model "
                f"'{model_cfg.name}' expects {c}x{s}x{s}: choose a matching --model"
            )
        kind, why = choose_loader(cfg, len(train_set) + len(test_set), c * s * s)
        if kind == "memory":
            return _in_memory(train_set, test_set, cfg, rank, world, why)
        return _streamed(ArraySource(train_set.images, train_set.labels, train_set.source),
                         ArraySource(test_set.images, test_set.labels, test_set.source), train_set.classes,
                         (train_set.mean, train_set.std), model_cfg, cfg, rank, world, workers, pin_memory,
                         train_set.source, why)
    assert spec is not None
    train_idx, test_idx = folder_splits(spec)
    pick = subset_indices(len(train_idx), cfg.train_subset, cfg.seed)  # the sample ImageSet.subset takes
    train_idx = train_idx if pick is None else train_idx.take(pick.numpy())
    pick = subset_indices(len(test_idx), cfg.eval_subset, cfg.seed)
    test_idx = test_idx if pick is None else test_idx.take(pick.numpy())
    kind, why = choose_loader(cfg, len(train_idx) + len(test_idx), c * s * s)
    if kind == "memory":
        tr = decode_index(train_idx, c, s, f"folder:{train_idx.root}")
        te = decode_index(test_idx, c, s, f"folder:{test_idx.root}")
        te.mean, te.std = tr.mean, tr.std  # normalise with the training statistics
        return _in_memory(tr, te, cfg, rank, world, why)
    train_src, test_src = FolderSource(train_idx, c), FolderSource(test_idx, c)
    stats = sample_stats(train_src, s) if cfg.aug.normalization == "dataset" else ((0.0,) * c, (1.0,) * c)
    return _streamed(train_src, test_src, train_idx.classes, stats, model_cfg, cfg, rank, world, workers, pin_memory,
                     f"folder:{spec}", why)


def _in_memory(train_set: ImageSet, test_set: ImageSet, cfg: TrainConfig, rank: int, world: int, why: str) -> TrainingData:
    if cfg.aug.normalization == "imagenet":
        train_set.mean, train_set.std = augment.normalization(cfg.aug, train_set.mean, train_set.std, train_set.in_chans)
        test_set.mean, test_set.std = train_set.mean, train_set.std
    batches = MemoryBatches(train_set, cfg.batch_size, cfg.seed, cfg.augment, rank, world, cfg.max_steps_per_epoch)
    return TrainingData(batches, test_set, train_set.classes, train_set.mean, train_set.std, train_set.source,
                        [f"data: in memory: {why}"])


def _streamed(train_src: Any, test_src: Any, classes: tuple[str, ...], stats: tuple[tuple[float, ...], tuple[float, ...]],
              model_cfg: ModelConfig, cfg: TrainConfig, rank: int, world: int, workers: int, pin_memory: bool,
              source: str, why: str) -> TrainingData:
    mean, std = augment.normalization(cfg.aug, stats[0], stats[1], model_cfg.in_chans)
    size = model_cfg.img_size
    batches = StreamBatches(train_src, augment.train_transform(cfg.aug, size, mean, std), cfg.batch_size, cfg.seed,
                            rank, world, workers, pin_memory, cfg.max_steps_per_epoch)
    test = StreamEval(test_src, augment.eval_transform(cfg.aug, size, mean, std), workers)
    return TrainingData(batches, test, classes, mean, std, source,
                        [f"data: streamed by {workers} worker process{'es' if workers != 1 else ''} per rank: {why}"])


