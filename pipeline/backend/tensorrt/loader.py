"""TensorRT or TensorRT for RTX, imported by name and probed (capabilities.py holds the table of what to probe).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ...errors import DvitError
from ...targets import Target, backend_label
from .capabilities import CAPABILITIES, probe

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
JETSON_RELEASE_FILE = "etc/nv_tegra_release"  # relative to the root: present on every Jetson (L4T)


class BackendError(DvitError):
    pass


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
        # Not `make setup`: that installs the workstation set (torch, ModelOpt), which a Jetson neither needs nor gets.
        return ("on a Jetson it comes with JetPack: `sudo apt-get install nvidia-jetpack` (or python3-libnvinfer), "
                "then a venv that sees it: `python3 -m venv --system-site-packages .venv && .venv/bin/pip install "
                "'.[device,cuda12]'` (JetPack 6; cuda13 on JetPack 7)")
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
