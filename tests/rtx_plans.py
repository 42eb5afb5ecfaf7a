"""A one-Relu engine built by the real TensorRT-RTX builder (no GPU needed), for the tests of plan headers and of
what happens before an engine is loaded."""
from __future__ import annotations

from typing import Any


def relu_plan(trt: Any, compute_capabilities: tuple[int, ...] = ()) -> bytes:
    """The serialized plan, built for `compute_capabilities` (TensorRT-RTX's default set when empty)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString())
    config = builder.create_builder_config()
    if compute_capabilities:
        config.num_compute_capabilities = len(compute_capabilities)
        for i, sm in enumerate(compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), i)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    return bytes(memoryview(plan))
