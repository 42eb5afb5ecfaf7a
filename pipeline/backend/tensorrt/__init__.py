"""The TensorRT backend (TensorRT 10.x/11.x and TensorRT for RTX), laid out as mmdeploy lays out a backend.

  capabilities  the table of version-dependent features and the probe that evaluates it
  loader        importing the flavour a name or a plan asks for (one line naming the install when absent)
  builder       builder, network, ONNX parser, settings; the config read back as JSON
  plan_header   what a serialized plan says about itself, read without TensorRT or a GPU
  plugins       the one plugin-library loader: found, hashed, registered once per process
  cuda          device buffers, one stream, events and CUDA graphs through cuda-python (no torch)
  runner        serialized plans behind the runner interface (needs a GPU)

Importing this package imports neither TensorRT, cuda-python nor torch: a Jetson imports it with numpy alone.
"""
from .builder import (
    BuildSettings,
    apply_settings,
    build_serialized,
    config_json,
    create_builder,
    create_network,
    describe,
    enum_name,
    network_flags,
    parse_onnx,
    settings_json,
    timing_cache_note,
)
from .capabilities import CAPABILITIES, Capability, has_name, is_rtx, probe, probe_names
from .loader import (
    JETSON_RELEASE_FILE,
    MODULES,
    Backend,
    BackendError,
    import_backend,
    install_hint,
    is_jetson,
    load,
    load_for,
)

__all__ = [
    "CAPABILITIES", "JETSON_RELEASE_FILE", "MODULES", "Backend", "BackendError", "BuildSettings", "Capability",
    "apply_settings", "build_serialized", "config_json", "create_builder", "create_network", "describe", "enum_name",
    "has_name", "import_backend", "install_hint", "is_jetson", "is_rtx", "load", "load_for", "network_flags",
    "parse_onnx", "probe", "probe_names", "settings_json", "timing_cache_note",
]
