"""The precision build driver: every graph of an export graph set converted to the requested per-stage precision.

Largest batch size first: it is calibrated, the other batch sizes take its scales through ModelOpt's
calibration_cache_path, so B=1 and B>1 graphs quantize identically.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DvitError
from ..graphset import GraphEntry, GraphSet, batch_section, write_graph_set
from ..io import atomic_dir, sha256_file
from ..manifest import file_entry, package_versions
from .calibration import (
    COUNTERS,
    DEFAULT_CACHE_DIR,
    CalibrationCache,
    CalibrationSet,
    check_calib_size,
    digest,
    draw_calibration_set,
    graph_calibration_data,
    trt_calibration_cache,
)
from .modelopt_steps import (
    MODELOPT_METHOD,
    activation_scales,
    autocast_fp16,
    modelopt_int8,
    percentile_scales,
    set_activation_scales,
)
from .regions import (
    boundary_producers,
    bypass_qdq,
    exact,
    fp32_in_fp16_region,
    fp32_violations,
    graph_summary,
    not_in_stages,
    pruning_nodes,
    restage_names,
    stage_of,
    stage_teacher_names,
)

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("entropy", "max", "percentile")
DEFAULT_PERCENTILE = 99.99
AUTOCAST_REFERENCE_SAMPLES = 128  # AutoCast's reference run only screens for FP16 overflow


@dataclass
class PrecisionOptions:
    """What `dvit precision` takes besides the graphs: calibration and FP16 settings."""

    calib_size: int = 512
    calib_method: str = "entropy"
    calib_seed: int = 0
    percentile: float = DEFAULT_PERCENTILE
    cache_dir: Path = DEFAULT_CACHE_DIR
    data: str | None = None
    fp16_keep_fp32: list[str] = field(default_factory=list)

    def validate(self) -> None:
        check_calib_size(self.calib_size)
        if self.calib_method not in CALIB_METHODS:
            raise ConfigError(f"unknown calibration method '{self.calib_method}': use {', '.join(CALIB_METHODS)}")
        if not (0.0 < self.percentile <= 100.0):
            raise ConfigError(f"percentile {self.percentile} is outside (0, 100]: pass e.g. --percentile 99.99")


def parse_precision(spec: str, num_stages: int) -> list[str]:
    """'fp16' -> that precision for every stage; 'fp16,int8,int8,fp16' -> one per stage (count must match)."""
    parts = [p.strip().lower() for p in str(spec).split(",")]
    unknown = [p for p in parts if p not in PRECISIONS]
    if unknown:
        raise ConfigError(
            f"unknown precision {', '.join(repr(p) for p in unknown)}: use {', '.join(PRECISIONS)}, "
            "or one per stage such as fp16,int8,int8,fp16"
        )
    if len(parts) == 1:
        return parts * num_stages
    if len(parts) != num_stages:
        raise ConfigError(
            f"--precision lists {len(parts)} precisions but the export has {num_stages} stages: give one precision "
            f"for all, or exactly {num_stages} comma-separated (e.g. {','.join((['fp16'] + ['int8'] * num_stages)[:num_stages])})"
        )
    return parts


def parse_op_types(spec: str | None) -> list[str]:
    return [t.strip() for t in (spec or "").split(",") if t.strip()]



class _Builder:
    def __init__(self, export: GraphSet, out: Path, precisions: list[str], opts: PrecisionOptions) -> None:
        self.export, self.src = export, export.root
        self.out, self.precisions, self.opts = out, precisions, opts
        self.cfg = export.config
        self.cache = CalibrationCache(opts.cache_dir)
        self.calib: CalibrationSet | None = None
        self.int8_info: dict[str, Any] = {"excluded_nodes": {}, "cache": {}, "samples_used": {}, "scales_from": {}}
        self.fp16_excluded: dict[str, list[str]] = {}
        self.fp16_kept: dict[str, list[str]] = {}
        self.primary_scales: dict[str, Path] = {}  # family -> TRT calibration cache of the primary batch size
        self.family_feeds: dict[str, tuple[dict[str, np.ndarray], str]] = {}  # family -> (inputs, data key)

    def calibration_set(self) -> CalibrationSet:
        if self.calib is None:
            self.calib = draw_calibration_set(
                self.opts.calib_size, self.opts.calib_seed, self.opts.data, self.cfg.in_chans, self.cfg.img_size
            )
        return self.calib

    def feeds_for(self, entry: GraphEntry, stages: list[GraphEntry]) -> tuple[dict[str, np.ndarray], str, bool]:
        producers = stages[: entry.index] if entry.role == "stage" else []
        return graph_calibration_data(self.cache, self.calibration_set(), producers, entry, entry.batch)

    def int8(
        self, b: str, entry: dict[str, Any], src: Path, dst: Path, feeds: dict[str, np.ndarray], data_key: str,
        exclude: list[str], family: str, work: Path, scope: list[int] | None, original: set[str],
    ) -> None:
        o = self.opts
        primary_cache = self.primary_scales.get(family)
        desc = {
            "data_key": data_key, "graph_sha256": sha256_file(src), "method": o.calib_method,
            "percentile": o.percentile if o.calib_method == "percentile" else None,
            "exclude": sorted(exclude), "int8_stages": scope,
            "scales_from": sha256_file(primary_cache) if primary_cache else None,
            "versions": {k: v for k, v in package_versions().items() if k in ("nvidia-modelopt", "onnxruntime-gpu", "onnxruntime", "onnx")},
        }
        key = digest(desc)
        hit = self.cache.load_int8(key)
        if hit is not None:
            COUNTERS["int8_hits"] += 1
            shutil.copyfile(hit[0], dst)
        else:
            import onnx

            raw = work / f"{dst.stem}.b{b}.modelopt.onnx"
            if primary_cache is not None:
                # Scales come from the primary batch size: the calibrator only needs one batch to run.
                cal = {k: v[: int(b)] for k, v in feeds.items()}
                modelopt_int8(src, raw, cal, "max", exclude, work, calibration_cache=primary_cache)
            else:
                modelopt_int8(src, raw, feeds, o.calib_method, exclude, work)
            model = onnx.load(str(raw))
            if o.calib_method == "percentile" and primary_cache is None:
                set_activation_scales(model, percentile_scales(src, activation_scales(model), feeds, int(b), o.percentile))
            restage_names(model, original)
            onnx.save(model, str(dst))
            self.cache.store_int8(key, dst, {"described": desc, "activation_scales": activation_scales(model)})
        if primary_cache is None:
            import onnx

            scales = activation_scales(onnx.load(str(dst)))
            cache_file = work / f"{family}.scales.cache"
            cache_file.write_text(trt_calibration_cache(scales))
            self.primary_scales[family] = cache_file
            self.int8_info["scales_from"][family] = f"b{b}"
        rel = entry["file"]
        self.int8_info["cache"][rel] = {"data_key": data_key, "int8_key": key, "hit": hit is not None}

    def convert(self, graph: GraphEntry, stages: list[GraphEntry], work: Path) -> dict[str, Any]:
        import onnx

        b, entry, fused = str(graph.batch), graph.info, graph.role in ("fused", "teacher")
        rel = entry["file"]
        src = self.src / rel
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(src))
        if graph.role == "teacher":  # the student's recipe, block for block (see stage_teacher_names)
            stage_teacher_names(model, self.cfg.pruning_loc)
            src = work / f"teacher.b{b}.staged.onnx"
            onnx.save(model, str(src))
        original = {n.name for n in model.graph.node}
        protected = pruning_nodes(model)
        if fused:
            wanted = list(self.precisions)
            present = sorted({s for s in (stage_of(n.name) for n in model.graph.node) if s is not None})
            if present != list(range(len(stages))):
                raise DvitError(
                    f"{src}: {graph.role} graph node names carry stage prefixes {present}, expected /stage0/../stage{len(stages) - 1}/: "
                    "re-export with the current 'dvit export'"
                )
        else:
            wanted = [self.precisions[entry["index"]]]
        int8_stages = [i for i, p in enumerate(wanted) if p == "int8"]
        fp16_stages = [i for i, p in enumerate(wanted) if p == "fp16"]
        family = graph.role if fused else f"stage{entry['index']}"
        current = src
        feeds: dict[str, np.ndarray] | None = None
        if int8_stages or fp16_stages:
            if family in self.family_feeds:
                # Another batch size of this graph was calibrated first: its inputs are the same per-sample
                # tensors (the FP32 chain's outputs do not depend on B), trimmed to whole batches of b.
                feeds, data_key = self.family_feeds[family]
                n_b = max(int(b), next(iter(feeds.values())).shape[0] // int(b) * int(b))
                feeds = {k: v[:n_b] for k, v in feeds.items()}
            else:
                feeds, data_key, _ = self.feeds_for(graph, stages)
                self.family_feeds[family] = (feeds, data_key)
            self.int8_info["samples_used"][b] = int(next(iter(feeds.values())).shape[0])
        if int8_stages:
            assert feeds is not None
            boundaries = boundary_producers(model) if fused else []
            scope = not_in_stages(int8_stages) if fused and len(int8_stages) < len(wanted) else None
            exclude = exact(protected) + exact(boundaries) + ([scope] if scope else [])
            self.int8_info["excluded_nodes"][entry["file"]] = {
                "pruning_decision": protected, "stage_boundary_producers": boundaries, "outside_int8_stages": scope,
            }
            step = work / f"{family}.b{b}.int8.onnx"
            self.int8(b, entry, current, step, feeds, data_key, exclude, family, work,
                      int8_stages if fused else None, original)
            current = step
        if fp16_stages:
            assert feeds is not None
            exclude = exact(protected)
            if fused and len(fp16_stages) < len(wanted):
                exclude.append(not_in_stages(fp16_stages))
            step = work / f"{family}.b{b}.fp16.onnx"
            n_ref = -(-min(AUTOCAST_REFERENCE_SAMPLES, self.opts.calib_size) // int(b)) * int(b)
            reference = {k: v[:n_ref] for k, v in feeds.items()}
            autocast_fp16(current, step, exclude, self.opts.fp16_keep_fp32, reference, work, original)
            self.fp16_excluded[rel] = protected
            current = step
        final = onnx.load(str(current))
        if bypass_qdq(final, protected):
            onnx.save(final, str(dst))
        else:
            shutil.copyfile(current, dst)
        bad = fp32_violations(final, protected)
        if bad:
            raise DvitError(
                f"{rel}: pruning-decision nodes {bad[:3]} ended up quantized or FP16: this ModelOpt version ignores "
                "node exclusions; pin nvidia-modelopt==0.47.0"
            )
        summary = graph_summary(final, None if fused else entry["index"])
        if fp16_stages:
            self.fp16_kept[rel] = fp32_in_fp16_region(final, fp16_stages if fused else None, set(protected))
        # The export's entry minus what described the FP32 file itself (its hash, size, node counts and its
        # check against PyTorch: `dvit validate` checks these graphs).
        info = {k: v for k, v in entry.items() if k not in ("file", "sha256", "bytes", "nodes", "stage_nodes", "verification")}
        opset = next((o.version for o in final.opset_import if o.domain in ("", "ai.onnx")), None)
        info.update(
            precision=wanted if fused else wanted[0], opset=opset, nodes=len(final.graph.node), summary=summary,
            source={"export_file": rel, "export_sha256": entry["sha256"]},
        )
        if fused:
            info["stage_nodes"] = {k: v["nodes"] for k, v in summary.items()}
        return file_entry(self.out, rel, **info)

    def build(self, progress: bool = True) -> dict[int, Any]:
        from tqdm import tqdm  # type: ignore[import-untyped]

        graphs_out: dict[int, Any] = {}
        jobs = sorted(self.export.batches.values(), key=lambda g: -g.batch)
        total = sum(len(g.entries()) for g in jobs)
        with tempfile.TemporaryDirectory(prefix="dvit-precision.") as tmp, tqdm(
            total=total, desc="precision", unit="graph", file=sys.stderr, disable=None if progress else True
        ) as bar:
            work = Path(tmp)
            # Largest batch size first: it is calibrated, the others take its scales.
            for g in jobs:
                out_stages = []
                for e in g.stages:
                    bar.set_postfix_str(f"b{g.batch} stage{e.index} {self.precisions[e.index or 0]}")
                    out_stages.append(self.convert(e, g.stages, work))
                    bar.update()
                bar.set_postfix_str(f"b{g.batch} fused {','.join(self.precisions)}")
                fused = self.convert(g.fused, g.stages, work)
                bar.update()
                teacher = None
                if g.teacher is not None:
                    bar.set_postfix_str(f"b{g.batch} teacher {','.join(self.precisions)}")
                    teacher = self.convert(g.teacher, g.stages, work)
                    bar.update()
                graphs_out[g.batch] = batch_section(out_stages, fused, teacher)
        return graphs_out


def build_precision(
    graphs_dir: str | Path,
    out_dir: str | Path,
    precision: str,
    options: PrecisionOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **option_values: Any,
) -> Path:
    """Write `out_dir` (graphs + "precision" manifest) from an export graph set; returns out_dir.

    Options come as a PrecisionOptions or as its fields by keyword (calib_size=..., calib_method=..., ...).
    """
    opts = options or PrecisionOptions(**option_values)
    opts.cache_dir = Path(opts.cache_dir)
    opts.validate()
    src_dir, out_dir = Path(graphs_dir), Path(out_dir)
    export = GraphSet.load(src_dir, ("export",))
    if out_dir.resolve() == export.root.resolve():
        raise ConfigError(f"--out {out_dir} is the --graphs directory: write the precision graphs to another directory")
    if out_dir.exists() and not overwrite:
        raise DvitError(f"{out_dir} already exists: remove it or pass --overwrite")
    precisions = parse_precision(precision, export.num_stages)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        builder = _Builder(export, tmp, precisions, opts)
        graphs = builder.build(progress)
        calib = builder.calib
        header = {**export.header(), "precision": precisions}
        write_graph_set(
            tmp, "precision", header, graphs,
            source_manifest={"path": str(export.root.resolve()), "sha256": export.sha256},
            fp16_excluded_nodes=builder.fp16_excluded,
            fp16={
                "tool": "modelopt.onnx.autocast.convert_to_mixed_precision",
                "keep_io_types": True,
                "keep_fp32_op_types": opts.fp16_keep_fp32,
                "autocast_kept_fp32": builder.fp16_kept,
                "reference_samples": AUTOCAST_REFERENCE_SAMPLES,
                "calibration_set": calib.fingerprint() if calib is not None else None,
            } if "fp16" in precisions else None,
            int8={
                "tool": "modelopt.onnx.quantization.quantize",
                "method": opts.calib_method,
                "modelopt_method": MODELOPT_METHOD[opts.calib_method],
                "percentile": opts.percentile if opts.calib_method == "percentile" else None,
                "calib_size": opts.calib_size,
                "calib_seed": opts.calib_seed,
                "calibration_set": calib.fingerprint() if calib is not None else None,
                "calibration_eps": ["cpu"],
                "high_precision_dtype": "fp32",
                "cache_dir": str(opts.cache_dir),
                **builder.int8_info,
            } if "int8" in precisions else None,
        )
    return out_dir
