"""Builds of plugins/ shared by tests/test_plugin_build.py and tests/test_plugin_tensorrt_rtx.py.

One build directory per pytest session: configured first without TensorRT (the kernel library, the CPU emulation of
the kernel), then reconfigured once per TensorRT header set. A reconfigure recompiles only what depends on the
TensorRT headers (plugins/common/, the entry points in plugins/api/, each op's plugin object, the plugin host test);
each set's outputs are copied to their own folder, so every header set stays testable after the next one was built.
Results are cached here, at module level, so that both test modules reuse the same builds.

The device options CMake takes come from the target profiles (`python -m pipeline.targets --cmake-args NAME`, what
`make plugins TARGET=NAME` passes): profile_cmake_args() reads them the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
# Where CI and developers keep NVIDIA's public TensorRT headers (one folder per release, each with include/).
SHARED_HEADERS = REPO.parent / "shared" / "tensorrt-oss"
# One architecture keeps the build short; 87 (Jetson Orin) is accepted by CUDA 11.4 through 13.x.
TEST_ARCH = os.environ.get("DVIT_TEST_CUDA_ARCH", "87")
JOBS = os.environ.get("DVIT_TEST_BUILD_JOBS", "2")
SKIP_LINE = "plugin library (libdvit_trt_plugins.so) SKIPPED"
# What each header set's build leaves in its own folder.
PLUGIN_OUTPUTS = ("libdvit_trt_plugins.so", "libdvit_trt_plugins_static.so", "dvit_trt_plugin_host_test")

_KERNEL_BUILD: dict[str, dict] = {}
_PLUGIN_BUILDS: dict[str, dict] = {}


def nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def require_tools() -> str:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: cannot build the CUDA kernel library")
    found = nvcc()
    if found is None:
        pytest.skip("nvcc (CUDA toolkit) not found on PATH, in $CUDACXX or /usr/local/cuda/bin: cannot build")
    return found


def run_logged(cmd: list[str], log: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    log.append(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
    return proc


def cmake_build(build_dir: Path, *options: str, configure_only: bool = False) -> str:
    """Configures (or reconfigures) and builds plugins/ in build_dir; returns the log (fails the test on error)."""
    compiler = require_tools()
    configure = [
        "cmake", "-S", str(PLUGINS), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_CUDA_ARCHITECTURES={TEST_ARCH}", f"-DCMAKE_CUDA_COMPILER={compiler}", *options,
    ]
    steps = [configure] if configure_only else [configure, ["cmake", "--build", str(build_dir), "-j", JOBS]]
    log: list[str] = []
    for cmd in steps:
        proc = run_logged(cmd, log)
        if proc.returncode != 0:
            pytest.fail(f"build failed (exit {proc.returncode}):\n{''.join(log)[-6000:]}")
    return "".join(log)


def profile_cmake_args(name: str, *extra: str, env: dict[str, str] | None = None) -> list[str]:
    """The -D options `make plugins TARGET=name` gives CMake (pipeline.targets --cmake-args name [extra...])."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.targets", "--cmake-args", name, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def configure(build_dir: Path, *options: str) -> tuple[int, str]:
    """Configures plugins/ in build_dir with this machine's nvcc (no -DCMAKE_CUDA_ARCHITECTURES of its own: the
    options say); returns (exit code, log) and never fails the test itself."""
    compiler = require_tools()
    log: list[str] = []
    proc = run_logged(["cmake", "-S", str(PLUGINS), "-B", str(build_dir), f"-DCMAKE_CUDA_COMPILER={compiler}",
                       *options], log)
    return proc.returncode, "".join(log)


def nvcc_major() -> int:
    out = subprocess.run([require_tools(), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"release (\d+)\.", out)
    assert found, out
    return int(found.group(1))


def exported(lib: Path, undefined: bool = False) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed: cannot list the library's dynamic symbols")
    flag = "--undefined-only" if undefined else "--defined-only"
    out = subprocess.run([nm, "-D", flag, str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def run_host_test(binary: Path) -> str:
    assert binary.is_file(), f"{binary} was not built"
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# TensorRT header sets
# ---------------------------------------------------------------------------------------------------------------


def trt_include_dirs() -> list[str]:
    """$DVIT_TRT_INCLUDE_DIRS (colon-separated) when set; otherwise every ../shared/tensorrt-oss/*/include next to
    the repository, so that a plain `make test` on a fresh clone builds against them too. Set the variable to an
    empty string to build against none."""
    value = os.environ.get("DVIT_TRT_INCLUDE_DIRS")
    if value is None:
        return [str(p.resolve()) for p in sorted(SHARED_HEADERS.glob("*/include")) if p.is_dir()]
    return [str(Path(d).resolve()) for d in value.split(":") if d.strip()]


def header_set_id(include_dir: str | None) -> str:
    return Path(include_dir).parent.name if include_dir else "none"


def no_headers_reason() -> str:
    where = ("DVIT_TRT_INCLUDE_DIRS is set but empty" if os.environ.get("DVIT_TRT_INCLUDE_DIRS") is not None
             else f"DVIT_TRT_INCLUDE_DIRS is unset and no {SHARED_HEADERS}/*/include exists")
    return (f"no TensorRT headers to build the plugin against: {where} (set DVIT_TRT_INCLUDE_DIRS to "
            "colon-separated include dirs, e.g. /opt/trt-10.3/include:/opt/trt-11.1/include)")


def headers_major(include_dir: str) -> int:
    """NV_TENSORRT_MAJOR of a header set (11.x spells it through TRT_MAJOR_ENTERPRISE)."""
    text = (Path(include_dir) / "NvInferVersion.h").read_text()
    defines = dict(
        line.split()[1:3] for line in text.splitlines() if line.startswith("#define ") and len(line.split()) >= 3
    )
    value = defines.get("NV_TENSORRT_MAJOR", "0")
    return int(defines.get(value, value))


# ---------------------------------------------------------------------------------------------------------------
# Builds (cached for the whole session)
# ---------------------------------------------------------------------------------------------------------------


def build_kernel(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The kernel library and its CPU emulation, configured without TensorRT."""
    if "build" not in _KERNEL_BUILD:
        build_dir = tmp_path_factory.mktemp("dvit_plugins_build")
        log = cmake_build(build_dir, "-DDVIT_BUILD_TRT_PLUGIN=OFF")
        lib = build_dir / "libdvit_topk_gather_kernel.so"
        _KERNEL_BUILD["build"] = {"dir": build_dir, "log": log, "lib": lib,
                                  "lib_mtime_ns": lib.stat().st_mtime_ns if lib.exists() else None}
    return _KERNEL_BUILD["build"]


def build_plugin(include_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The plugin libraries and host test built against one header set (reusing the kernel build's directory);
    returns {"dir": folder with PLUGIN_OUTPUTS, "log": build log, "major": NV_TENSORRT_MAJOR, "kernel_build": the
    build_kernel() result whose directory was reconfigured}."""
    if not (Path(include_dir) / "NvInferRuntime.h").is_file():
        pytest.fail(f"TensorRT include dir {include_dir} holds no NvInferRuntime.h")
    if include_dir not in _PLUGIN_BUILDS:
        base = build_kernel(tmp_path_factory)
        build_dir = base["dir"]
        log = cmake_build(build_dir, "-DDVIT_BUILD_TRT_PLUGIN=ON", f"-DTENSORRT_INCLUDE_DIR={include_dir}")
        out_dir = build_dir / "header-sets" / f"{len(_PLUGIN_BUILDS)}-{header_set_id(include_dir)}"
        out_dir.mkdir(parents=True)
        for name in PLUGIN_OUTPUTS:
            if (build_dir / name).exists():
                shutil.copy2(build_dir / name, out_dir / name)
        _PLUGIN_BUILDS[include_dir] = {"dir": out_dir, "log": log, "major": headers_major(include_dir),
                                       "kernel_build": base}
    return _PLUGIN_BUILDS[include_dir]
