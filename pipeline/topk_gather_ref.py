"""Reference implementation of the DvitTopKGather TensorRT plugin, and a way to run plugin graphs in ONNX Runtime.

Semantics (those of plugins/topkGatherPlugin): scores [B, N] (float32/float16), tokens [B, N+1, C] ->
  kept_indices [B, k] int32: the k patch indices with the highest scores, in descending score order, ties to the
                             lower index (ONNX TopK; = torch.sort(scores, descending=True, stable=True)[1][:, :k]);
                             NaN ranks above +inf (as in torch.sort), -0.0 equals +0.0;
  kept_tokens  [B, k+1, C]:  row 0 the class token tokens[b, 0], row j the token tokens[b, kept_indices[b, j-1] + 1].

ONNX Runtime route: onnxruntime-extensions' PyOp runs a Python function as a custom operator of the domain
"ai.onnx.contrib". ort_model() makes a copy of a plugin graph whose DvitTopKGather nodes are moved to that domain
(the op type gets a dtype suffix, since a PyOp declares fixed input types), and the session factory
(pipeline.backend.onnxruntime.runner.session) opens it with the
reference registered. Everything else in the graph runs in ONNX Runtime's own kernels, unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np

PLUGIN_OP = "DvitTopKGather"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "dvit"
# The node domain equals the namespace: TensorRT's parser finds plugins by op type with the plugin_version /
# plugin_namespace attributes, and since TensorRT 10.10 it retries with the node's domain as the namespace.
PLUGIN_DOMAIN = "dvit"
ORT_DOMAIN = "ai.onnx.contrib"
_FLOATS = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


def _check(scores: np.ndarray, tokens: np.ndarray, k: int) -> None:
    if scores.ndim != 2 or tokens.ndim != 3:
        raise ValueError(f"scores must be [B, N] and tokens [B, N+1, C]; got {scores.shape} and {tokens.shape}")
    b, n = scores.shape
    if tokens.shape[0] != b or tokens.shape[1] != n + 1 or tokens.shape[2] < 1:
        raise ValueError(f"tokens {tokens.shape} do not match scores {scores.shape}: need [B, N+1, C]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range: need 1 <= k <= N={n}")
    for name, a in (("scores", scores), ("tokens", tokens)):
        if a.dtype not in _FLOATS:
            raise ValueError(f"{name} dtype {a.dtype} is not supported (float32 or float16)")


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """[B, k] int64: descending scores, ties to the lower index, NaN first (torch.sort(descending, stable))."""
    s = scores.astype(np.float64)
    nan = np.isnan(s)
    idx = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    # np.lexsort orders by the last key first: NaN before numbers, then by descending value, then by index.
    order = np.lexsort((idx, -np.where(nan, 0.0, s), ~nan), axis=1)
    return order[:, :k].astype(np.int64)


def topk_gather(scores: np.ndarray, tokens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept_tokens [B, k+1, C] in tokens' dtype, kept_indices [B, k] int32), exactly the plugin's outputs."""
    scores, tokens = np.asarray(scores), np.asarray(tokens)
    _check(scores, tokens, int(k))
    idx = topk_indices(scores, int(k))
    rows = np.concatenate([np.zeros_like(idx[:, :1]), idx + 1], axis=1)
    kept = np.take_along_axis(tokens, rows[:, :, None], axis=1)
    return np.ascontiguousarray(kept), idx.astype(np.int32)


def topk_gather_torch(scores: Any, tokens: Any, k: int) -> tuple[Any, Any]:
    """The same in PyTorch (any device), for kernel and plugin tests that hold CUDA tensors."""
    import torch

    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    rows = torch.cat([torch.zeros_like(idx[:, :1]), idx + 1], dim=1)
    kept = torch.gather(tokens, 1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return kept, idx.to(torch.int32)


# ---- ONNX Runtime ----
ORT_OP = f"{PLUGIN_OP}_f32"
_REGISTERED = False


def register_ort_ops() -> str:
    """Register the reference as an onnxruntime-extensions PyOp (once); returns the custom-op library path.

    PyOps take float32 only (float16 aborts the process inside onnxruntime-extensions), so ort_model() wraps
    FP16 plugin inputs and outputs in Casts: exact, since float16 -> float32 is exact and the op only ranks
    scores and copies rows.
    """
    global _REGISTERED
    try:
        from onnxruntime_extensions import (  # type: ignore[import-untyped]
            PyCustomOpDef,
            get_library_path,
            onnx_op,
        )
    except ImportError as e:  # pragma: no cover - depends on the environment
        from .errors import DvitError

        raise DvitError(
            "running plugin graphs in ONNX Runtime needs onnxruntime-extensions: install the onnxruntime extra "
            "(pip install '.[onnxruntime]'); `dvit plugin-pass --no-verify` skips the check in the plugin pass alone"
        ) from e
    if not _REGISTERED:

        def run(scores: np.ndarray, tokens: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
            return topk_gather(scores, tokens, int(attrs["k"]))

        onnx_op(op_type=ORT_OP, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
                outputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32], attrs={"k": PyCustomOpDef.dt_int64})(run)
        _REGISTERED = True
    return str(get_library_path())


def ort_model(model: Any) -> Any:
    """A copy of `model` whose DvitTopKGather nodes ONNX Runtime runs through the reference (PyOp), with Casts
    around FP16 inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = onnx.shape_inference.infer_shapes(m).graph  # not strict: it passes over the custom nodes
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    nodes: list[Any] = []
    n_plugins = 0
    for node in m.graph.node:
        if node.op_type != PLUGIN_OP or node.domain != PLUGIN_DOMAIN:
            nodes.append(node)
            continue
        n_plugins += 1
        for j, t in enumerate(node.input[:2]):
            if types.get(t) == TensorProto.FLOAT16:
                # Identity first: ONNX Runtime's CPU runs most FP16 ops in FP32 and drops a Cast pair
                # f32->f16->f32 it finds adjacent, which would skip the FP16 rounding the original graph does
                # before its Gather. The Identity keeps the value a real FP16 tensor.
                held, node.input[j] = f"{t}/dvit_ref_f16", f"{t}/dvit_ref_f32"
                nodes.append(helper.make_node("Identity", [t], [held], name=f"{node.name}/hold_f16_{j}"))
                nodes.append(helper.make_node("Cast", [held], [node.input[j]], name=f"{node.name}/to_f32_{j}",
                                              to=TensorProto.FLOAT))
        after = []
        if _tokens_fp16(types, node):
            out = node.output[0]
            node.output[0] = f"{out}/dvit_ref_f32"
            after.append(helper.make_node("Cast", [node.output[0]], [out], name=f"{node.name}/to_f16",
                                          to=TensorProto.FLOAT16))
        node.op_type = ORT_OP
        node.domain = ORT_DOMAIN
        keep = [a for a in node.attribute if a.name == "k"]
        del node.attribute[:]
        node.attribute.extend(keep)
        nodes += [node, *after]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    if n_plugins and not any(o.domain == ORT_DOMAIN for o in m.opset_import):
        m.opset_import.append(onnx.helper.make_opsetid(ORT_DOMAIN, 1))
    return m


def _tokens_fp16(types: dict[str, int], node: Any) -> bool:
    """The plugin's kept tokens have its tokens input's type (the Cast above renamed that input)."""
    from onnx import TensorProto

    src = node.input[1].removesuffix("/dvit_ref_f32")
    return types.get(src) == TensorProto.FLOAT16
