"""`dvit export`: static-ratio ONNX graphs of a DynamicViT, split at the pruning points, plus a fused graph.

For each static batch size B the export writes, under DIR/b{B}/:
  stage0.onnx            images [B,C,H,W]        -> tokens_1 [B,N+1,C]             (patch embed + blocks before
                                                                                     the first pruning point)
  stage{i}.onnx, i >= 1  tokens_i [B,N_{i-1}+1,C] -> tokens_{i+1} [B,k_i+1,C]       (prediction module, TopK(k_i),
                                                     (logits [B,classes] if last)   one batched gather, blocks)
                                                     kept_indices_i [B,k_i] int64
  fused.onnx             images -> logits, kept_indices_1..S   (the stages in one graph; node names "/stage{i}/...")
  teacher.onnx           images -> logits                       (the dense teacher, with --teacher)
and DIR/manifest.json describing each graph (I/O, block ranges, keep counts, hashes).

The spatial families (DynamicCNN on ConvNeXt, DynamicSwin; pipeline/spatial) follow the same contract with
`features_i` for `tokens_i`: stage 0 runs the stem and the third stage's blocks up to the first pruning location;
stage i ranks every position of the third stage's map (one TopK), runs its blocks with the top k_i positions on
the slow path and the rest on the fast path (GatherElements, both paths, ScatterElements back), and returns the map,
unchanged in shape, with `kept_indices_i`: the slow positions of the whole map (absolute, not nested). Their dense
teacher is split at the student's pruning locations, so its nodes carry the same /stageN/ prefixes.

Each graph is traced from small modules that call the model's own stage functions (DynamicViT.embed,
run_blocks, keep_scores, select_tokens, classify), simplified, checked (onnx.checker full check, strict shape
inference, fully static shapes, the TensorRT operator scan), then run in ONNX Runtime on real test images and
compared with PyTorch: logits within 1e-4, kept indices identical (the only allowance: tokens whose PyTorch keep
scores are closer than 1e-5, whose order float rounding decides; each such case is counted in the manifest). Any
failure leaves no output behind.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import onnx_utils, opscan
from ..checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..checkpoint import load_model
from ..data import FMNIST_CLASSES, VerificationData, verification_data
from ..errors import CheckpointError, DvitError
from ..graphset import GraphSet, batch_section, write_graph_set
from ..io import atomic_dir, sha256_file
from ..manifest import file_entry
from ..preprocessing import Preprocessing, from_training
from ..spatial.config import SPATIAL_FAMILIES
from .modules import FusedModule, GraphSpec, StageModule, TeacherModule, plan_graphs, stage_io
from .verify import (
    LOGITS_ATOL,
    SCORE_TIE_ATOL,
    TOKENS_RTOL,
    check_selection,
    compare,
    torch_reference,
    verify,
)

if TYPE_CHECKING:
    from ..config import AnyConfig

__all__ = ["FusedModule", "GraphSpec", "StageModule", "TeacherModule", "check_selection", "compare", "export",
           "plan_graphs", "stage_io"]

# Opset 17 is the lowest with a native LayerNormalization (one TensorRT normalization layer per LayerNorm instead
# of ~9 elementwise ops, which also keeps FP16 accuracy); TensorRT 10.3's parser reads opsets 9..20, ONNX Runtime
# 1.24 reads them all, and torch's TorchScript exporter stops at 20.
DEFAULT_OPSET = 17
OPSET_RANGE = (17, 20)
DEFAULT_BATCH_SIZES = (1, 8)
VERIFY_IMAGES = 8


# ---- loading and validating the inputs ----
def parse_batch_sizes(text: str | Sequence[int]) -> tuple[int, ...]:
    try:
        sizes = [int(s) for s in (text.split(",") if isinstance(text, str) else text) if str(s).strip()]
    except ValueError as e:
        raise DvitError(f"batch sizes '{text}' are not integers: pass e.g. --batch-sizes 1,8") from e
    if not sizes:
        raise DvitError("no batch size given: pass e.g. --batch-sizes 1,8")
    bad = [s for s in sizes if s < 1]
    if bad:
        raise DvitError(f"batch size {bad[0]} is not positive: pass sizes >= 1, e.g. --batch-sizes 1,8")
    return tuple(sorted(set(sizes)))


def load_student(path: str | Path, keep_ratio: float | None = None, preset: str | None = None) -> Any:
    """The student, optionally at another keep ratio (architecture unchanged; ModelConfig validates it); a file
    that does not say its architecture (official DynamicViT, timm) takes it from `preset`."""
    return load_model(path, keep_ratio=keep_ratio, preset=preset)


def load_teacher(path: str | Path, student: AnyConfig, preset: str | None = None) -> Any:
    model = load_model(path, preset=preset)
    cfg = model.cfg
    if not cfg.is_dense:
        raise CheckpointError(
            f"teacher checkpoint {path} has pruning locations {list(cfg.pruning_loc)}: pass the dense teacher "
            "(written by 'dvit train --mode teacher')"
        )
    mismatch = [k for k in ("img_size", "in_chans", "num_classes") if getattr(cfg, k) != getattr(student, k)]
    if mismatch:
        raise CheckpointError(
            f"teacher checkpoint {path} differs from the student in {', '.join(mismatch)}: pass the teacher the "
            "student was distilled from"
        )
    return model


def checkpoint_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a checkpoint written by 'dvit train' that the export uses: `data` (source, classes, mean,
    std; only when it names a source) and `train_config`; {} for any other file. One read, with the tensors
    memory-mapped, not loaded: only the small records are wanted."""
    if not Path(path).is_file():
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file cannot be mapped; load_model read it already
        return {}
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        return {}
    out = {key: obj[key] for key in ("data", "train_config") if isinstance(obj.get(key), dict)}
    if not out.get("data", {}).get("source"):
        out.pop("data", None)
    return out


NORM_FROM = {
    "checkpoint": "checkpoint data record",
    "dataset": "dataset default (Fashion-MNIST training statistics; the checkpoint records none)",
    "these images": "the verification images' own statistics (the checkpoint records none)",
}


def preprocessing_record(cfg: AnyConfig, records: dict[str, dict[str, Any]],
                         verification: VerificationData) -> Preprocessing:
    """What a device does to an image to make the graphs' input: the eval path of the checkpoint's training
    recipe (`records`: checkpoint_records), normalised as the verification images were, with the class names the
    checkpoint records (else Fashion-MNIST's when it verified on them, else none, said why)."""
    data, train_config = records.get("data"), records.get("train_config")
    norm = verification.normalization
    if norm:
        mean, std, norm_from = norm["mean"], norm["std"], NORM_FROM.get(str(norm.get("from")), str(norm.get("from")))
    else:
        mean = std = None
        norm_from = f"absent: verified on {verification.source}, and the checkpoint records no mean/std"
    classes = (data or {}).get("classes")
    if isinstance(classes, (list, tuple)) and len(classes) == cfg.num_classes:
        classes_from = "checkpoint data record"
    elif verification.source.startswith("fashion-mnist:"):
        classes, classes_from = FMNIST_CLASSES, "dataset default (Fashion-MNIST, the verification images)"
    else:
        classes, classes_from = None, "absent: the checkpoint records no class names"
    return from_training(in_chans=cfg.in_chans, img_size=cfg.img_size, train_config=train_config, mean=mean, std=std,
                         norm_from=norm_from, classes=classes, classes_from=classes_from)


def verification_set(cfg: AnyConfig, checkpoint: str | Path, count: int, data: str | None,
                     records: dict[str, dict[str, Any]] | None = None) -> VerificationData:
    """The images every graph is verified on: --data, else what the checkpoint was trained on (`records`, read
    from `checkpoint` when not given), else the default (see data.verification_data); only these `count` images
    are decoded."""
    records = checkpoint_records(checkpoint) if records is None else records
    return verification_data(cfg, count, data, records.get("data"))


# ---- tracing, finishing, verifying ----
def trace(spec: GraphSpec, opset: int) -> onnx_utils.ModelProto:
    """torch.onnx.export with the TorchScript exporter (dynamo=False).

    Why not the default dynamo exporter: its node names are flat ("node_MatMul_13") with the module path only in
    metadata, while the precision stage assigns per-stage precision by node-name prefix; the TorchScript exporter
    names nodes by module path ("/stage2/blocks.5/attn/MatMul"), emits TopK (never ArgMax/ArgSort) with a
    constant K and static shapes, and traces these graphs ten times faster. Initializers are kept as inputs during
    the trace only to stop its initializer de-duplication, which would share equal-valued weights between stages.
    """
    dummy = tuple(torch.zeros(shape) for _, shape in spec.inputs)
    with tempfile.TemporaryDirectory(prefix="dvit-export-") as d, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the TorchScript exporter's deprecation notice
        path = Path(d) / "raw.onnx"
        torch.onnx.export(
            spec.module, dummy, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[n for n, _ in spec.inputs], output_names=spec.outputs, keep_initializers_as_inputs=True,
        )
        model = onnx_utils.load(path)
    return onnx_utils.drop_initializer_inputs(model)


def finish(model: onnx_utils.ModelProto, spec: GraphSpec, table: opscan.OpTable) -> onnx_utils.ModelProto:
    """Simplify, check (full checker, strict inference, static shapes) and scan; raise on any problem."""
    model = onnx_utils.simplify(model)
    inferred = onnx_utils.check(model)
    loose = onnx_utils.non_static_values(inferred)
    if loose:
        raise DvitError(f"{spec.rel} has tensors without a static shape ({'; '.join(loose[:3])}): report this as a bug")
    findings = opscan.scan_model(model, table, file=spec.rel, check_shapes=False)
    if findings:
        raise DvitError(
            f"{spec.rel} would not parse in TensorRT: "
            + "; ".join(f"{f.node} ({f.op}): {f.problem}" for f in findings[:3])
        )
    if spec.kind == "fused":
        _, orphans = onnx_utils.stage_attribution(model)
        if orphans:
            raise DvitError(f"{spec.rel}: nodes without a /stageN/ prefix ({', '.join(orphans[:3])}): report this as a bug")
    return inferred


# ---- the export ----
@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    graphs: list[str] = field(default_factory=list)


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    teacher: str | Path | None = None,
    keep_ratio: float | None = None,
    model_preset: str | None = None,
    batch_sizes: Sequence[int] | str = DEFAULT_BATCH_SIZES,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    data: str | None = None,
    verify_images: int = VERIFY_IMAGES,
    progress: bool = True,
    table: opscan.OpTable | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export, check and verify every graph into `out` (atomically: on any error nothing is left behind)."""
    sizes = parse_batch_sizes(batch_sizes)
    if not OPSET_RANGE[0] <= int(opset) <= OPSET_RANGE[1]:
        raise DvitError(f"opset {opset} is outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]}: pass --opset {DEFAULT_OPSET}")
    if verify_images < 1:
        raise DvitError(f"--verify-images {verify_images} must be at least 1")
    out = Path(out)
    # Hash before loading, so that the manifest names exactly the bytes the graphs came from.
    ckpt_hash = sha256_file(checkpoint) if Path(checkpoint).is_file() else None
    model = load_student(checkpoint, keep_ratio, model_preset)
    cfg = model.cfg
    teacher_hash = sha256_file(teacher) if teacher is not None and Path(teacher).is_file() else None
    teacher_model = load_teacher(teacher, cfg, model_preset) if teacher is not None else None
    table = table or opscan.load_table()
    specs = plan_graphs(model, sizes, teacher_model)
    records = checkpoint_records(checkpoint)
    verification = verification_set(cfg, checkpoint, max(verify_images, *sizes), data, records)
    preprocessing = preprocessing_record(cfg, records, verification)
    if log:
        log(f"verifying on {verification.text}")
        log(preprocessing.summary())

    with atomic_dir(out, overwrite=overwrite) as tmp:
        graphs: dict[str, dict[str, Any]] = {}
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=len(specs), desc="export", unit="graph", disable=not progress, file=sys.stderr)
        for b in sizes:
            of_b = [s for s in specs if s.batch == b]
            images = verification.images[: max(verify_images, b)]
            n_img = math.ceil(images.shape[0] / b) * b
            images = images[torch.arange(n_img) % images.shape[0]]
            ref = torch_reference(of_b, images)
            (tmp / f"b{b}").mkdir()
            entry: dict[str, Any] = {"stages": [], "fused": None, "teacher": None}  # one batch_section
            for spec in of_b:
                bar.set_postfix_str(spec.rel)
                finished = finish(trace(spec, opset), spec, table)
                report = verify(spec, finished, ref[spec.name])
                onnx_utils.save(finished, tmp / spec.rel)
                inputs, outputs = onnx_utils.io_signature(finished)
                info: dict[str, Any] = {"inputs": inputs, "outputs": outputs, "nodes": len(finished.graph.node),
                                        "verification": report}
                if spec.kind == "stage":
                    info.update(index=spec.index, blocks=list(spec.blocks or ()), keep_count=spec.keep_count)
                    entry["stages"].append(file_entry(tmp, spec.rel, **info))
                elif spec.kind == "fused":
                    counts, _ = onnx_utils.stage_attribution(finished)
                    info["stage_prefixes"] = {str(i): f"/stage{i}/" for i in sorted(counts)}
                    info["stage_nodes"] = {str(i): c for i, c in sorted(counts.items())}
                    entry["fused"] = file_entry(tmp, spec.rel, **info)
                else:
                    entry["teacher"] = file_entry(tmp, spec.rel, **info)
                bar.update(1)
                if log:
                    log(f"{spec.rel}: {info['nodes']} nodes, max abs err {report['max_abs_err']}")
            graphs[str(b)] = batch_section(entry["stages"], entry["fused"], entry["teacher"])
        bar.close()
        header = {
            "model_config": cfg.to_dict(),
            "keep_ratio": cfg.keep_ratio,
            "keep_counts": cfg.keep_counts,
            "tokens_per_stage": cfg.tokens_per_stage,
            "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": ckpt_hash},
            "teacher_checkpoint": (
                {"path": str(Path(teacher).resolve()), "sha256": teacher_hash} if teacher is not None else None
            ),
            "teacher_config": teacher_model.cfg.to_dict() if teacher_model is not None else None,
            "opset": int(opset),
            "batch_sizes": list(sizes),
            "exporter": {"name": "torch.onnx.export (TorchScript, dynamo=False)", "torch": torch.__version__},
            "simplifier": onnx_utils.simplifier_version(),
            "preprocessing": preprocessing.to_dict(),
        }
        body = {
            "op_table": {"tensorrt_versions": list(table.versions), "opset_range": list(table.opset_range)},
            "verification": {
                "data": verification.text,
                "data_source": verification.describe(),
                "logits_atol": LOGITS_ATOL,
                "tokens_rtol": TOKENS_RTOL,
                "kept_indices": f"identical, except tokens whose PyTorch keep scores are < {SCORE_TIE_ATOL:g} apart",
                "score_tie_atol": SCORE_TIE_ATOL,
            },
        }
        write_graph_set(tmp, "export", header, graphs, **body)
    return ExportResult(out, GraphSet.load(out, ("export",)).manifest, [s.rel for s in specs])


# ---- CLI ----
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="student checkpoint: written by 'dvit train', an official DynamicViT one, or timm/DeiT weights")
    parser.add_argument("--teacher", default=None, help="dense teacher checkpoint (ours or timm/DeiT): also export teacher.onnx")
    parser.add_argument("--model", default=None, metavar="PRESET",
                        help="architecture of checkpoints that do not say it (official DynamicViT, timm), e.g. "
                        "deit_small_patch16_224 with --keep-ratio 0.7")
    parser.add_argument("--keep-ratio", type=float, default=None,
                        help="export at this keep ratio instead of the checkpoint's (architecture unchanged)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)),
                        help="comma-separated static batch sizes (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="test images for the ONNX Runtime check: an image folder (the first files of its test "
                        "split are decoded, nothing else) or Fashion-MNIST's idx files (default: the data the "
                        "checkpoint records it was trained on, else Fashion-MNIST when the model takes it whole)")
    parser.add_argument("--verify-images", type=int, default=VERIFY_IMAGES,
                        help="images compared against PyTorch per batch size (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output directory (replaced only when the export succeeds)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    result = export(
        args.checkpoint,
        args.out,
        teacher=args.teacher,
        keep_ratio=args.keep_ratio,
        model_preset=args.model,
        batch_sizes=args.batch_sizes,
        opset=args.opset,
        overwrite=args.overwrite,
        data=args.data,
        verify_images=args.verify_images,
        progress=not args.no_progress,
    )
    m = result.manifest
    print(Preprocessing.from_dict(m["preprocessing"]).summary())
    ties = sum(
        e["verification"]["kept_indices"]["near_tie_order"] + e["verification"]["kept_indices"]["near_tie_boundary"]
        for g in m["graphs"].values() for e in [*g["stages"], g["fused"]] if e["verification"]["kept_indices"]
    )
    spatial = m["model_config"].get("family") in SPATIAL_FAMILIES
    counts = (f"slow-path positions {m['keep_counts']} of {m['tokens_per_stage'][0]}" if spatial
              else f"tokens per stage {m['tokens_per_stage']}")
    print(
        f"exported {len(result.graphs)} graphs to {result.out} (keep ratio {m['keep_ratio']}, {counts}, "
        f"batch sizes {m['batch_sizes']}, opset {m['opset']}); all match PyTorch on "
        f"{m['verification']['data']}" + (f" ({ties} image(s) with near-tied keep scores, see manifest)" if ties else "")
    )
    return 0
