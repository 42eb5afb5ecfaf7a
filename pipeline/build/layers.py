"""The layer report written beside each engine: what TensorRT made of the graph, read from the parsed network.

Precision lives in the graphs (strongly typed networks), so the network TensorRT parsed already says where
FP16 (HALF tensors), INT8 (Quantize/Dequantize layers) and the DvitTopKGather plugin ended up; the report counts
them per engine, lists every layer with its tensors' dtypes, and `dvit report` reads its `layers`. With a GPU the
engine inspector's own JSON (the kernels TensorRT chose) is added; without one it says why it is absent.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backend.tensorrt import Backend

if TYPE_CHECKING:  # annotations only; at run time `trt` is the module of the Backend in hand
    import tensorrt as trt

FORMAT = "dvit-edge/layer-report/v1"
# TensorRT DataType names -> the dtype names graph sets use (numpy's where numpy has one).
DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
          "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8", "INT4": "int4", "FP4": "float4",
          "E8M0": "e8m0"}
# The per-layer precision `dvit report` histograms (its names: fp32, fp16, int8, ...).
PRECISIONS = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16", "INT8": "int8", "FP8": "fp8", "INT4": "int4",
              "FP4": "fp4"}
QDQ_TYPES = ("QUANTIZE", "DEQUANTIZE")


def dtype_name(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype))
    return DTYPES.get(name, name.lower())


def tensor_info(t: trt.ITensor) -> dict[str, Any]:
    return {"name": str(t.name), "shape": [int(d) for d in t.shape], "dtype": dtype_name(t.dtype)}


def network_io(network: trt.INetworkDefinition) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the parsed network, names, shapes and dtypes as TensorRT sees them."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    t: trt.ITensor
    for i in range(network.num_inputs):
        t = network.get_input(i)
        inputs.append(tensor_info(t))
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outputs.append(tensor_info(t))
    return inputs, outputs


def network_report(network: trt.INetworkDefinition) -> dict[str, Any]:
    """Every layer (type, output dtypes) and the counts: by layer type, tensors by dtype, Q/DQ, plugin, HALF."""
    layers: list[dict[str, Any]] = []
    dtypes: dict[str, str] = {}
    layer: trt.ILayer
    t: trt.ITensor | None
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dtypes[str(t.name)] = dtype_name(t.dtype)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins, outs = [], []
        for j in range(layer.num_inputs):
            t = layer.get_input(j)
            if t is not None:  # an optional input left out
                ins.append(str(t.name))
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t is not None:
                outs.append(tensor_info(t))
                dtypes[str(t.name)] = dtype_name(t.dtype)
        kind = str(layer.type.name)
        first = outs[0]["dtype"] if outs else None
        layers.append({"name": str(layer.name), "type": kind, "inputs": ins, "outputs": outs,
                       "precision": _precision(first)})
    by_type = Counter(entry["type"] for entry in layers)
    by_dtype = Counter(dtypes.values())
    plugins = [entry["name"] for entry in layers if entry["type"].startswith("PLUGIN")]
    summary = {
        "layers": len(layers),
        "layer_types": dict(sorted(by_type.items())),
        "tensor_dtypes": dict(sorted(by_dtype.items())),
        "qdq_layers": sum(by_type[k] for k in QDQ_TYPES),
        "plugin_layers": len(plugins),
        "plugin_layer_names": plugins,
        "half_tensors": by_dtype["float16"],
        "int8_tensors": by_dtype["int8"],
    }
    return {"format": FORMAT, "source": "parsed network", "summary": summary, "tensors": dtypes, "layers": layers}


def _precision(dtype: str | None) -> str:
    if dtype is None:
        return "none"
    back = {v: k for k, v in DTYPES.items()}
    return PRECISIONS.get(back.get(dtype, ""), dtype)


def inspector_json(b: Backend, plan: Path, gpu: tuple[bool, str]) -> dict[str, Any]:
    """The engine inspector's JSON for the plan file, or {"skipped": why}. It deserializes the plan, which needs a
    GPU the plan was built for (`gpu`: cuda_buffers.gpu_available()) and, for plugin engines, the plugin library
    loaded already."""
    if not b.has("engine_inspector"):
        return {"skipped": f"{b.label} has no engine inspector"}
    ok, why = gpu
    if not ok:
        return {"skipped": f"engine inspector not run: {why}"}
    logger: trt.Logger = b.trt.Logger(b.trt.Logger.ERROR)
    runtime: trt.Runtime = b.trt.Runtime(logger)
    engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        return {"skipped": f"{b.label} could not deserialize the plan on this GPU (built for other SMs?)"}
    inspector: trt.EngineInspector = engine.create_engine_inspector()
    text: str = inspector.get_engine_information(b.trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {"skipped": "the engine inspector's output is not JSON", "text": text[:2000]}
    return info if isinstance(info, dict) else {"value": info}
