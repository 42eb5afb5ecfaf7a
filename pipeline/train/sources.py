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
from ..data import (
    FMNIST_CLASSES,
    ImageSet,
    ImageSurvey,
    conversion_text,
    decode_index,
    is_fashion_mnist,
    load_dataset,
    refit,
    subset_indices,
    survey_index,
)
from ..errors import ConfigError, DataError
from ..image_index import class_folders, folder_splits, is_imagenet_style
from ..spatial.config import SpatialConfig
from . import augment
from .memory import MemoryBatches
from .stream import ArraySource, FolderSource, StreamBatches, StreamEval, default_workers, sample_stats

AnyModelConfig = ModelConfig | SpatialConfig
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
    conversion: str = ""  # what the images are turned into, in words (the log's 'data: ...' line)
    survey: dict[str, Any] = field(default_factory=dict)  # the sampled source images (ImageSurvey.describe)

    def describe(self) -> dict[str, Any]:
        return {"loader": self.train.kind, "source": self.source, "classes": list(self.classes), "mean": list(self.mean),
                "std": list(self.std), "train_images": len(self.train), "test_images": len(self.test),
                "conversion": self.conversion, "source_images": self.survey}


def data_classes(spec: str | None) -> tuple[str, ...]:
    """The training data's class names from its folder names alone (nothing listed or decoded), so that a run can
    be refused before it writes anything."""
    if is_fashion_mnist(spec):
        return FMNIST_CLASSES
    assert spec is not None
    root = Path(spec)
    if not root.exists():
        raise DataError(f"dataset path {spec} does not exist: pass 'fashion-mnist' or an image directory")
    if not root.is_dir():
        raise DataError(f"dataset path {spec} is not a directory: pass 'fashion-mnist' or an image directory")
    classes = class_folders(root / "train" if is_imagenet_style(root) else root)
    if not classes:
        raise DataError(f"{root} has no class sub-folders: put each class's images in a folder named after it")
    return classes


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


def open_training_data(spec: str | None, model_cfg: AnyModelConfig, cfg: TrainConfig, rank: int, world: int,
                       local_world: int, pin_memory: bool) -> TrainingData:
    c, s = model_cfg.in_chans, model_cfg.img_size
    workers = cfg.workers if cfg.workers is not None else default_workers(local_world)
    if spec is not None and not is_fashion_mnist(spec) and not Path(spec).exists():
        raise DataError(f"dataset path {spec} does not exist: pass 'fashion-mnist' or an image directory")
    if is_fashion_mnist(spec):
        train_set = load_dataset(spec, "train", c, s).subset(cfg.train_subset, cfg.seed)
        test_set = load_dataset(spec, "test", c, s).subset(cfg.eval_subset, cfg.seed)
        n, mode = len(train_set), "L" if train_set.in_chans == 1 else "RGB"
        survey = ImageSurvey(n, n, {mode: n}, {(train_set.img_size, train_set.img_size): n}, {"idx": n})
        conversion = _conversion(survey, model_cfg, cfg, "Fashion-MNIST's")
        kind, why = choose_loader(cfg, len(train_set) + len(test_set), c * s * s)
        if kind == "memory":
            if (train_set.in_chans, train_set.img_size) != (c, s):  # refitted once, as a file would be decoded
                train_set, test_set = _refitted(train_set, c, s), _refitted(test_set, c, s)
            return _in_memory(train_set, test_set, cfg, rank, world, why, conversion, survey)
        mean, std = train_set.mean, train_set.std
        if len(mean) != c:  # grey statistics, repeated for the channels the grey is repeated to
            mean, std = mean * c, std * c
        return _streamed(ArraySource(train_set.images, train_set.labels, train_set.source, c),
                         ArraySource(test_set.images, test_set.labels, test_set.source, c), train_set.classes,
                         (mean, std), model_cfg, cfg, rank, world, workers, pin_memory, train_set.source, why,
                         conversion, survey)
    assert spec is not None
    train_idx, test_idx = folder_splits(spec)
    pick = subset_indices(len(train_idx), cfg.train_subset, cfg.seed)  # the sample ImageSet.subset takes
    train_idx = train_idx if pick is None else train_idx.take(pick.numpy())
    pick = subset_indices(len(test_idx), cfg.eval_subset, cfg.seed)
    test_idx = test_idx if pick is None else test_idx.take(pick.numpy())
    survey = survey_index(train_idx)
    conversion = _conversion(survey, model_cfg, cfg, "the training images'")
    kind, why = choose_loader(cfg, len(train_idx) + len(test_idx), c * s * s)
    if kind == "memory":
        tr = decode_index(train_idx, c, s, f"folder:{train_idx.root}")
        te = decode_index(test_idx, c, s, f"folder:{test_idx.root}")
        te.mean, te.std = tr.mean, tr.std  # normalise with the training statistics
        return _in_memory(tr, te, cfg, rank, world, why, conversion, survey)
    train_src, test_src = FolderSource(train_idx, c), FolderSource(test_idx, c)
    stats = sample_stats(train_src, s) if cfg.aug.normalization == "dataset" else ((0.0,) * c, (1.0,) * c)
    return _streamed(train_src, test_src, train_idx.classes, stats, model_cfg, cfg, rank, world, workers, pin_memory,
                     f"folder:{spec}", why, conversion, survey)


def _conversion(survey: ImageSurvey, model_cfg: AnyModelConfig, cfg: TrainConfig, data_stats: str) -> str:
    """The log's line on what the images are turned into, normalisation included."""
    s = model_cfg.img_size
    stats = "ImageNet's" if cfg.aug.normalization == "imagenet" else data_stats
    return (f"{conversion_text(survey, model_cfg.in_chans, s, augment.resize_words(cfg.aug, s))}, then scaled to 0-1 "
            f"and normalised with {stats} mean/std")


def _refitted(ds: ImageSet, in_chans: int, img_size: int) -> ImageSet:
    """Grey idx images refitted to the model's input, normalised with their own statistics repeated for the channels
    the grey is repeated to (what the streamed path uses too)."""
    mean, std = (ds.mean * in_chans, ds.std * in_chans) if len(ds.mean) != in_chans else (ds.mean, ds.std)
    return ImageSet(refit(ds.images, in_chans, img_size), ds.labels, ds.classes, mean, std, ds.source)


def _in_memory(train_set: ImageSet, test_set: ImageSet, cfg: TrainConfig, rank: int, world: int, why: str,
               conversion: str, survey: ImageSurvey) -> TrainingData:
    if cfg.aug.normalization == "imagenet":
        train_set.mean, train_set.std = augment.normalization(cfg.aug, train_set.mean, train_set.std, train_set.in_chans)
        test_set.mean, test_set.std = train_set.mean, train_set.std
    batches = MemoryBatches(train_set, cfg.batch_size, cfg.seed, cfg.augment, rank, world, cfg.max_steps_per_epoch)
    return TrainingData(batches, test_set, train_set.classes, train_set.mean, train_set.std, train_set.source,
                        [f"data: in memory: {why}", f"data: {conversion}"], conversion, survey.describe())


def _streamed(train_src: Any, test_src: Any, classes: tuple[str, ...], stats: tuple[tuple[float, ...], tuple[float, ...]],
              model_cfg: AnyModelConfig, cfg: TrainConfig, rank: int, world: int, workers: int, pin_memory: bool,
              source: str, why: str, conversion: str, survey: ImageSurvey) -> TrainingData:
    mean, std = augment.normalization(cfg.aug, stats[0], stats[1], model_cfg.in_chans)
    size = model_cfg.img_size
    batches = StreamBatches(train_src, augment.train_transform(cfg.aug, size, mean, std), cfg.batch_size, cfg.seed,
                            rank, world, workers, pin_memory, cfg.max_steps_per_epoch)
    test = StreamEval(test_src, augment.eval_transform(cfg.aug, size, mean, std), workers)
    return TrainingData(batches, test, classes, mean, std, source,
                        [f"data: streamed by {workers} worker process{'es' if workers != 1 else ''} per rank: {why}",
                         f"data: {conversion}"], conversion, survey.describe())


