"""Where each engine of a build runs, the DLA core or the GPU, and why: the placement rule of `dvit build`.

The rule, for a build that uses the DLA (the target has one, and `dla.enabled = true` or `--dla`; otherwise every
engine is a GPU engine), by the profile's `dla.stages` (targets/README.md):

* "pre-pruning": a stage graph goes on the DLA when it holds no TopK, Gather*, Scatter*, NonZero and no plugin
  node (DvitTopKGather, or any node outside the ONNX domains). Those ops are what token pruning is made of; the
  DLA is a fixed-function accelerator for convolutional networks whose supported layers (NVIDIA's "DLA Supported
  Layers and Restrictions", TensorRT docs inference-library/dla-layer-restrictions) include no gather, scatter or
  top-k, and a plugin runs on the GPU: a stage holding one would be cut into DLA pieces with GPU layers and format
  copies between them (at most 16 DLA loadables per core). The stages of the spatially sparsified models
  (ConvNeXt, Swin) before the first pruning location hold only convolutions, LayerNorm, GELU and elementwise ops.
  The fused graph (it holds the pruning) and the dense teacher (the baseline the pruned engines are timed
  against) stay on the GPU.
* "all": every engine is built for the DLA, and TensorRT moves each layer the DLA cannot run to the GPU (the
  all-or-nothing DLA build dvit had before `dla.stages`).

Either way a graph that computes in FP32 stays on the GPU, and says so: the DLA runs FP16 and INT8 only ("Working
with DLA": "DLA support is currently limited to networks running in FP16 and INT8 mode"), and our networks are
strongly typed (precision comes from the graph), so every FP32 layer would fall back and the engine would be a GPU
engine labelled DLA. It is left on the GPU rather than refused, since a profile may keep one stage in FP32 on
purpose and the other engines still go where the rule puts them; the reason names the fix (`dvit precision`).

Eligible is necessary, not sufficient: the DLA's activations are ReLU, Sigmoid, TanH and their clipped and leaky
forms, so GELU (Erf) and LayerNorm in an eligible stage may still run on the GPU; GPU fallback is always on, and
the engine's entry records how many of its layers TensorRT says the DLA can run (`dla_capable_layers`).

Needs no TensorRT: the op types come from the ONNX files (onnx_ops.py), the precision from the graph set.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..graphset import GraphEntry, GraphSet
from ..targets import Target
from ..topk_gather_ref import PLUGIN_OP
from .onnx_ops import OpCounts, graph_ops

GPU, DLA = "gpu", "dla"
DLA_PRECISIONS = ("fp16", "int8")
# Op types that keep a graph off the DLA in "pre-pruning": exact names, and families by prefix.
PRUNING_OPS = ("TopK", "NonZero")
PRUNING_FAMILIES = ("Gather", "Scatter")  # Gather, GatherElements, GatherND, ScatterElements, ScatterND, ...
ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
ROLE_REASONS = {
    "fused": "the fused graph holds the pruning (TopK and gathers): on the GPU",
    "teacher": "the dense teacher is the baseline the pruned engines are timed against: on the GPU",
}
PRE_PRUNING = "dla.stages = \"pre-pruning\""
_STAGE_NAME = re.compile(r"(.*?)stage(\d+)")


@dataclass(frozen=True)
class DlaRequest:
    """What a build asks of the DLA: the core, and which engines go on it (targets.DLA_STAGES)."""

    core: int
    stages: str


@dataclass(frozen=True)
class Placement:
    """Where one engine runs: DLA engines are always built with GPU fallback."""

    device: str  # GPU or DLA
    reason: str
    dla_core: int | None = None

    @classmethod
    def gpu(cls, reason: str) -> Placement:
        return cls(GPU, reason)

    @classmethod
    def dla(cls, core: int, reason: str) -> Placement:
        return cls(DLA, reason, core)

    @property
    def on_dla(self) -> bool:
        return self.device == DLA

    @property
    def label(self) -> str:
        """'dla:0' or 'gpu', as the engine manifest says it."""
        return f"{DLA}:{self.dla_core}" if self.on_dla else GPU

    def record(self) -> dict[str, Any]:
        """The keys an engine's manifest entry carries: device, GPU fallback (DLA engines only), the reason."""
        fallback = {"gpu_fallback": True} if self.on_dla else {}
        return {"device": self.label, **fallback, "device_reason": self.reason}

    @classmethod
    def from_record(cls, info: Mapping[str, Any]) -> Placement:
        """The placement an engine's manifest entry says; engines built before placements existed ran on the GPU
        unless the build put them on the DLA, which their entries do not say."""
        device = str(info.get("device") or GPU)
        reason = str(info.get("device_reason") or "not recorded (built before dvit recorded placements)")
        if device.startswith(f"{DLA}:"):
            return cls.dla(int(device.split(":", 1)[1]), reason)
        return cls.gpu(reason)


# ---------------------------------------------------------------------------------------------- the rule
def gpu_only_ops(ops: OpCounts) -> list[str]:
    """The op types in `ops` that keep a graph off the DLA in "pre-pruning", in a stable order: pruning ops by
    name, then plugin nodes as 'plugin DOMAIN:OP'."""
    found = sorted({op for (domain, op) in ops if domain in ONNX_DOMAINS and _is_pruning_op(op)})
    plugins = sorted({f"plugin {domain}:{op}" if domain else f"plugin {op}" for (domain, op) in ops
                      if domain not in ONNX_DOMAINS or op == PLUGIN_OP})
    return found + plugins


def _is_pruning_op(op: str) -> bool:
    return op in PRUNING_OPS or op.startswith(PRUNING_FAMILIES)


def place(role: str, graph: str | Path, precisions: Sequence[str], dla: DlaRequest | None,
          off_reason: str = "the build does not use the DLA") -> Placement:
    """Where the `role` graph ("stage", "fused" or "teacher") in ONNX file `graph`, computing in `precisions`
    (one per stage it holds), runs: the rule of this module's docstring. Reads the file only when it must."""
    if dla is None:
        return Placement.gpu(off_reason)
    if dla.stages == "all":
        return _place_all(graph, precisions, dla.core)
    if role != "stage":
        return Placement.gpu(ROLE_REASONS.get(role, f"a {role} graph: on the GPU"))
    if blockers := gpu_only_ops(graph_ops(graph)):
        return Placement.gpu(f"holds {', '.join(blockers)}, which the DLA cannot run: on the GPU ({PRE_PRUNING})")
    if reason := _fp32_reason(precisions):
        return Placement.gpu(reason)
    return Placement.dla(dla.core, f"holds no TopK, Gather, Scatter, NonZero or plugin node: on DLA core {dla.core} "
                                   f"with GPU fallback ({PRE_PRUNING})")


def _place_all(graph: str | Path, precisions: Sequence[str], core: int) -> Placement:
    """dla.stages = "all": every FP16/INT8 engine on the DLA, saying which of its ops TensorRT will put on the GPU."""
    if reason := _fp32_reason(precisions):
        return Placement.gpu(reason)
    blockers = gpu_only_ops(graph_ops(graph))
    falls_back = f"; its {', '.join(blockers)} fall back to the GPU" if blockers else ""
    return Placement.dla(core, f"every engine on DLA core {core} with GPU fallback (dla.stages = \"all\"){falls_back}")


def _fp32_reason(precisions: Sequence[str]) -> str | None:
    """Why a graph computing in `precisions` cannot run on the DLA, or None when it can."""
    if bad := sorted({p for p in precisions if p not in DLA_PRECISIONS}):
        return (f"computes in {', '.join(bad)}, and the DLA runs FP16 and INT8 only: on the GPU (write FP16 or INT8 "
                "graphs with `dvit precision --precision fp16` to put it on the DLA)")
    return None


# ---------------------------------------------------------------------------------------------- a graph set
def request(core: int | None, target: Target) -> DlaRequest | None:
    """The DLA request of a build whose settings chose DLA core `core` (None: no DLA) for `target`."""
    return None if core is None else DlaRequest(core, target.dla.stages)


def off_reason(target: Target, use_dla: bool | None) -> str:
    """Why a build without DLA puts everything on the GPU, naming the switch where there is one."""
    if target.dla.cores == 0:
        return f"target {target.name} has no DLA"
    if use_dla is False:
        return "built with --no-dla"
    return f"DLA is opt-in: dla.enabled = false in {target.path.name} (`dvit build --dla` builds for it)"


def graph_precisions(src: GraphSet, e: GraphEntry) -> tuple[str, ...]:
    """The precision(s) graph `e` computes in: its entry's, else the set's (a stage's own, every stage's for the
    fused graph and the teacher)."""
    p = e.info.get("precision") or (src.precision[e.index] if e.index is not None else src.precision)
    return (p,) if isinstance(p, str) else tuple(p)


def plan(src: GraphSet, batches: Iterable[int], dla: DlaRequest | None,
         off: str = "the build does not use the DLA") -> dict[tuple[int, str], Placement]:
    """The placement of every graph of `src` in `batches`, keyed (batch size, graph name)."""
    return {(b, e.name): place(e.role, e.path, graph_precisions(src, e), dla, off)
            for b in batches for e in src.batch(b).entries()}


# ---------------------------------------------------------------------------------------------- saying it
def summary(placements: Mapping[str, Placement]) -> str:
    """One line: 'stage0 on DLA core 0 (GPU fallback); stage1-3, fused, teacher on the GPU', from the placements by
    graph name (one batch size's, or names prefixed 'b1/' where batch sizes differ). Where nothing went on the DLA,
    the first stage's reason says why."""
    by_core: dict[int, list[str]] = {}
    gpu: list[str] = []
    for name, p in placements.items():
        if p.on_dla and p.dla_core is not None:
            by_core.setdefault(p.dla_core, []).append(name)
        else:
            gpu.append(name)
    parts = [f"{_names(names)} on DLA core {core} (GPU fallback)" for core, names in sorted(by_core.items())]
    if gpu:
        parts.append(f"{_names(gpu)} on the GPU")
    line = "; ".join(parts)
    if not by_core and placements:
        first = next(iter(placements.items()))
        line += f" ({first[0]}: {first[1].reason})"
    return line


def by_name(placements: Mapping[tuple[int, str], Placement]) -> dict[str, Placement]:
    """Placements by graph name where every batch size agrees; 'b{B}/name' keys for a name they disagree on."""
    names: dict[str, dict[int, Placement]] = {}
    for (batch, name), p in placements.items():
        names.setdefault(name, {})[batch] = p
    out: dict[str, Placement] = {}
    for name, per_batch in names.items():
        if len({p.label for p in per_batch.values()}) == 1:
            out[name] = next(iter(per_batch.values()))
        else:
            out.update({f"b{b}/{name}": p for b, p in sorted(per_batch.items())})
    return out


def _names(names: list[str]) -> str:
    """'stage0, stage1, stage2, fused' -> 'stage0-2, fused': runs of consecutive stage indices joined."""
    out: list[str] = []
    run: list[tuple[str, int]] = []  # (prefix such as "b1/", stage index)

    def flush() -> None:
        if run:
            (prefix, first), last = run[0], run[-1][1]
            out.append(f"{prefix}stage{first}" + (f"-{last}" if last != first else ""))
            run.clear()

    for name in names:
        m = _STAGE_NAME.fullmatch(name)
        if m and run and run[-1] == (m[1], int(m[2]) - 1):
            run.append((m[1], int(m[2])))
            continue
        flush()
        if m:
            run.append((m[1], int(m[2])))
        else:
            out.append(name)
    flush()
    return ", ".join(out)
