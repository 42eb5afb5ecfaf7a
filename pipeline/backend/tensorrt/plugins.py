"""The one loader of the DvitTopKGather plugin library: found, hashed, and registered with TensorRT once per process.

Building needs it before parsing (a plugin node parses only once its creator is registered) and running needs it
before deserializing; both come here, so a process that builds and then runs registers the library once. The
engine depends on the library's code, so its sha256 goes into the engine-cache key and the manifest. The library
is found at --plugin-lib, else where the engine set's manifest says, else where `make plugins` writes it
(build/plugins/, below the working directory or this checkout). Registration is process-wide and cannot be
undone: a second, different library with the same creator is refused instead of silently using the first.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import DvitError
from ...io import sha256_file
from .loader import Backend, BackendError

if TYPE_CHECKING:  # annotations only; at run time `trt` is the module of the Backend in hand
    import tensorrt as trt

    from ...graphset import GraphSet

LIBRARY_NAME = "libdvit_trt_plugins.so"
KERNEL_LIBRARY = "libdvit_topk_gather_kernel.so"  # what `make plugins` builds without TensorRT headers
# Where `make plugins` builds (Makefile: PLUGINS_BUILD ?= build/plugins): below the working directory, then below
# the checkout this package runs from.
DEFAULT_SEARCH: tuple[Path, ...] = (
    Path("build") / "plugins" / LIBRARY_NAME,
    Path(__file__).resolve().parents[2] / "build" / "plugins" / LIBRARY_NAME,
)
CREATOR = ("DvitTopKGather", "1", "dvit")
MAKE_PLUGINS = "build it with `make plugins` (or pass --plugin-lib PATH)"

_registered: dict[str, str] = {}  # resolved path -> sha256 of every library this process registered


@dataclass(frozen=True)
class PluginLibrary:
    path: Path  # resolved
    sha256: str

    def to_json(self) -> dict[str, str]:
        """For the manifest: `path`, not `file` (a `file` + `sha256` pair would make readers verify it as an
        artifact of the engine set, and the library lives outside it)."""
        return {"path": str(self.path), "sha256": self.sha256}


def find(explicit: str | os.PathLike[str] | None, needed: int,
         search: Sequence[str | os.PathLike[str]] = DEFAULT_SEARCH) -> PluginLibrary | None:
    """The library to load, or None when no graph needs one (`needed` = plugin nodes in the graphs to build)."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise DvitError(f"--plugin-lib {p} does not exist: {_fix(p)}")
        return _described(p) if needed else None
    if not needed:
        return None
    for candidate in map(Path, search):
        if candidate.is_file():
            return _described(candidate)
    where = ", ".join(str(p) for p in search) or "nowhere (no search path)"
    raise DvitError(f"the graphs hold {needed} DvitTopKGather plugin node(s) but no plugin library was found "
                    f"(looked at {where}): {next((_fix(Path(p)) for p in search), MAKE_PLUGINS)}")


def _fix(expected: Path) -> str:
    """`make plugins`, or why it did not produce the library: built without TensorRT headers, the folder holds
    only the kernel library."""
    if (expected.parent / KERNEL_LIBRARY).is_file():
        return (f"{expected.parent} holds only {KERNEL_LIBRARY}, so CMake found no TensorRT headers: run `make plugins "
                "TENSORRT_ROOT=<a TensorRT with include/NvInferRuntime.h>` (or pass --plugin-lib PATH)")
    return MAKE_PLUGINS


def _described(p: Path) -> PluginLibrary:
    path = p.resolve()
    return PluginLibrary(path, sha256_file(path))


def check_parser_can_load(b: Backend) -> None:
    """TensorRT-RTX's ONNX parser dlopens libtensorrt_rtx.so by its unversioned name at the first plugin node and
    aborts the process when it is absent (the wheel ships only .so.1): refuse before parsing instead."""
    if b.name != "tensorrt-rtx":
        return
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for d in map(Path, folders):
        if (d / "libtensorrt_rtx.so.1").exists() and not (d / "libtensorrt_rtx.so").exists():
            raise BackendError(f"{d}/libtensorrt_rtx.so is missing, and {b.label}'s ONNX parser aborts without it on "
                               "a plugin node: run `make link-tensorrt-rtx` (part of `make setup`)")


def describe(path: str | os.PathLike[str]) -> PluginLibrary:
    """The library at `path`, hashed; one line naming `make plugins` when it is missing."""
    p = Path(path)
    if not p.is_file():
        raise DvitError(f"plugin library {p} not found (the graphs use the DvitTopKGather plugin): {_fix(p)}")
    return _described(p)


def for_graph_set(gs: GraphSet, override: str | os.PathLike[str] | None = None) -> Path | None:
    """The plugin library an engine set needs: `override`, else the one its manifest names (`plugin_library`: a
    path or {"path"|"file": ..., "absolute": ...}; a relative path is relative to the set's folder, as `dvit build`
    records it, else to the working directory, else `absolute`, where the library was at build time), else
    `make plugins`' output when its engines hold plugin nodes; None when they hold none. Existence is checked when
    loading (a missing library is named where the set's folder says it should be)."""
    if override is not None:
        return Path(override)
    named = gs.manifest.get("plugin_library")
    absolute = None
    if isinstance(named, Mapping):
        absolute = named.get("absolute")
        named = named.get("path") or named.get("file")
    if named:
        p = Path(str(named))
        if p.is_absolute():
            return p
        beside = gs.root / p
        if beside.exists():
            return beside
        if p.exists():
            return p
        if absolute and Path(str(absolute)).exists():
            return Path(str(absolute))
        return beside
    return DEFAULT_SEARCH[0] if gs.uses_plugin else None


def load(b: Backend, lib: PluginLibrary | str | os.PathLike[str]) -> PluginLibrary:
    """Register the library's creators with `b`'s plugin registry, once per process; returns it described."""
    if not isinstance(lib, PluginLibrary):
        lib = describe(lib)
    key = str(lib.path)
    if key in _registered and _registered[key] == lib.sha256:
        return lib
    if lib.sha256 in _registered.values():  # the same code under another path: its creators are registered already
        _registered[key] = lib.sha256
        return lib
    if _registered:
        other = next(iter(_registered))
        raise BackendError(f"another plugin library ({other}) is already registered in this process, and TensorRT "
                           f"cannot unload it: use {lib.path} in a new process")
    registry: trt.IPluginRegistry = b.trt.get_plugin_registry()
    if registry.load_library(key) is None:
        raise BackendError(f"{b.label} could not load the plugin library {lib.path} (built against another TensorRT, "
                           "or its creator is registered already?): rebuild it with `make plugins`, and use it in a "
                           "new process")
    _registered[key] = lib.sha256
    return lib
