"""Small, composable ONNX helpers: load/save, simplify, check, static-shape audit, I/O signatures, ORT runs.

Every function takes and returns plain `onnx.ModelProto`s (Polygraphy style), so export, precision, validate
and the plugin pass chain them as they need. Nothing here imports torch: `dvit scan` stays light. Running a
graph is the runners' job (pipeline.backend.onnxruntime.runner holds the one ONNX Runtime session factory).

Simplifier: onnxsim (pinned in pyproject, 0.8.1). It folds constants by running the graph in ONNX Runtime and
then applies onnx-optimizer's fusions; it keeps the names of the nodes it does not fold, which the precision
stage needs (it assigns precision by the "/stageN/" node-name prefix). onnxslim also works, but it renames
some of the nodes it rewrites and adds a second graph-rewriting dependency for no gain on these graphs.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, TensorProto

from .errors import DvitError

SIMPLIFIER = "onnxsim"
# onnx-optimizer passes we leave out. fuse_matmul_add_bias_into_gemm rewrites a token-wise Linear (MatMul+Add on
# [B, N, C]) into Reshape+Gemm+Reshape under new names that carry no stage prefix, and TensorRT fuses the bias
# itself; fuse_qkv merges sibling MatMuls (also under new names).
SKIPPED_OPTIMIZERS = ("fuse_matmul_add_bias_into_gemm", "fuse_matmul_add_bias_into_gemm_batched", "fuse_qkv")
# Node names of a fused graph begin with the stage submodule that produced them: "/stage2/blocks.5/attn/MatMul".
STAGE_PREFIX = re.compile(r"^/stage(\d+)/")
# Operators that compute nothing at run time (they are folded or describe constants).
NON_COMPUTE_OPS = frozenset({"Constant"})


# ---- files ----
def load(path: str | os.PathLike[str], load_external_data: bool = True) -> ModelProto:
    path = Path(path)
    if not path.is_file():
        raise DvitError(f"ONNX file {path} not found: pass the path of an .onnx file")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise DvitError(f"{path} is not a readable ONNX model ({type(e).__name__}): re-export it") from e


def save(model: ModelProto, path: str | os.PathLike[str]) -> Path:
    """Single-file save (graphs over 2 GiB would need external data; ViT stage graphs are far below)."""
    path = Path(path)
    if model.ByteSize() >= 2**31 - 1:
        raise DvitError(f"{path.name} would exceed the 2 GiB protobuf limit: export fewer blocks per graph")
    onnx.save(model, str(path))
    return path


def simplifier_version() -> dict[str, str]:
    import importlib.metadata

    return {"name": SIMPLIFIER, "version": importlib.metadata.version(SIMPLIFIER)}


# ---- simplify and check ----
def simplify(model: ModelProto) -> ModelProto:
    """Constant folding, shape inference and onnx-optimizer fusions by onnxsim, on static shapes.

    Node names survive (see SKIPPED_OPTIMIZERS). onnxsim's own random-input comparison (check_n) is off: the exporter compares against PyTorch on real
    data right after, which is the stronger check. The Z3 certification is off too (slow, and only
    meaningful with input ranges).
    """
    import onnxsim  # type: ignore[import-untyped]

    try:
        simplified, ok = onnxsim.simplify(model, check_n=0, certify=False, skipped_optimizers=list(SKIPPED_OPTIMIZERS))
    except Exception as e:
        raise DvitError(f"onnxsim could not simplify the graph ({type(e).__name__}: {e}): report this as a bug") from e
    if not ok:
        raise DvitError("onnxsim reported a failed simplification: report this as a bug")
    # onnxsim records its own bookkeeping in metadata_props; keep the graphs byte-stable and small.
    del simplified.metadata_props[:]
    return simplified


def check(model: ModelProto, custom_domains: Sequence[str] = ()) -> ModelProto:
    """onnx.checker (full check) and strict shape inference; returns the model with inferred value_info.

    `custom_domains` names the non-ONNX domains whose nodes the checker should leave alone (plugin ops):
    their schema is unknown to onnx, so strict inference would stop at them.
    """
    try:
        if custom_domains:
            onnx.checker.check_model(model, full_check=False)
        else:
            onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise DvitError(f"the ONNX checker rejected the graph: {str(e).splitlines()[0]}") from e
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=not custom_domains, data_prop=True
        )
    except onnx.shape_inference.InferenceError as e:
        raise DvitError(f"strict ONNX shape inference failed: {str(e).splitlines()[0]}") from e
    return inferred


# ---- shapes and signatures ----
def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def non_static_values(model: ModelProto) -> list[str]:
    """Graph inputs, outputs and value_info whose shape is unknown or not fully numeric (empty = all static).

    Run it on a shape-inferred model (check() returns one); a tensor without any value_info entry counts
    as non-static, since nothing proves its shape.
    """
    g = model.graph
    problems: list[str] = []
    known: set[str] = set()
    for vi in [*g.input, *g.output, *g.value_info]:
        known.add(vi.name)
        dims = _dims(vi)
        if dims is None:
            problems.append(f"{vi.name}: no shape")
        elif any(not isinstance(d, int) or d <= 0 for d in dims):
            problems.append(f"{vi.name}: shape {dims}")
    produced = {o for n in g.node for o in n.output if o}
    inits = {i.name for i in g.initializer}
    for name in sorted(produced - known - inits):
        problems.append(f"{name}: no shape")
    return problems


def dtype_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "undefined"


def signature(values: Iterable[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    """[{"name", "shape", "dtype"}] of graph inputs or outputs (as manifests record them)."""
    return [
        {"name": vi.name, "shape": _dims(vi), "dtype": dtype_name(vi.type.tensor_type.elem_type)} for vi in values
    ]


def io_signature(model: ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inits = {i.name for i in model.graph.initializer}
    return signature(i for i in model.graph.input if i.name not in inits), signature(model.graph.output)


def drop_initializer_inputs(model: ModelProto) -> ModelProto:
    """Remove initializers from the graph inputs (an exporter that kept them there)."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model


def opset_of(model: ModelProto, domain: str = "") -> int | None:
    for o in model.opset_import:
        if o.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(o.version)
    return None


# ---- stage attribution (fused graphs) ----
def stage_of(node_name: str) -> int | None:
    m = STAGE_PREFIX.match(node_name)
    return int(m.group(1)) if m else None


def stage_attribution(model: ModelProto) -> tuple[dict[int, int], list[str]]:
    """Count compute nodes per stage prefix; also return the names of compute nodes with no stage."""
    counts: dict[int, int] = {}
    orphans: list[str] = []
    for n in model.graph.node:
        if n.op_type in NON_COMPUTE_OPS:
            continue
        s = stage_of(n.name)
        if s is None:
            orphans.append(f"{n.name or '<unnamed>'} ({n.op_type})")
        else:
            counts[s] = counts.get(s, 0) + 1
    return counts, orphans


def initializer_value(model: ModelProto, name: str) -> np.ndarray | None:
    """The constant behind `name`: an initializer or a Constant node's value; None if it is computed."""
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
                if a.name == "value_int":
                    return np.array(a.i, dtype=np.int64)
                if a.name == "value_ints":
                    return np.array(list(a.ints), dtype=np.int64)
    return None


ELEM_INT64 = TensorProto.INT64
ELEM_INT32 = TensorProto.INT32
ELEM_FLOAT = TensorProto.FLOAT
ELEM_FLOAT16 = TensorProto.FLOAT16
