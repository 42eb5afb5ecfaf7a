"""FLOPs of ONNX graphs without torch: MatMul, Gemm and Conv multiply-adds from the graphs' static shapes.

A multiply-add counts 2 (2*M*N*K for a matrix product), as torch.utils.flop_counter counts them
(pipeline.measure.count_flops), which also counts only matrix products and convolutions: elementwise ops,
normalisation, softmax and the pruning decision (TopK, gathers) are free in both. The pruned/dense FLOP ratio is
the limit a latency ratio can reach when every matrix product scales with the tokens kept.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

COUNTED = ("MatMul", "Gemm", "Conv")


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out: dict[str, tuple[int, ...]] = {}
    for v in [*g.input, *g.output, *g.value_info]:
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[v.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    for n in g.node:  # Constant nodes hold weights too (some exporters write them instead of initializers)
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = tuple(int(d) for d in n.attribute[0].t.dims)
    return out


def node_flops(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """2 x multiply-adds of one MatMul/Gemm/Conv node; 0 for other ops. A shape that is not static is an error."""
    if node.op_type not in COUNTED:
        return 0
    try:
        if node.op_type == "MatMul":
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            k = a[-1]
            return 2 * int(np.prod(out, dtype=np.int64)) * k
        if node.op_type == "Gemm":
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            trans_a = next((int(x.i) for x in node.attribute if x.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            return 2 * int(np.prod(out, dtype=np.int64)) * k
        w, out = shapes[node.input[1]], shapes[node.output[0]]  # Conv: weight [Cout, Cin/groups, k...]
        return 2 * int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    except KeyError as e:
        raise ValueError(f"{node.op_type} node {node.name!r}: no static shape for {e.args[0]}") from e


def graph_flops(model: Any) -> int:
    """FLOPs of one run of a graph (ModelProto or .onnx path), for its whole static batch."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    shapes = _shapes(model)
    return sum(node_flops(n, shapes) for n in model.graph.node)


def graph_set_flops(gs: Any) -> dict[str, Any] | None:
    """{"pruned", "dense", "ratio"} per image, from the fused and teacher graphs of a graph set's smallest batch
    (None for the dense part when the set has no teacher); None when the set holds no ONNX graphs (engines): then
    the manifest's own "flops" entry is used when it has one."""
    if gs.kind == "engine":
        f = gs.manifest.get("flops")
        return dict(f) if isinstance(f, dict) else None
    b = gs.batch(min(gs.batch_sizes))
    pruned = graph_flops(b.fused.path) // b.batch
    dense = graph_flops(b.teacher.path) // b.batch if b.teacher else None
    return {"pruned": pruned, "dense": dense, "ratio": pruned / dense if dense else None,
            "counted": list(COUNTED), "from": [str(b.fused.path), str(b.teacher.path) if b.teacher else None]}
