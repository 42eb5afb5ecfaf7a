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
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import onnx_utils, opscan
from .checkpoint import load_model
from .config import ModelConfig
from .errors import CheckpointError, DataError, DvitError
from .io import atomic_dir, sha256_file
from .manifest import file_entry, read_manifest, write_manifest
from .model import DynamicViT, select_tokens

# Opset 17 is the lowest with a native LayerNormalization (one TensorRT normalization layer per LayerNorm instead
# of ~9 elementwise ops, which also keeps FP16 accuracy); TensorRT 10.3's parser reads opsets 9..20, ONNX Runtime
# 1.24 reads them all, and torch's TorchScript exporter stops at 20.
DEFAULT_OPSET = 17
OPSET_RANGE = (17, 20)
DEFAULT_BATCH_SIZES = (1, 8)
LOGITS_ATOL = 1e-4
# Intermediate tokens live on the residual stream, whose scale grows with depth: compare them relative to it.
TOKENS_RTOL = 1e-4
# Keep scores closer than this are a near-tie: float rounding may order them either way (see check_selection).
SCORE_TIE_ATOL = 1e-5
VERIFY_IMAGES = 8


# ---- modules traced into the graphs ----
class StageModule(nn.Module):
    """Stage `index` of a DynamicViT as its own module, calling the model's stage functions.

    It registers exactly the parts it runs (patch embedding, prediction module, its blocks under their global
    index, the head), so every ONNX node and initializer it produces is named after the stage: inside the fused
    graph "/stage2/blocks.5/attn/MatMul". The model itself is held unregistered: a module registered under two
    stages would be named after only one of them.
    """

    model: DynamicViT  # set with object.__setattr__: deliberately not a registered submodule

    def __init__(self, model: DynamicViT, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        bounds = model.stage_bounds()
        self.index = index
        self.start, self.end = bounds[index]
        self.is_last = index == len(bounds) - 1
        self.keep_count: int | None = None if index == 0 else model.cfg.keep_counts[index - 1]
        if index == 0:
            self.patch_embed = model.patch_embed
            self.cls_token = model.cls_token
            self.pos_embed = model.pos_embed
        else:
            self.score_predictor = model.score_predictor[index - 1]
        self.blocks = nn.Module()
        for j in range(self.start, self.end):
            self.blocks.add_module(str(j), model.blocks[j])
        if self.is_last:
            self.norm = model.norm
            self.head = model.head

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        m = self.model
        idx = None
        if self.index == 0:
            x = m.embed(x)
        else:
            assert self.keep_count is not None
            x, idx = select_tokens(x, m.keep_scores(self.index, x), self.keep_count)
        x = m.run_blocks(x, self.start, self.end)
        if self.is_last:
            x = m.classify(x)
        return x if idx is None else (x, idx)


class FusedModule(nn.Module):
    """All stages in one graph, built from submodules stage0, stage1, ... (their names prefix every node)."""

    def __init__(self, model: DynamicViT) -> None:
        super().__init__()
        self.num_stages = len(model.stage_bounds())
        for i in range(self.num_stages):
            self.add_module(f"stage{i}", StageModule(model, i))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        x, kept = images, []
        for i in range(self.num_stages):
            out = self.get_submodule(f"stage{i}")(images if i == 0 else x)
            if isinstance(out, tuple):
                x, idx = out
                kept.append(idx)
            else:
                x = out
        return (x, *kept)


class TeacherModule(nn.Module):
    """The dense teacher: images -> logits (node names "/teacher/...")."""

    def __init__(self, teacher: DynamicViT) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, images: Tensor) -> Tensor:
        t = self.teacher
        return t.classify(t.run_blocks(t.embed(images), 0, t.cfg.depth))


# ---- what to export ----
@dataclass
class GraphSpec:
    kind: str  # "stage", "fused" or "teacher"
    batch: int
    module: nn.Module
    inputs: list[tuple[str, tuple[int, ...]]]
    outputs: list[str]
    index: int | None = None
    blocks: tuple[int, int] | None = None
    keep_count: int | None = None

    @property
    def name(self) -> str:
        return f"stage{self.index}" if self.kind == "stage" else self.kind

    @property
    def rel(self) -> str:
        return f"b{self.batch}/{self.name}.onnx"


def stage_io(cfg: ModelConfig, batch: int, index: int) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Input names/shapes and output names of stage `index` (tokens_i in, tokens_{i+1} or logits out)."""
    n_stages = len(cfg.pruning_loc) + 1
    last = index == n_stages - 1
    inputs: list[tuple[str, tuple[int, ...]]]
    if index == 0:
        inputs = [("images", (batch, cfg.in_chans, cfg.img_size, cfg.img_size))]
    else:
        inputs = [(f"tokens_{index}", (batch, cfg.tokens_per_stage[index - 1], cfg.embed_dim))]
    outputs = ["logits" if last else f"tokens_{index + 1}"]
    if index > 0:
        outputs.append(f"kept_indices_{index}")
    return inputs, outputs


def plan_graphs(model: DynamicViT, batch_sizes: Sequence[int], teacher: DynamicViT | None = None) -> list[GraphSpec]:
    cfg = model.cfg
    specs: list[GraphSpec] = []
    image_shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    for b in batch_sizes:
        for i, (start, end) in enumerate(model.stage_bounds()):
            inputs, outputs = stage_io(cfg, b, i)
            keep = None if i == 0 else cfg.keep_counts[i - 1]
            specs.append(GraphSpec("stage", b, StageModule(model, i).eval(), inputs, outputs, i, (start, end), keep))
        fused_out = ["logits", *(f"kept_indices_{i + 1}" for i in range(len(cfg.pruning_loc)))]
        specs.append(GraphSpec("fused", b, FusedModule(model).eval(), [("images", (b, *image_shape))], fused_out))
        if teacher is not None:
            specs.append(GraphSpec("teacher", b, TeacherModule(teacher).eval(), [("images", (b, *image_shape))], ["logits"]))
    return specs


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


def load_student(path: str | Path, keep_ratio: float | None = None) -> DynamicViT:
    """Our checkpoint, optionally at another keep ratio (architecture unchanged; ModelConfig validates it)."""
    return load_model(path, keep_ratio=keep_ratio)


def load_teacher(path: str | Path, student: ModelConfig) -> DynamicViT:
    model = load_model(path)
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


def verification_images(cfg: ModelConfig, count: int, data: str | None = None) -> tuple[Tensor, str]:
    """`count` normalised test images the model can take: Fashion-MNIST (or --data), else seeded noise."""
    from .data import load_dataset

    fits_fmnist = cfg.in_chans == 1 and cfg.img_size == 28
    if data is not None or fits_fmnist:
        try:
            ds = load_dataset(data, "test", cfg.in_chans, cfg.img_size)
        except DataError:
            if data is not None:
                raise
        else:
            if ds.in_chans != cfg.in_chans or ds.img_size != cfg.img_size:
                raise DataError(
                    f"{ds.source} has {ds.in_chans}x{ds.img_size}x{ds.img_size} images, the model takes "
                    f"{cfg.in_chans}x{cfg.img_size}x{cfg.img_size}: pass matching --data"
                )
            idx = torch.arange(count) % len(ds)
            return ds.normalize(ds.images[idx]), f"{ds.source} (first {count} images)"
    g = torch.Generator().manual_seed(0)
    return torch.randn(count, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g), "seeded random normal images"


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


def torch_reference(specs_by_batch: list[GraphSpec], images: Tensor) -> dict[str, dict[str, Any]]:
    """PyTorch inputs, outputs and keep scores of every graph of one batch size on `images`.

    {graph name: {tensor name: array, ..., "scores": [keep scores of each pruning stage the graph runs]}}; the
    scores are those of the stage's input tokens, in PyTorch's token order.
    """
    ref: dict[str, dict[str, Any]] = {}
    scores: list[np.ndarray] = []
    with torch.no_grad():
        x = images
        for spec in specs_by_batch:
            if spec.kind != "stage":
                continue
            stage_scores = []
            if spec.index:
                model: DynamicViT = spec.module.model  # type: ignore[assignment]
                stage_scores = [model.keep_scores(spec.index, x).numpy()]
                scores.extend(stage_scores)
            out = spec.module(x)
            outs = out if isinstance(out, tuple) else (out,)
            ref[spec.name] = {spec.inputs[0][0]: x.numpy(), **{n: o.numpy() for n, o in zip(spec.outputs, outs)},
                              "scores": stage_scores}
            x = outs[0]
        for spec in specs_by_batch:
            if spec.kind == "stage":
                continue
            out = spec.module(images)
            outs = out if isinstance(out, tuple) else (out,)
            ref[spec.name] = {"images": images.numpy(), **{n: o.numpy() for n, o in zip(spec.outputs, outs)},
                              "scores": scores if spec.kind == "fused" else []}
    return ref


@dataclass
class SelectionCheck:
    """Per image: "identical", "tie-order" (same kept tokens, near-tied ones in another order) or "tie-set"
    (a near-tie at the keep boundary made the two sides keep different tokens: later outputs are incomparable)."""

    status: list[str]
    swaps: int = 0
    max_tie_gap: float = 0.0


def check_selection(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], scores: Sequence[np.ndarray], name: str
) -> SelectionCheck:
    """Kept indices of consecutive pruning stages, ONNX Runtime (got) against PyTorch (want), image by image.

    They must be identical. The one exception is a near-tie: two tokens whose PyTorch keep scores differ by less
    than SCORE_TIE_ATOL, an order that float rounding decides either way (ONNX Runtime's scores differ from
    PyTorch's by ~1e-7). Later stages index into their own input, whose order follows the earlier stage, so the
    comparison runs on token ids of the graph's input.
    """
    n_img = want[0].shape[0] if want else 0
    check = SelectionCheck(["identical"] * n_img)
    for b in range(n_img):
        ids_w = ids_g = np.arange(scores[0].shape[1])
        for s in range(len(want)):
            w, g = ids_w[want[s][b]], ids_g[got[s][b]]
            if not np.array_equal(w, g):
                by_id = dict(zip(ids_w.tolist(), scores[s][b].tolist()))
                for j in np.nonzero(w != g)[0]:
                    a, c = int(g[j]), int(w[j])
                    gap = abs(by_id[a] - by_id[c]) if a in by_id else float("inf")
                    if not gap < SCORE_TIE_ATOL:
                        raise DvitError(
                            f"{name}: kept indices of pruning stage {s + 1} differ from PyTorch on image {b} (token {a} "
                            f"instead of {c}, keep scores {gap:.3g} apart): report this as a bug, with the checkpoint"
                        )
                    check.swaps += 1
                    check.max_tie_gap = max(check.max_tie_gap, gap)
                if set(w.tolist()) != set(g.tolist()):
                    check.status[b] = "tie-set"
                    break
                check.status[b] = "tie-order"
            ids_w, ids_g = w, g
    return check


def compare(spec: GraphSpec, got: dict[str, np.ndarray], want: dict[str, Any]) -> dict[str, Any]:
    """Check ONNX Runtime's outputs against PyTorch's; raises on any difference beyond float rounding.

    Kept indices: see check_selection. Logits: max abs error < LOGITS_ATOL. Tokens: within TOKENS_RTOL of the
    residual stream's scale (rows matched by token where near-tied tokens were kept in another order). Images
    whose kept tokens differ by a boundary near-tie are left out of the float comparison and counted.
    """
    for out in spec.outputs:
        if got[out].shape != want[out].shape:
            raise DvitError(f"{spec.rel}: output {out} is {got[out].shape} in ONNX Runtime but {want[out].shape} in PyTorch")
    sel = [o for o in spec.outputs if o.startswith("kept_indices")]
    n_img = got[spec.outputs[0]].shape[0]
    check = (
        check_selection([got[o] for o in sel], [want[o] for o in sel], want["scores"], spec.rel)
        if sel else SelectionCheck(["identical"] * n_img)
    )
    comparable = [b for b in range(n_img) if check.status[b] != "tie-set"]
    if not comparable:
        raise DvitError(
            f"{spec.rel}: every verification image hit a near-tie of keep scores at a keep boundary, so nothing could be "
            "compared: pass more --verify-images"
        )
    errs: dict[str, float] = {}
    for out in spec.outputs:
        if out in sel:
            continue
        a, b = got[out][comparable], np.array(want[out][comparable])
        if out.startswith("tokens_") and sel:
            for r, img in enumerate(comparable):
                if check.status[img] == "tie-order":  # match rows by token: class token, then kept tokens
                    pos = {int(v): p for p, v in enumerate(want[sel[0]][img])}
                    b[r] = want[out][img][[0, *(1 + pos[int(v)] for v in got[sel[0]][img])]]
        err = float(np.abs(a.astype(np.float64) - b).max())
        errs[out] = err
        tol = LOGITS_ATOL if out == "logits" else TOKENS_RTOL * max(1.0, float(np.abs(b).max()))
        if not err < tol:
            raise DvitError(f"{spec.rel}: {out} differs from PyTorch by {err:.3g} (limit {tol:.3g}): report this as a bug")
    return {
        "images": n_img,
        "max_abs_err": errs,
        "kept_indices": {"identical": check.status.count("identical"), "near_tie_order": check.status.count("tie-order"),
                         "near_tie_boundary": check.status.count("tie-set"), "max_tie_score_gap": check.max_tie_gap}
        if sel else None,
    }


def verify(spec: GraphSpec, model: onnx_utils.ModelProto, ref: dict[str, Any]) -> dict[str, Any]:
    """Run the finished graph in ONNX Runtime (CPU), batch by batch, against the PyTorch reference."""
    sess = onnx_utils.ort_session(model)
    in_name = spec.inputs[0][0]
    n = ref[in_name].shape[0]
    got: dict[str, list[np.ndarray]] = {o: [] for o in spec.outputs}
    for s in range(0, n, spec.batch):
        out = onnx_utils.run(sess, {in_name: ref[in_name][s : s + spec.batch]})
        for o in spec.outputs:
            got[o].append(out[o])
    return compare(spec, {o: np.concatenate(v) for o, v in got.items()}, ref)


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
    model = load_student(checkpoint, keep_ratio)
    cfg = model.cfg
    teacher_hash = sha256_file(teacher) if teacher is not None and Path(teacher).is_file() else None
    teacher_model = load_teacher(teacher, cfg) if teacher is not None else None
    table = table or opscan.load_table()
    specs = plan_graphs(model, sizes, teacher_model)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        graphs: dict[str, dict[str, Any]] = {}
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=len(specs), desc="export", unit="graph", disable=not progress, file=sys.stderr)
        data_desc = ""
        for b in sizes:
            of_b = [s for s in specs if s.batch == b]
            images, data_desc = verification_images(cfg, max(verify_images, b), data)
            n_img = math.ceil(images.shape[0] / b) * b
            images = images[torch.arange(n_img) % images.shape[0]]
            ref = torch_reference(of_b, images)
            (tmp / f"b{b}").mkdir()
            entry: dict[str, Any] = {"stages": [], "fused": None, "teacher": None}
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
            graphs[str(b)] = entry
        bar.close()
        body = {
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
            "op_table": {"tensorrt_versions": list(table.versions), "opset_range": list(table.opset_range)},
            "verification": {
                "data": data_desc,
                "logits_atol": LOGITS_ATOL,
                "tokens_rtol": TOKENS_RTOL,
                "kept_indices": f"identical, except tokens whose PyTorch keep scores are < {SCORE_TIE_ATOL:g} apart",
                "score_tie_atol": SCORE_TIE_ATOL,
            },
            "graphs": graphs,
            "files": [s.rel for s in specs],
        }
        write_manifest(tmp, "export", body)
    manifest = read_manifest(out, "export")
    return ExportResult(out, manifest, [s.rel for s in specs])


# ---- CLI ----
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="student checkpoint written by 'dvit train'")
    parser.add_argument("--teacher", default=None, help="dense teacher checkpoint: also export teacher.onnx")
    parser.add_argument("--keep-ratio", type=float, default=None,
                        help="export at this keep ratio instead of the checkpoint's (architecture unchanged)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)),
                        help="comma-separated static batch sizes (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="test images for the ONNX Runtime check (default: Fashion-MNIST when the model fits it)")
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
        batch_sizes=args.batch_sizes,
        opset=args.opset,
        overwrite=args.overwrite,
        data=args.data,
        verify_images=args.verify_images,
        progress=not args.no_progress,
    )
    m = result.manifest
    ties = sum(
        e["verification"]["kept_indices"]["near_tie_order"] + e["verification"]["kept_indices"]["near_tie_boundary"]
        for g in m["graphs"].values() for e in [*g["stages"], g["fused"]] if e["verification"]["kept_indices"]
    )
    print(
        f"exported {len(result.graphs)} graphs to {result.out} (keep ratio {m['keep_ratio']}, tokens per stage "
        f"{m['tokens_per_stage']}, batch sizes {m['batch_sizes']}, opset {m['opset']}); all match PyTorch on "
        f"{m['verification']['data']}" + (f" ({ties} image(s) with near-tied keep scores, see manifest)" if ties else "")
    )
    return 0
