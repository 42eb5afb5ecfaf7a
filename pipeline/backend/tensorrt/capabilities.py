"""The TensorRT capability table: which TensorRT names each version-dependent feature needs.

TensorRT 10.3 (JetPack 6), 10.13, 11.x and TensorRT-RTX differ in their Python API: 11.x and RTX removed the
weak-typing builder flags, STRONGLY_TYPED is 1 in 10.x and 0 in 11.x/RTX (deprecated, always on), RTX has no
DLA and no timing cache but chooses target compute capabilities itself. Code never compares version numbers
for this: it asks `backend.has(capability)`, and CAPABILITIES is the one table that says which TensorRT names
each capability needs (a capability holds when all of them exist on the imported module).
tools/check_trt_api.py checks the table and every use against the bindings of 10.3, 10.13 and 11.1 and the
installed TensorRT-RTX.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Capability:
    """A feature that some TensorRT releases lack: it holds when every name in `names` exists on the module.

    `names` are "Class.member", "Enum.VALUE" or module-level "Name"; tools/check_trt_api.py accepts a name the
    project uses that is missing from a release only if a capability lists it. `unless_rtx`: the names exist in
    TensorRT-RTX but the feature does nothing there (or fails), so it does not hold.
    """

    names: tuple[str, ...]
    why: str
    unless_rtx: bool = False


CAPABILITIES: dict[str, Capability] = {
    "strongly_typed_flag": Capability(
        ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",),
        "create networks strongly typed (precision comes from the ONNX graph); taken by name: its value is 1 "
        "in 10.x and 0 in 11.x and TensorRT-RTX, where it is deprecated and always on",
    ),
    "weak_typing": Capability(
        ("BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"),
        "TensorRT 10.x precision builder flags; 11.x and TensorRT-RTX removed them (always strongly typed)",
    ),
    "memory_pool_limit": Capability(
        ("IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.get_memory_pool_limit", "MemoryPoolType.WORKSPACE"),
        "cap the builder's workspace (max_workspace_size is gone since 10.0)",
    ),
    "builder_optimization_level": Capability(
        ("IBuilderConfig.builder_optimization_level",), "trade build time for engine speed (0..5, default 3)",
    ),
    "serialized_build": Capability(
        ("Builder.build_serialized_network", "IHostMemory.nbytes"), "build straight to a serialized plan",
    ),
    "timing_cache": Capability(
        ("IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "ITimingCache.serialize"),
        "reuse kernel timings between builds; a deprecated no-op in TensorRT-RTX",
        unless_rtx=True,
    ),
    "dla": Capability(
        ("Builder.num_DLA_cores", "IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type",
         "IBuilderConfig.can_run_on_DLA", "DeviceType.DLA", "BuilderFlag.GPU_FALLBACK"),
        "build for a Jetson DLA core with GPU fallback; TensorRT-RTX ignores it, and whether the device has one "
        "is Builder.num_DLA_cores at run time (0 on TensorRT 11.0-11.3 and off Jetson)",
        unless_rtx=True,
    ),
    "version_compatible": Capability(
        ("BuilderFlag.VERSION_COMPATIBLE", "BuilderFlag.EXCLUDE_LEAN_RUNTIME"),
        "plans that load on later runtimes of the same major; fails in TensorRT-RTX",
        unless_rtx=True,
    ),
    "engine_inspector": Capability(
        ("ICudaEngine.create_engine_inspector", "EngineInspector.get_engine_information", "LayerInformationFormat.JSON"),
        "per-layer information of a deserialized engine",
    ),
    "compute_capability_targets": Capability(
        ("ComputeCapability", "IBuilderConfig.set_compute_capability", "IBuilderConfig.num_compute_capabilities",
         "IBuilderConfig.get_compute_capability"),
        "TensorRT-RTX builds ahead of time for chosen SMs; full TensorRT builds for the GPU it runs on",
    ),
    "plugin_v3_layer": Capability(
        ("INetworkDefinition.add_plugin_v3",),
        "add an IPluginV3 layer by hand; TensorRT-RTX lacks it (plugin nodes come through the ONNX parser)",
    ),
    "engine_validity": Capability(
        ("Runtime.get_engine_validity", "EngineValidity.VALID"),
        "TensorRT-RTX checks a plan's header against this machine (needs a GPU driver)",
    ),
}


def is_rtx(trt: ModuleType) -> bool:
    return trt.__name__.split(".")[0] == "tensorrt_rtx"


def has_name(trt: ModuleType, dotted: str) -> bool:
    obj: Any = trt
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return False
    return True


def probe(trt: ModuleType) -> dict[str, bool]:
    """Every capability of CAPABILITIES, true or false, for the imported module."""
    return probe_names(lambda name: has_name(trt, name), is_rtx(trt))


def probe_names(has: Callable[[str], bool], rtx: bool) -> dict[str, bool]:
    """The capability table evaluated with `has(name)`; tests run it on each release's parsed bindings."""
    return {name: all(has(n) for n in cap.names) and not (cap.unless_rtx and rtx) for name, cap in CAPABILITIES.items()}
