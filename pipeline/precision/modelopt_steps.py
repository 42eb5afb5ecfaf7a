"""The ModelOpt steps: AutoCast to FP16, ONNX PTQ to explicit INT8 Q/DQ, and our percentile rescaling.

Calibration runs on ONNX Runtime's CPU provider only. ModelOpt 0.47 knows 'entropy' and 'max' for INT8
(any other name silently means max); 'percentile' is ours: max calibration, then each activation scale
clipped to the --percentile of |x| on the same data.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..backend.onnxruntime.runner import OnnxRuntimeRunner
from ..errors import DvitError
from .calibration import COUNTERS
from .regions import restage_names

# Our method names -> the name ModelOpt's INT8 quantizer takes (it maps 'entropy' to ORT's Entropy
# calibrator and everything else to MinMax; percentile clipping is applied afterwards by us).
MODELOPT_METHOD = {"entropy": "entropy", "max": "max", "percentile": "max"}

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
    probe = OnnxRuntimeRunner(model, "percentile probe")
    bins = 2048
    hists = {t: np.zeros(bins, np.int64) for t in wanted}
    amax = {t: 0.0 for t in wanted}
    n = next(iter(feeds.values())).shape[0]
    for s in range(0, n, batch):
        feed = {k: v[s : s + batch] for k, v in feeds.items()}
        res = probe.infer(feed)
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

