"""The DvitTopKGather op in ONNX Runtime: plugin graphs run through the Python reference op
(pipeline.topk_gather_ref, registered through onnxruntime-extensions), so every graph set runs here, whatever
stage wrote it. This is ONNX Runtime's counterpart of tensorrt/plugins.py."""
from __future__ import annotations

from typing import Any


def has_plugin_nodes(model: Any) -> bool:
    """Whether the ModelProto holds DvitTopKGather nodes."""
    from ...topk_gather_ref import PLUGIN_DOMAIN, PLUGIN_OP

    return any(n.op_type == PLUGIN_OP and n.domain == PLUGIN_DOMAIN for n in model.graph.node)


def prepare(so: Any, model: Any) -> Any:
    """Register the reference op with the SessionOptions `so` when `model` needs it; the model to load."""
    if not has_plugin_nodes(model):
        return model
    from ... import topk_gather_ref

    so.register_custom_ops_library(topk_gather_ref.register_ort_ops())
    return topk_gather_ref.ort_model(model)
