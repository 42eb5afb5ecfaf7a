"""`dvit precision`: FP16 and INT8 written into the exported ONNX graphs, per stage.

TensorRT 10+/11 builds strongly typed networks from what the ONNX says, so precision lives in the graph:

* fp32: the exported graph, copied.
* fp16: ModelOpt AutoCast (modelopt.onnx.autocast.convert_to_mixed_precision) with graph I/O kept FP32
  (stages chain) and the pruning decision kept FP32: every TopK and every node whose outputs flow only into
  a TopK's scores (the prediction module, from the token slice to the keep score), found structurally from
  the TopK backwards (the exporter names those nodes "/in_conv/..", "/out_conv.N/..") plus any node
  named or namespaced "score_predictor". `--fp16-keep-fp32 LayerNormalization,Softmax` keeps op types FP32
  too. AutoCast also keeps FP32 what overflows FP16 on real calibration data (its reference run).
* int8: ModelOpt ONNX PTQ (modelopt.onnx.quantization.quantize) to explicit QuantizeLinear/DequantizeLinear,
  activations calibrated on Fashion-MNIST TRAIN images (pipeline.calibration), the rest FP32
  (high_precision_dtype="fp32"), the same pruning-decision nodes excluded from quantization. In the fused
  graph the nodes producing a stage boundary are excluded too, as ModelOpt leaves a stage graph's output
  layer unquantized: the fused graph then has the chain's Q/DQ placement and scales.
  Calibration runs on ONNX Runtime's CPU provider only. ModelOpt 0.47 knows 'entropy' and 'max' for INT8
  (any other name silently means max); 'percentile' is ours: max calibration, then each activation scale
  clipped to the --percentile of |x| on the same data. The largest batch size of each graph is calibrated;
  the other batch sizes take its scales through ModelOpt's calibration_cache_path, so B=1 and B>1 graphs
  quantize identically.
* per stage, e.g. `fp16,int8,int8,fp16`: stage graph i gets precision i; the fused graph gets the same mix
  through its node-name prefixes "/stage{i}/" (INT8 first, then AutoCast on the FP16 stages). Nodes that
  the tools insert (Q/DQ, Cast) are renamed into the stage they serve, so every fused node keeps its prefix.

The output directory mirrors the export's (b{B}/stage{i}.onnx, fused.onnx, teacher.onnx copied FP32) with
a "precision" manifest whose "graphs" has the export manifest's structure, so `dvit validate` reads both.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import (
    COUNTERS,
    DEFAULT_CACHE_DIR,
    CalibrationCache,
    CalibrationSet,
    check_calib_size,
    digest,
    draw_calibration_set,
    graph_calibration_data,
    ort_session,
    trt_calibration_cache,
)
from .config import ModelConfig
from .errors import ConfigError, DvitError
from .io import atomic_dir, sha256_file
from .manifest import file_entry, package_versions, read_manifest, write_manifest

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("entropy", "max", "percentile")
# Our method names -> the name ModelOpt's INT8 quantizer takes (it maps 'entropy' to ORT's Entropy
# calibrator and everything else to MinMax; percentile clipping is applied afterwards by us).
MODELOPT_METHOD = {"entropy": "entropy", "max": "max", "percentile": "max"}
DEFAULT_PERCENTILE = 99.99
AUTOCAST_REFERENCE_SAMPLES = 128  # AutoCast's reference run only screens for FP16 overflow
STAGE_RE = re.compile(r"^/stage(\d+)/")
PRUNING_NAME_HINT = "score_predictor"


# ---------------------------------------------------------------- arguments
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


# ---------------------------------------------------------------- graph analysis
def stage_of(name: str) -> int | None:
    m = STAGE_RE.match(name)
    return int(m.group(1)) if m else None


def _namespace(node: Any) -> str:
    return " ".join(p.value for p in node.metadata_props if p.key in ("namespace", "pkg.torch.onnx.name_scopes"))


def pruning_nodes(model: Any) -> list[str]:
    """Names of the nodes that decide which tokens are kept: they stay FP32 and unquantized.

    Every TopK; every node all of whose outputs flow only into those nodes (computed backwards from the
    TopK, so the score path of the prediction module from the token slice onwards, whatever the exporter
    named it); and every node named or namespaced after the prediction modules ("score_predictor").
    """
    g = model.graph
    nodes = list(g.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(i)
    graph_outputs = {o.name for o in g.output}
    keep = {i for i, n in enumerate(nodes) if n.op_type == "TopK"}
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(nodes))):
            if i in keep:
                continue
            outs = [t for t in nodes[i].output if t]
            if not outs or any(t in graph_outputs for t in outs):
                continue
            users = [c for t in outs for c in consumers.get(t, [])]
            if users and all(c in keep for c in users):
                keep.add(i)
                changed = True
    for i, n in enumerate(nodes):
        if PRUNING_NAME_HINT in n.name or PRUNING_NAME_HINT in _namespace(n):
            keep.add(i)
    return [nodes[i].name for i in sorted(keep)]


def boundary_producers(model: Any) -> list[str]:
    """Nodes of a fused graph whose outputs feed another stage: the stage graphs' output layers.

    ModelOpt never quantizes a layer producing a graph output, so in the stage graphs the last residual Add of
    each stage stays unquantized; excluding the same nodes in the fused graph gives it the stage chain's
    Q/DQ placement (and, with the same calibration data, the same scales).
    """
    producer = {t: n.name for n in model.graph.node for t in n.output}
    out: set[str] = set()
    for n in model.graph.node:
        s = stage_of(n.name)
        if s is None:
            continue
        for t in n.input:
            p = producer.get(t)
            if p is not None and stage_of(p) not in (None, s):
                out.add(p)
    return sorted(out)


def exact(names: list[str]) -> list[str]:
    """Regexes matching exactly these node names (ModelOpt's node filters are regexes, matched with re.match)."""
    return [re.escape(n) + "$" for n in names]


def not_in_stages(stages: list[int]) -> str:
    """A regex matching every node name outside the given "/stage{i}/" prefixes."""
    alt = "|".join(str(s) for s in sorted(stages))
    return rf"^(?!/stage(?:{alt})/)"


def restage_names(model: Any, original: set[str]) -> int:
    """Give the nodes ModelOpt/AutoCast inserted (Q/DQ, Cast: those not in `original`) the "/stage{i}/" prefix
    of the stage they serve: that of their consumers, else of their producers. Their own names derive from
    tensor names, which carry the producing stage's prefix: a Cast feeding stage 3 from stage 2 would otherwise
    count as stage 2's. Returns how many nodes were renamed."""
    g = model.graph
    nodes = list(g.node)
    if not any(stage_of(n.name) is not None for n in nodes):
        return 0  # a stage graph: no prefixes to keep
    producer: dict[str, int] = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    stage: dict[int, int | None] = {
        i: (stage_of(n.name) if n.name in original else None) for i, n in enumerate(nodes)
    }
    pending = [i for i, n in enumerate(nodes) if n.name not in original]
    while pending:
        resolved = []
        for i in pending:
            down = [stage[c] for t in nodes[i].output for c in consumers.get(t, [])]
            up = [stage[producer[t]] for t in nodes[i].input if t in producer]
            found = next((s for s in down + up if s is not None), None)
            if found is not None:
                stage[i] = found
                resolved.append(i)
        if not resolved:
            break
        pending = [i for i in pending if stage[i] is None]
    renamed = 0
    for i, n in enumerate(nodes):
        if n.name in original or stage[i] is None:
            continue
        base = STAGE_RE.sub("", n.name).lstrip("/") or f"{n.op_type}_{i}"
        new = f"/stage{stage[i]}/{base}"
        if new != n.name:
            n.name = new
            renamed += 1
    return renamed


def tensor_types(model: Any) -> dict[str, int]:
    """Element type of every typed tensor (inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        # best effort: an untyped tensor just counts as unknown
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def graph_summary(model: Any, default_stage: int | None = None) -> dict[str, dict[str, int]]:
    """Per stage ("/stage{i}/" prefix, or default_stage for a stage graph): Q/DQ, FP16/FP32 Casts and the
    nodes computing in FP16 (a float input or output typed FP16)."""
    from onnx import TensorProto

    types = tensor_types(model)
    out: dict[str, Counter[str]] = {}
    for n in model.graph.node:
        s = stage_of(n.name)
        key = str(s if s is not None else default_stage if default_stage is not None else "none")
        c = out.setdefault(key, Counter())
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            c[n.op_type] += 1
        elif n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to == TensorProto.FLOAT16:
                c["cast_to_fp16"] += 1
            elif to == TensorProto.FLOAT:
                c["cast_to_fp32"] += 1
        elif any(types.get(t) == TensorProto.FLOAT16 for t in list(n.input) + list(n.output) if t):
            c["fp16_nodes"] += 1
        c["nodes"] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def fp32_violations(model: Any, names: list[str]) -> list[str]:
    """Those of `names` that are quantized or compute in FP16 (feed on a Q/DQ output or an FP16 tensor)."""
    from onnx import TensorProto

    types = tensor_types(model)
    by_name = {n.name: n for n in model.graph.node}
    dq_out = {t for n in model.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    bad = []
    for name in names:
        n = by_name.get(name)
        if n is None:
            continue
        ts = [t for t in list(n.input) + list(n.output) if t]
        if any(types.get(t) == TensorProto.FLOAT16 for t in ts) or any(t in dq_out for t in n.input):
            bad.append(name)
    return bad


# ---------------------------------------------------------------- conversions
def _disable_stub_tensorrt() -> None:
    """ModelOpt treats an importable `tensorrt` as a working TensorRT; the `tensorrt-stubs` type-stub package,
    when installed into site-packages (`make setup` keeps it out), makes an empty `tensorrt` importable and
    ModelOpt then fails on trt.Logger. Tell ModelOpt there is no TensorRT unless the real bindings are present."""
    from modelopt.onnx import trt_utils  # type: ignore[import-untyped]

    try:
        import tensorrt  # type: ignore[import-untyped]

        real = hasattr(tensorrt, "Logger")
    except ImportError:
        real = False
    if not real:
        trt_utils.TRT_PYTHON_AVAILABLE = False


class _KnownNoise:
    """Drops ModelOpt log lines that are expected here: NVML absent (CPU-only calibration by design),
    AutoCast's notes that it duplicated shared constants (harmless) and that Q/DQ nodes raise the opset to 19
    (mixed INT8/FP16 fused graphs: ModelOpt's INT8 output is opset 19 already)."""

    NOISE = ("Failed to get GPU count", "Shared constants were detected", "Found QuantizeLinear/DequantizeLinear nodes")

    def filter(self, record: Any) -> bool:
        return not str(record.getMessage()).startswith(self.NOISE)


def _quiet_modelopt() -> None:
    import logging

    from modelopt.onnx.autocast import configure_logging  # type: ignore[import-untyped]

    configure_logging("WARNING")
    for name in ("modelopt.onnx", "modelopt.onnx.autocast"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _KnownNoise) for f in log.filters):
            log.addFilter(_KnownNoise())


def autocast_fp16(
    src: Path, dst: Path, exclude_regex: list[str], keep_fp32_ops: list[str], reference: dict[str, np.ndarray],
    work: Path, original: set[str],
) -> None:
    """AutoCast to FP16 with graph I/O kept FP32; `reference` feeds its overflow screening run."""
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    _quiet_modelopt()
    ref_path = work / f"{src.stem}.autocast-reference.npz"
    np.savez(ref_path, **reference)  # type: ignore[arg-type]
    model = convert_to_mixed_precision(
        str(src),
        low_precision_type="fp16",
        nodes_to_exclude=list(exclude_regex),
        op_types_to_exclude=list(keep_fp32_ops),
        keep_io_types=True,
        calibration_data=str(ref_path),
        providers=["cpu"],  # a fresh list: ModelOpt mutates this argument
    )
    restage_names(model, original)
    onnx.save(model, str(dst))


@contextlib.contextmanager
def _captured(log: Path) -> Iterator[None]:
    """ModelOpt's and ONNX Runtime's calibrators print a progress bar per tensor batch; keep that in a log
    (printed when they fail) and let our per-graph progress bar speak instead."""
    from modelopt.onnx.logging_config import configure_logging  # type: ignore[import-untyped]

    try:
        with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                yield
            except BaseException:
                f.flush()
                print(f"--- end of {log.name} ---\n{log.read_text()[-3000:]}", file=sys.__stderr__)
                raise
    finally:
        # quantize() re-creates ModelOpt's log handler on the stream of the moment (the log file): point it
        # back at the real stdout before that file closes under it.
        configure_logging("WARNING")


def modelopt_int8(
    src: Path,
    dst: Path,
    feeds: dict[str, np.ndarray],
    method: str,
    exclude_regex: list[str],
    work: Path,
    calibration_cache: Path | None = None,
) -> None:
    """ModelOpt INT8 PTQ on CPU: explicit Q/DQ, everything not quantized left FP32."""
    from modelopt.onnx.quantization import quantize  # type: ignore[import-untyped]

    _disable_stub_tensorrt()
    _quiet_modelopt()
    # ModelOpt writes intermediate files beside its input: give it a private copy.
    local = work / f"{src.stem}.int8-input.onnx"
    shutil.copyfile(src, local)
    COUNTERS["calibrations"] += 1
    with _captured(work / f"{src.stem}.modelopt.log"):
        quantize(
            str(local),
            quantize_mode="int8",
            calibration_data=feeds,
            calibration_method=MODELOPT_METHOD[method],
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            calibration_eps=["cpu"],
            nodes_to_exclude=list(exclude_regex),
            output_path=str(dst),
            high_precision_dtype="fp32",
            log_level="WARNING",
        )
    if not dst.is_file():
        raise DvitError(f"ModelOpt did not write {dst.name}: re-run with a smaller --calib-size to see its log")


def activation_quantizers(model: Any) -> list[tuple[str, str]]:
    """(tensor, scale initializer) of each activation QuantizeLinear (input not a weight or constant)."""
    inits = {i.name for i in model.graph.initializer}
    consts = {t for n in model.graph.node if n.op_type == "Constant" for t in n.output}
    return [
        (n.input[0], n.input[1])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[0] not in consts
    ]


def activation_scales(model: Any) -> dict[str, float]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for tensor, scale in activation_quantizers(model):
        if scale in inits:
            out[tensor] = float(numpy_helper.to_array(inits[scale]).reshape(-1)[0])
    return out


def set_activation_scales(model: Any, scales: dict[str, float]) -> int:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    for tensor, scale in activation_quantizers(model):
        if tensor in scales and scale in inits:
            old = numpy_helper.to_array(inits[scale])
            new = numpy_helper.from_array(np.full_like(old, scales[tensor], dtype=old.dtype), scale)
            inits[scale].CopyFrom(new)
            changed += 1
    return changed


def percentile_scales(
    fp32_path: Path, max_scales: dict[str, float], feeds: dict[str, np.ndarray], batch: int, percentile: float
) -> dict[str, float]:
    """Scales clipped to the `percentile` of |x|: max-calibrated scale x (percentile |x| / max |x|).

    One pass of the FP32 graph over the calibration data, a 2048-bin histogram of |x| per quantized tensor
    over [0, 128 x its max-calibrated scale] (which bounds max |x| whatever the int8 range convention).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(fp32_path))
    inputs = {i.name for i in model.graph.input}
    produced = {t for n in model.graph.node for t in n.output}
    wanted = [t for t in max_scales if t in produced or t in inputs]
    have = {o.name for o in model.graph.output}
    for t in wanted:
        if t not in have and t not in inputs:
            model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="dvit-pct.") as tmp:
        p = Path(tmp) / "probe.onnx"
        onnx.save(model, str(p))
        sess = ort_session(p)
        bins = 2048
        hists = {t: np.zeros(bins, np.int64) for t in wanted}
        amax = {t: 0.0 for t in wanted}
        outs = [t for t in wanted if t not in inputs]
        n = next(iter(feeds.values())).shape[0]
        for s in range(0, n, batch):
            feed = {k: v[s : s + batch] for k, v in feeds.items()}
            res = dict(zip(outs, sess.run(outs, feed))) if outs else {}
            for t in wanted:
                a = np.abs(res[t] if t in res else feed[t]).ravel()
                hi = max_scales[t] * 128.0
                amax[t] = max(amax[t], float(a.max(initial=0.0)))
                hists[t] += np.histogram(np.minimum(a, hi), bins=bins, range=(0.0, hi))[0]
    out = {}
    for t in wanted:
        if amax[t] <= 0.0:
            continue
        cdf = np.cumsum(hists[t]) / max(1, hists[t].sum())
        b = int(np.searchsorted(cdf, percentile / 100.0))
        clip = (b + 1) * (max_scales[t] * 128.0) / bins
        out[t] = max_scales[t] * min(1.0, clip / amax[t])
    return out


# ---------------------------------------------------------------- the build
class _Builder:
    def __init__(self, export: dict[str, Any], out: Path, precisions: list[str], opts: argparse.Namespace) -> None:
        self.export, self.src = export, Path(export["_root"])
        self.out, self.precisions, self.opts = out, precisions, opts
        self.cfg = ModelConfig.from_dict(export["model_config"])
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

    def feeds_for(self, b: str, entry: dict[str, Any], stages: list[dict[str, Any]], fused: bool) -> tuple[dict[str, np.ndarray], str, bool]:
        batch = int(b)
        chain: list[tuple[Path, str, str, str]] = []
        if not fused:
            for prev in stages[: entry["index"]]:
                chain.append((self.src / prev["file"], prev["sha256"], prev["inputs"][0]["name"], prev["outputs"][0]["name"]))
        target = (self.src / entry["file"], entry["sha256"], entry["inputs"][0]["name"])
        return graph_calibration_data(self.cache, self.calibration_set(), chain, target, batch)

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

    def convert(self, b: str, entry: dict[str, Any], stages: list[dict[str, Any]], fused: bool, work: Path) -> dict[str, Any]:
        import onnx

        rel = entry["file"]
        src = self.src / rel
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(src))
        original = {n.name for n in model.graph.node}
        protected = pruning_nodes(model)
        if fused:
            wanted = list(self.precisions)
            present = sorted({s for s in (stage_of(n.name) for n in model.graph.node) if s is not None})
            if present != list(range(len(stages))):
                raise DvitError(
                    f"{src}: fused graph node names carry stage prefixes {present}, expected /stage0/../stage{len(stages) - 1}/: "
                    "re-export with the current 'dvit export'"
                )
        else:
            wanted = [self.precisions[entry["index"]]]
        int8_stages = [i for i, p in enumerate(wanted) if p == "int8"]
        fp16_stages = [i for i, p in enumerate(wanted) if p == "fp16"]
        family = f"{'fused' if fused else 'stage' + str(entry['index'])}"
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
                feeds, data_key, _ = self.feeds_for(b, entry, stages, fused)
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
        shutil.copyfile(current, dst)
        final = onnx.load(str(dst))
        bad = fp32_violations(final, protected)
        if bad:
            raise DvitError(
                f"{rel}: pruning-decision nodes {bad[:3]} ended up quantized or FP16: this ModelOpt version ignores "
                "node exclusions; pin nvidia-modelopt==0.47.0"
            )
        summary = graph_summary(final, None if fused else entry["index"])
        if fp16_stages:
            self.fp16_kept[rel] = _fp32_in_fp16_region(final, fp16_stages if fused else None, set(protected))
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

    def build(self) -> dict[str, Any]:
        from tqdm import tqdm  # type: ignore[import-untyped]

        graphs_out: dict[str, Any] = {}
        jobs = [(b, g) for b, g in sorted(self.export["graphs"].items(), key=lambda kv: -int(kv[0]))]
        total = sum(len(g["stages"]) + 1 + (1 if g.get("teacher") else 0) for _, g in jobs)
        with tempfile.TemporaryDirectory(prefix="dvit-precision.") as tmp, tqdm(
            total=total, desc="precision", unit="graph", file=sys.stderr, disable=None
        ) as bar:
            work = Path(tmp)
            # Largest batch size first: it is calibrated, the others take its scales.
            for b, g in jobs:
                stages = sorted(g["stages"], key=lambda e: e["index"])
                out_stages = []
                for e in stages:
                    bar.set_postfix_str(f"b{b} stage{e['index']} {self.precisions[e['index']]}")
                    out_stages.append(self.convert(b, e, stages, False, work))
                    bar.update()
                bar.set_postfix_str(f"b{b} fused {','.join(self.precisions)}")
                fused = self.convert(b, g["fused"], stages, True, work)
                bar.update()
                teacher = None
                if g.get("teacher"):
                    t = g["teacher"]
                    (self.out / t["file"]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.src / t["file"], self.out / t["file"])
                    info = {k: v for k, v in t.items() if k not in ("file", "sha256", "bytes")}
                    teacher = file_entry(self.out, t["file"], **info, precision="fp32")
                    bar.update()
                graphs_out[b] = {"stages": out_stages, "fused": fused, "teacher": teacher}
        return graphs_out


def _fp32_in_fp16_region(model: Any, fp16_stages: list[int] | None, protected: set[str]) -> list[str]:
    """Nodes of the FP16 region that AutoCast kept FP32 beyond the ones we excluded (overflow screening)."""
    from onnx import TensorProto

    types = tensor_types(model)
    kept = []
    for n in model.graph.node:
        if n.name in protected or n.op_type in ("Cast", "Constant", "QuantizeLinear", "DequantizeLinear"):
            continue
        if fp16_stages is not None and stage_of(n.name) not in fp16_stages:
            continue
        ts = [types.get(t) for t in list(n.input) + list(n.output) if t]
        if TensorProto.FLOAT in ts and TensorProto.FLOAT16 not in ts:
            kept.append(n.name)
    return kept


def build_precision(
    export_dir: str | Path,
    out_dir: str | Path,
    precision: str,
    *,
    calib_size: int = 512,
    calib_method: str = "entropy",
    calib_seed: int = 0,
    percentile: float = DEFAULT_PERCENTILE,
    cache_dir: str | Path | None = None,
    data: str | None = None,
    fp16_keep_fp32: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `out_dir` (graphs + "precision" manifest) from an export directory; returns out_dir."""
    check_calib_size(calib_size)
    if calib_method not in CALIB_METHODS:
        raise ConfigError(f"unknown calibration method '{calib_method}': use {', '.join(CALIB_METHODS)}")
    if not (0.0 < percentile <= 100.0):
        raise ConfigError(f"percentile {percentile} is outside (0, 100]: pass e.g. --percentile 99.99")
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    export = read_manifest(export_dir, "export")
    if out_dir.resolve() == export_dir.resolve():
        raise ConfigError(f"--out {out_dir} is the export directory: write the precision graphs to another directory")
    if out_dir.exists() and not overwrite:
        raise DvitError(f"{out_dir} already exists: remove it or pass --overwrite")
    cfg = ModelConfig.from_dict(export["model_config"])
    num_stages = len(cfg.pruning_loc) + 1
    precisions = parse_precision(precision, num_stages)
    opts = argparse.Namespace(
        calib_size=calib_size, calib_method=calib_method, calib_seed=calib_seed, percentile=percentile,
        cache_dir=Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR, data=data,
        fp16_keep_fp32=list(fp16_keep_fp32 or []),
    )
    for b, g in export["graphs"].items():
        if len(g["stages"]) != num_stages:
            raise DvitError(f"{export_dir}: batch {b} has {len(g['stages'])} stage graphs for {num_stages} stages: re-export")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        builder = _Builder(export, tmp, precisions, opts)
        graphs = builder.build()
        uses_int8 = "int8" in precisions
        calib = builder.calib
        body = {
            key: export.get(key)
            for key in ("model_config", "keep_ratio", "keep_counts", "tokens_per_stage", "checkpoint",
                        "teacher_checkpoint", "teacher_config", "opset", "batch_sizes", "exporter", "simplifier")
        }
        body.update(
            graphs=graphs,
            precision=precisions,
            source_manifest={"path": str(export_dir.resolve()), "sha256": export["_sha256"]},
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
                "method": calib_method,
                "modelopt_method": MODELOPT_METHOD[calib_method],
                "percentile": percentile if calib_method == "percentile" else None,
                "calib_size": calib_size,
                "calib_seed": calib_seed,
                "calibration_set": calib.fingerprint() if calib is not None else None,
                "calibration_eps": ["cpu"],
                "high_precision_dtype": "fp32",
                "cache_dir": str(opts.cache_dir),
                **builder.int8_info,
            } if uses_int8 else None,
        )
        write_manifest(tmp, "precision", body)
    return out_dir


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export", required=True, metavar="DIR", help="directory written by 'dvit export'")
    p.add_argument(
        "--precision", required=True,
        help="fp32, fp16 or int8 for every stage, or one per stage, e.g. fp16,int8,int8,fp16",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (graphs + manifest.json)")
    p.add_argument("--calib-size", type=int, default=512, help="calibration images from the TRAIN split (default 512)")
    p.add_argument("--calib-method", choices=CALIB_METHODS, default="entropy", help="INT8 activation calibration")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration draw (default 0)")
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE, help="for --calib-method percentile")
    p.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR),
        help=f"calibration data and quantized graphs cache (default {DEFAULT_CACHE_DIR})",
    )
    p.add_argument("--data", default=None, help="dataset the model was trained on (default: fashion-mnist)")
    p.add_argument(
        "--fp16-keep-fp32", default="", metavar="OPS",
        help="op types kept FP32 in FP16 regions besides the pruning decision, e.g. LayerNormalization,Softmax",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def main(args: argparse.Namespace) -> int:
    out = build_precision(
        args.export, args.out, args.precision,
        calib_size=args.calib_size, calib_method=args.calib_method, calib_seed=args.calib_seed,
        percentile=args.percentile, cache_dir=args.cache_dir, data=args.data,
        fp16_keep_fp32=parse_op_types(args.fp16_keep_fp32), overwrite=args.overwrite,
    )
    m = read_manifest(out, "precision")
    print(f"wrote {out} ({','.join(m['precision'])}; batch sizes {', '.join(sorted(m['graphs'], key=int))})")
    return 0

