"""TensorRT or TensorRT for RTX, imported by name, with every version difference decided by probing the module.

TensorRT 10.3 (JetPack 6), 10.13, 11.x and TensorRT-RTX differ in their Python API: 11.x and RTX removed the
weak-typing builder flags, STRONGLY_TYPED is 1 in 10.x and 0 in 11.x/RTX (deprecated, always on), RTX has no
DLA and no timing cache but chooses target compute capabilities itself. Code never compares version numbers
for this: it asks `backend.has(capability)`, and CAPABILITIES below is the one table that says which
TensorRT names each capability needs (a capability holds when all of them exist on the imported module).

Conventions, checked by tools/check_trt_api.py against the bindings of 10.3, 10.13 and 11.1 and the
installed TensorRT-RTX (tests/test_trt_api_surface.py):
* the TensorRT module object is called `trt` (a variable, a parameter, or the attribute `.trt`), or is
  imported as `import tensorrt as NAME` in that file;
* every name holding a TensorRT object is annotated with its class (`config: trt.IBuilderConfig`), so each
  attribute used on it can be checked; TensorRT results are assigned to annotated names, not chained;
* a TensorRT name missing from any of those releases is used only behind the capability that lists it.

Importing this module imports neither TensorRT nor torch: a Jetson runs it with numpy and JetPack alone.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import DvitError
from .targets import Target, backend_label

if TYPE_CHECKING:  # annotations only; at run time `trt` is whatever import_backend returned
    import tensorrt as trt

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
JETSON_RELEASE_FILE = "etc/nv_tegra_release"  # relative to the root: present on every Jetson (L4T)


class BackendError(DvitError):
    pass


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


@dataclass(frozen=True)
class Backend:
    """An imported TensorRT flavour: its module, version and probed capabilities."""

    name: str  # "tensorrt" or "tensorrt-rtx"
    trt: ModuleType
    version: str
    caps: Mapping[str, bool] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{backend_label(self.name)} {self.version}"

    def has(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}: add it to CAPABILITIES")
        return bool(self.caps[capability])


# ---------------------------------------------------------------------------------------------- import
def is_jetson(root: str | os.PathLike[str] = "/") -> bool:
    return (Path(root) / JETSON_RELEASE_FILE).exists()


def install_hint(backend: str, root: str | os.PathLike[str] = "/") -> str:
    """What to install on this machine to get `backend`."""
    if backend == "tensorrt-rtx":
        if is_jetson(root):
            return ("TensorRT for RTX does not run on Jetson: use a Jetson target (orin-nano, orin-nx, agx-orin, "
                    "thor), whose backend is tensorrt")
        return "install it with `pip install tensorrt-rtx-cu13` (x86-64), or run `make setup`, which does"
    if is_jetson(root):
        return ("on a Jetson it comes with JetPack: `sudo apt-get install nvidia-jetpack` (or python3-libnvinfer), "
                "then `make setup SYSTEM_SITE_PACKAGES=1` so that the venv sees it")
    return ("install it from NVIDIA's index: `pip install tensorrt` (the wheel fetches from pypi.nvidia.com), "
            "or `pip install -e .[tensorrt]`")


def import_backend(name: str, root: str | os.PathLike[str] = "/") -> ModuleType:
    """The module for backend `name` ("tensorrt" or "tensorrt-rtx"); one line naming the fix when absent."""
    if name not in MODULES:
        raise BackendError(f"unknown backend {name!r}: use one of {', '.join(MODULES)}")
    module = MODULES[name]
    label = backend_label(name)
    try:
        trt = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise BackendError(f"{label} is installed but importing it failed ({e}): {install_hint(name, root)}") from e
        raise BackendError(f"{label} is not installed (no Python module {module}): {install_hint(name, root)}") from e
    except (ImportError, OSError) as e:  # the module exists but its shared libraries do not load
        raise BackendError(f"{label} is installed but does not load ({e}): {install_hint(name, root)}") from e
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        where = getattr(trt, "__file__", None) or list(getattr(trt, "__path__", []))
        raise BackendError(f"`import {module}` found {where}, which is not {label} (type stubs installed into "
                           f"site-packages?): remove it, then {install_hint(name, root)}")
    return trt


def load(name: str, root: str | os.PathLike[str] = "/") -> Backend:
    """Import backend `name` and probe its capabilities."""
    trt = import_backend(name, root)
    return Backend(name=name, trt=trt, version=str(trt.__version__), caps=probe(trt))


def load_for(target: Target) -> Backend:
    """The backend `target` names, refused with one line when its version is not one the target supports."""
    b = load(target.backend)
    if problem := target.check_version(b.version):
        raise BackendError(problem)
    return b


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

