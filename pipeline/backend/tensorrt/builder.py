"""Building engines with TensorRT or TensorRT-RTX: builder, network, ONNX parser, settings, and the builder
config read back as JSON (enums by name). Every version difference goes through Backend.has(capability).

Conventions (checked by tools/check_trt_api.py): the module object is `trt` or `b.trt`; names holding TensorRT
objects are annotated with their class; a name missing from a release is used only behind its capability.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ...targets import Target, backend_label
from .capabilities import has_name
from .loader import Backend, BackendError

if TYPE_CHECKING:  # annotations only; at run time `trt` is the module of the Backend in hand
    import tensorrt as trt


# ---------------------------------------------------------------------------------------------- building
@dataclass(frozen=True)
class BuildSettings:
    """What dvit sets on a builder config; None/empty leaves TensorRT's default."""

    workspace_bytes: int | None = None
    optimization_level: int | None = None
    compute_capabilities: tuple[int, ...] = ()  # TensorRT-RTX only: the SMs the plan must run on
    dla_core: int | None = None  # build for this DLA core, always with GPU fallback

    @classmethod
    def from_target(cls, target: Target, use_dla: bool | None = None, version: str | None = None) -> BuildSettings:
        """The target's defaults; `use_dla` overrides its dla.enabled, checked against the backend `version`."""
        dla = target.dla.enabled if use_dla is None else use_dla
        if dla and target.dla.cores == 0:
            raise BackendError(f"target {target.name} has no DLA: build without DLA")
        if dla and version is not None and not target.dla_supported(version):
            raise BackendError(f"target {target.name} drives its DLA with {backend_label(target.backend)} "
                               f"{', '.join(target.dla.versions)} only, this machine has {version}: build without DLA")
        return cls(
            workspace_bytes=target.workspace_bytes,
            optimization_level=target.builder_optimization_level,
            compute_capabilities=target.compute_capabilities if target.backend == "tensorrt-rtx" else (),
            dla_core=target.dla.core if dla else None,
        )

    def on(self, dla_core: int | None) -> BuildSettings:
        """These settings for one engine: on DLA core `dla_core` with GPU fallback, or on the GPU (None). A build
        asks the DLA once (from_target); its placement (pipeline/build/placement.py) decides engine by engine."""
        return replace(self, dla_core=dla_core)


def create_builder(b: Backend, severity: str = "WARNING") -> trt.Builder:
    logger: trt.Logger = b.trt.Logger(getattr(b.trt.Logger, severity))
    builder: trt.Builder = b.trt.Builder(logger)
    return builder


def network_flags(b: Backend) -> int:
    """Creation flags for a strongly typed network, the STRONGLY_TYPED bit taken by name."""
    return 1 << int(b.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if b.has("strongly_typed_flag") else 0


def create_network(b: Backend, builder: trt.Builder) -> trt.INetworkDefinition:
    network: trt.INetworkDefinition = builder.create_network(network_flags(b))
    return network


def parse_onnx(b: Backend, network: trt.INetworkDefinition, onnx_path: str | os.PathLike[str],
               severity: str = "WARNING") -> trt.OnnxParser:
    """Parse an ONNX file into `network`; keep the returned parser alive until the build (it owns weights).
    Parse errors are collected from the parser either way; `severity` only filters what its logger prints."""
    logger: trt.Logger = b.trt.Logger(getattr(b.trt.Logger, severity))
    parser: trt.OnnxParser = b.trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err: trt.ParserError = parser.get_error(i)
            node = f"node {err.node_name() or err.node()} ({err.node_operator()}): " if err.node() >= 0 else ""
            errors.append(f"{node}{err.desc()}")
        first = errors[0] if errors else "no error reported"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BackendError(f"{b.label} cannot parse {onnx_path}: {first}{more}; run `dvit scan` on it")
    return parser


def apply_settings(b: Backend, builder: trt.Builder, config: trt.IBuilderConfig, s: BuildSettings) -> list[str]:
    """Set `s` on `config`; returns notes on settings this backend does not take (never silently)."""
    notes: list[str] = []
    if s.workspace_bytes is not None:
        config.set_memory_pool_limit(b.trt.MemoryPoolType.WORKSPACE, int(s.workspace_bytes))
    if s.optimization_level is not None:
        config.builder_optimization_level = int(s.optimization_level)
    if s.compute_capabilities:
        if b.has("compute_capability_targets"):
            if missing := [sm for sm in s.compute_capabilities if not has_name(b.trt, f"ComputeCapability.SM{sm}")]:
                have = [n for n in b.trt.ComputeCapability.__members__ if n.startswith("SM")]
                raise BackendError(f"{b.label} cannot build for sm_{missing[0]} (it knows {', '.join(have)}): "
                                   "remove it from the target's compute_capabilities")
            config.num_compute_capabilities = len(s.compute_capabilities)
            for i, sm in enumerate(s.compute_capabilities):
                config.set_compute_capability(getattr(b.trt.ComputeCapability, f"SM{sm}"), i)
        else:
            notes.append(f"{b.label} builds for the GPU it runs on; compute capabilities "
                         f"{', '.join(map(str, s.compute_capabilities))} not set")
    if s.dla_core is not None:
        if not b.has("dla"):
            raise BackendError(f"{b.label} has no DLA support: build without DLA (dla.enabled = false)")
        cores = int(builder.num_DLA_cores)
        if s.dla_core >= cores:
            raise BackendError(f"DLA core {s.dla_core} requested but {b.label} reports {cores} DLA core(s) on this "
                               "device: build without DLA, or on a Jetson whose TensorRT drives its DLA")
        config.default_device_type = b.trt.DeviceType.DLA
        config.DLA_core = int(s.dla_core)
        config.set_flag(b.trt.BuilderFlag.GPU_FALLBACK)
    return notes


def dla_capable_layers(b: Backend, network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> int | None:
    """How many layers of `network` TensorRT says can run on the DLA under `config` (IBuilderConfig.can_run_on_DLA,
    asked before the build); GPU fallback runs the others on the GPU. None where the backend has no DLA."""
    if not b.has("dla"):
        return None
    count = 0
    for i in range(network.num_layers):
        layer: trt.ILayer = network.get_layer(i)
        count += bool(config.can_run_on_DLA(layer))
    return count


def build_serialized(b: Backend, builder: trt.Builder, network: trt.INetworkDefinition,
                     config: trt.IBuilderConfig) -> bytes:
    """The serialized plan; a failed build names no cause of its own, TensorRT's log above has it."""
    plan: trt.IHostMemory | None = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"{b.label} failed to build the engine: see its log above")
    return bytes(memoryview(plan))


def timing_cache_note(b: Backend) -> str | None:
    return None if b.has("timing_cache") else f"{b.label} has no timing cache (a no-op in TensorRT-RTX)"


# ---------------------------------------------------------------------------------------------- JSON
def enum_name(value: Any) -> str | None:
    """'BuilderFlag.FP16' for a pybind11 enum member of any TensorRT flavour, else None."""
    kind = type(value)
    if hasattr(kind, "__members__") and isinstance(getattr(value, "name", None), str):
        return f"{kind.__name__}.{value.name}"
    return None


def settings_json(value: Any) -> Any:
    """JSON-ready copy of builder settings with enums as NAMES: TensorRT renumbered enums between 10.x and 11."""
    if (name := enum_name(value)) is not None:
        return name
    if isinstance(value, Mapping):
        return {str(settings_json(k)) if enum_name(k) else str(k): settings_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [settings_json(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "__dataclass_fields__"):
        return {k: settings_json(getattr(value, k)) for k in value.__dataclass_fields__}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"settings_json: cannot convert {type(value).__name__}")


def config_json(b: Backend, config: trt.IBuilderConfig) -> dict[str, Any]:
    """What a builder config holds, read back, enums by name: for the build manifest."""
    flags = sorted(name for name, flag in b.trt.BuilderFlag.__members__.items() if config.get_flag(flag))
    out: dict[str, Any] = {"backend": b.name, "version": b.version, "builder_flags": flags}
    if b.has("memory_pool_limit"):
        out["workspace_bytes"] = int(config.get_memory_pool_limit(b.trt.MemoryPoolType.WORKSPACE))
    if b.has("builder_optimization_level"):
        out["builder_optimization_level"] = int(config.builder_optimization_level)
    out["profiling_verbosity"] = settings_json(config.profiling_verbosity)
    if b.has("compute_capability_targets"):
        n = int(config.num_compute_capabilities)
        out["compute_capabilities"] = [settings_json(config.get_compute_capability(i)) for i in range(n)]
    if b.has("dla"):
        device: trt.DeviceType = config.default_device_type
        out["default_device_type"] = settings_json(device)
        out["dla_core"] = int(config.DLA_core) if device == b.trt.DeviceType.DLA else None
    return out


def describe(b: Backend) -> dict[str, Any]:
    return {
        "backend": b.name, "module": b.trt.__name__, "version": b.version,
        "file": getattr(b.trt, "__file__", None), "capabilities": dict(sorted(b.caps.items())),
    }
