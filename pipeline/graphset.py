"""The graph set: the one contract between the stages after training.

Export, precision, the plugin pass and the engine build all write a manifest whose `graphs` section has the
same shape: per static batch size B, the stage entries (stage 0 takes `images`, stage i >= 1 takes `tokens_i`
and also returns `kept_indices_i`), the fused entry (all stages in one graph) and the dense teacher's entry.
Each entry names its file, hash, input/output tensors (name, shape, dtype), and for stages the index and kept
count. The header keys below describe the model the graphs came from; every stage carries them unchanged.

Readers go through `GraphSet.load`, which verifies every hash once (via manifest.read_manifest) and refuses
anything that is not a graph set; writers go through `write_graph_set`, which checks the structure before the
manifest is written. This module needs neither torch nor onnx: a Jetson reads graph sets too.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import config_from_dict
from .errors import ConfigError, ManifestError
from .manifest import read_manifest, write_manifest
from .preprocessing import Preprocessing

if TYPE_CHECKING:
    from .config import AnyConfig

# Manifest kinds that hold a graph set, in pipeline order.
KINDS = ("export", "precision", "plugin", "engine")
# Header keys every stage carries from the graph set it read into the one it writes (defined once, here).
HEADER_KEYS = (
    "model_config", "keep_ratio", "keep_counts", "tokens_per_stage", "checkpoint", "teacher_checkpoint",
    "teacher_config", "opset", "batch_sizes", "exporter", "simplifier", "precision", "preprocessing",
)
ROLES = ("stage", "fused", "teacher")
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorInfo:
        return cls(str(d["name"]), tuple(int(x) for x in d.get("shape") or ()), str(d.get("dtype", "")))


@dataclass(frozen=True)
class GraphEntry:
    """One graph (or engine) of the set, with the manifest entry it came from in `info`."""

    root: Path
    role: str  # "stage", "fused" or "teacher"
    batch: int
    info: dict[str, Any]

    @property
    def file(self) -> str:
        return str(self.info["file"])

    @property
    def path(self) -> Path:
        return self.root / self.file

    @property
    def sha256(self) -> str:
        return str(self.info["sha256"])

    @property
    def index(self) -> int | None:
        return None if self.role != "stage" else int(self.info["index"])

    @property
    def keep_count(self) -> int | None:
        k = self.info.get("keep_count")
        return None if k is None else int(k)

    @property
    def name(self) -> str:
        """stage{i}, fused or teacher: how runners and reports call this graph."""
        return f"stage{self.index}" if self.role == "stage" else self.role

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo.from_dict(d) for d in self.info.get("inputs", [])]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo.from_dict(d) for d in self.info.get("outputs", [])]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def plugin_nodes(self) -> int:
        return int(self.info.get("plugin_nodes") or 0)


@dataclass(frozen=True)
class BatchGraphs:
    """The graphs of one static batch size."""

    batch: int
    stages: list[GraphEntry]
    fused: GraphEntry
    teacher: GraphEntry | None

    def entries(self) -> list[GraphEntry]:
        return [*self.stages, self.fused, *([self.teacher] if self.teacher else [])]


@dataclass(frozen=True)
class GraphSet:
    """A verified graph set: `manifest` is the raw manifest (with `_root` and `_sha256` added by the reader)."""

    root: Path
    kind: str
    manifest: dict[str, Any]
    config: AnyConfig
    batches: dict[int, BatchGraphs] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | os.PathLike[str], kinds: tuple[str, ...] = KINDS, verify: bool = True) -> GraphSet:
        """Read and verify the graph set in `root`; `kinds` lists the kinds the caller can use."""
        m = read_manifest(root, verify=verify)
        kind = m.get("kind")
        where = Path(m["_root"])
        if kind not in KINDS:
            raise ManifestError(
                f"{where} holds a '{kind}' manifest, not a graph set: point --graphs at the output of "
                f"{' or '.join(_producer(k) for k in kinds)}"
            )
        if kind not in kinds:
            raise ManifestError(
                f"{where} is a '{kind}' graph set, but this command takes {' or '.join(repr(k) for k in kinds)}: "
                f"point --graphs at the output of {' or '.join(_producer(k) for k in kinds)}"
            )
        if not isinstance(m.get("graphs"), dict) or not m["graphs"] or "model_config" not in m:
            raise ManifestError(f"{where}/manifest.json has no graphs or no model config: re-run the stage that wrote it")
        cfg = config_from_dict(m["model_config"])
        batches = {int(b): _batch(where, int(b), g, cfg) for b, g in m["graphs"].items()}
        return cls(where, str(kind), m, cfg, dict(sorted(batches.items())))

    @property
    def sha256(self) -> str:
        return str(self.manifest["_sha256"])

    @property
    def num_stages(self) -> int:
        return len(self.config.pruning_loc) + 1

    @property
    def precision(self) -> list[str]:
        """Precision of each stage as written into the graphs (an export is FP32 throughout)."""
        return list(self.manifest.get("precision") or ["fp32"] * self.num_stages)

    @property
    def preprocessing(self) -> Preprocessing | None:
        """How a camera frame becomes the input tensor (written by 'dvit export'); None for graph sets exported
        before the record existed."""
        rec = self.manifest.get("preprocessing")
        if rec is None:
            return None
        try:
            return Preprocessing.from_dict(rec)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{self.root}/manifest.json has an unreadable preprocessing record ({e}): re-export") from e

    @property
    def checkpoint(self) -> dict[str, Any]:
        return dict(self.manifest.get("checkpoint") or {})

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.batches)

    def header(self) -> dict[str, Any]:
        """The keys a stage carries into the graph set it writes."""
        return {k: self.manifest.get(k) for k in HEADER_KEYS if k in self.manifest}

    def batch(self, size: int | None = None, flag: str = "--batch-size") -> BatchGraphs:
        """The graphs of batch `size` (default 8 when present, else the largest). A missing size fails naming
        `flag`, the caller's option: one size for a flag that takes one (--batch-size), every size the set has
        for one that takes a list (--batch-sizes)."""
        if size is None:
            size = DEFAULT_BATCH if DEFAULT_BATCH in self.batches else max(self.batches)
        if size not in self.batches:
            fix = ",".join(map(str, sorted(self.batches))) if flag.endswith("sizes") else str(max(self.batches))
            raise ConfigError(
                f"no graphs for batch size {size} in {self.root} (it has {self.batch_sizes}): pass {flag} {fix}"
            )
        return self.batches[size]

    def entries(self) -> Iterator[GraphEntry]:
        for b in self.batches.values():
            yield from b.entries()

    @property
    def uses_plugin(self) -> bool:
        return any(e.plugin_nodes for e in self.entries())


def _producer(kind: str) -> str:
    return {"export": "'dvit export'", "precision": "'dvit precision'", "plugin": "'dvit plugin-pass'",
            "engine": "'dvit build'"}.get(kind, f"'{kind}'")


def _batch(root: Path, b: int, g: dict[str, Any], cfg: AnyConfig) -> BatchGraphs:
    S = len(cfg.pruning_loc) + 1
    stages = sorted((GraphEntry(root, "stage", b, e) for e in g.get("stages") or []), key=lambda e: e.index or 0)
    if [e.index for e in stages] != list(range(S)):
        raise ManifestError(
            f"{root}: batch {b} has stage graphs {[e.index for e in stages]} for a {S}-stage model: re-run the stage "
            "that wrote it"
        )
    if not g.get("fused"):
        raise ManifestError(f"{root}: batch {b} has no fused graph: re-run the stage that wrote it")
    for e in stages[1:]:
        if f"kept_indices_{e.index}" not in e.output_names:
            raise ManifestError(f"{e.path} has no kept_indices_{e.index} output in the manifest: re-export")
    teacher = GraphEntry(root, "teacher", b, g["teacher"]) if g.get("teacher") else None
    return BatchGraphs(b, stages, GraphEntry(root, "fused", b, g["fused"]), teacher)


def batch_section(stages: list[dict[str, Any]], fused: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, Any]:
    """One batch size's part of the `graphs` section, from manifest entries (manifest.file_entry)."""
    return {"stages": sorted(stages, key=lambda e: int(e["index"])), "fused": fused, "teacher": teacher}


def write_graph_set(
    root: str | os.PathLike[str], kind: str, header: dict[str, Any], graphs: Mapping[Any, Any],
    **body: Any,
) -> Path:
    """Write the manifest of a graph set: the carried header, the graphs by batch size, then stage-specific keys.

    The structure is checked first (stage indices complete, a fused graph per batch size), so a stage can never
    write a graph set that the next one refuses.
    """
    if kind not in KINDS:
        raise ValueError(f"internal: {kind} is not a graph-set kind")
    unknown = set(header) - set(HEADER_KEYS)
    if unknown:
        raise ValueError(f"internal: header keys {sorted(unknown)} are not graph-set header keys")
    cfg = config_from_dict(header["model_config"])
    for b, g in graphs.items():
        _batch(Path(root), int(b), g, cfg)
    files = [e["file"] for g in graphs.values() for e in [*g["stages"], g["fused"], g.get("teacher")] if e]
    return write_manifest(root, kind, {**header, "graphs": {str(b): g for b, g in graphs.items()}, "files": files, **body})
