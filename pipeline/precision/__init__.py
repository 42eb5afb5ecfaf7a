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
a "precision" graph set (pipeline.graphset), so every later stage reads it as it reads an export.

Modules: regions (which nodes belong to which stage, what stays FP32), modelopt_steps (AutoCast, PTQ, percentile
scales), calibration (calibration sets and their cache; see calibration/README.md), build (the driver).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..graphset import GraphSet
from .build import (
    CALIB_METHODS,
    DEFAULT_PERCENTILE,
    PRECISIONS,
    PrecisionOptions,
    build_precision,
    parse_op_types,
    parse_precision,
)
from .calibration import DEFAULT_CACHE_DIR
from .modelopt_steps import activation_scales
from .regions import fp32_violations, graph_summary, pruning_nodes, stage_of, tensor_types

__all__ = ["PRECISIONS", "PrecisionOptions", "activation_scales", "build_precision", "fp32_violations",
           "graph_summary", "parse_precision", "pruning_nodes", "stage_of", "tensor_types"]


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graphs", required=True, metavar="DIR",
                   help="an export graph set (written by 'dvit export'; the plugin pass comes after precision)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    opts = PrecisionOptions(
        calib_size=args.calib_size, calib_method=args.calib_method, calib_seed=args.calib_seed,
        percentile=args.percentile, cache_dir=Path(args.cache_dir), data=args.data,
        fp16_keep_fp32=parse_op_types(args.fp16_keep_fp32),
    )
    out = build_precision(args.graphs, args.out, args.precision, opts, overwrite=args.overwrite,
                          progress=not args.no_progress)
    gs = GraphSet.load(out, ("precision",), verify=False)
    print(f"wrote {out} ({','.join(gs.precision)}; batch sizes {', '.join(map(str, gs.batch_sizes))})")
    return 0

