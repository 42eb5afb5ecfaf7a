"""Reference implementation of the DvitTopKGather TensorRT plugin, and a way to run plugin graphs in ONNX Runtime.

Semantics (those of plugins/topkGatherPlugin): scores [B, N] (float32/float16), tokens [B, N+1, C] ->
  kept_indices [B, k] int32: the k patch indices with the highest scores, in descending score order, ties to the
                             lower index (ONNX TopK; = torch.sort(scores, descending=True, stable=True)[1][:, :k]);
                             NaN ranks above +inf (as in torch.sort), -0.0 equals +0.0;
  kept_tokens  [B, k+1, C]:  row 0 the class token tokens[b, 0], row j the token tokens[b, kept_indices[b, j-1] + 1].

ONNX Runtime route: onnxruntime-extensions' PyOp runs a Python function as a custom operator of the domain
"ai.onnx.contrib". ort_model() makes a copy of a plugin graph whose DvitTopKGather nodes are moved to that domain
(the op type gets a dtype suffix, since a PyOp declares fixed input types), and the session factory
(pipeline.runners.onnxrt.session) opens it with the
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
def ort_op_type(scores_dtype: np.dtype, tokens_dtype: np.dtype) -> str:
    return f"{PLUGIN_OP}_{_FLOATS[np.dtype(scores_dtype)]}_{_FLOATS[np.dtype(tokens_dtype)]}"


_REGISTERED = False


def register_ort_ops() -> str:
    """Register the reference as onnxruntime-extensions PyOps (once); returns the custom-op library path."""
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
            "running plugin graphs in ONNX Runtime needs onnxruntime-extensions: pip install onnxruntime-extensions "
            "(or pass --no-verify to 'dvit plugin-pass')"
        ) from e
    if not _REGISTERED:
        code: dict[np.dtype[Any], Any] = {np.dtype(np.float32): PyCustomOpDef.dt_float, np.dtype(np.float16): PyCustomOpDef.dt_float16}
        for sd, sc in code.items():
            for td, tc in code.items():

                def run(scores: np.ndarray, tokens: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
                    return topk_gather(scores, tokens, int(attrs["k"]))

                onnx_op(op_type=ort_op_type(sd, td), inputs=[sc, tc], outputs=[tc, PyCustomOpDef.dt_int32],
                        attrs={"k": PyCustomOpDef.dt_int64})(run)
        _REGISTERED = True
    return str(get_library_path())


def ort_model(model: Any) -> Any:
    """A copy of `model` whose DvitTopKGather nodes ONNX Runtime runs through the reference (PyOp)."""
    import onnx

    from .onnx_utils import dtype_name

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = onnx.shape_inference.infer_shapes(m).graph  # not strict: it passes over the custom nodes
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    n_plugins = 0
    for node in m.graph.node:
        if node.op_type != PLUGIN_OP or node.domain != PLUGIN_DOMAIN:
            continue
        dts = [np.dtype(dtype_name(types[t])) if t in types else np.dtype(np.float32) for t in node.input[:2]]
        node.op_type = ort_op_type(*dts)
        node.domain = ORT_DOMAIN
        keep = [a for a in node.attribute if a.name == "k"]
        del node.attribute[:]
        node.attribute.extend(keep)
        n_plugins += 1
    if n_plugins and not any(o.domain == ORT_DOMAIN for o in m.opset_import):
        m.opset_import.append(onnx.helper.make_opsetid(ORT_DOMAIN, 1))
    return m
