"""Build and no-GPU tests of the DvitTopKGather CUDA kernel and TensorRT plugin (plugins/).

(a) the kernel library builds with CMake + nvcc for one architecture, and the CPU-only emulation of the kernel's
    selection network / tiling / gather (dvit_topk_gather_host_test) passes;
(b) for each TensorRT include directory in $DVIT_TRT_INCLUDE_DIRS (colon-separated), the plugin libraries build
    against it, export the plugin-library entry points, need no libnvinfer symbol, and the plugin's build-time
    checks pass on the CPU (dvit_trt_plugin_host_test, with fake TensorRT expression builders);
(c) the launcher refuses bad configurations through ctypes with an error code and a readable message, before any
    CUDA call (so this runs without a GPU).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
# One architecture keeps the build short; 87 (Jetson Orin) is accepted by CUDA 11.4 through 13.x.
TEST_ARCH = os.environ.get("DVIT_TEST_CUDA_ARCH", "87")
JOBS = os.environ.get("DVIT_TEST_BUILD_JOBS", "2")

ERR_DTYPE, ERR_SHAPE, ERR_K, ERR_N_TOO_LARGE, ERR_NULL = 1, 2, 3, 4, 5
F32, F16 = 0, 1  # dtype codes (= nvinfer1::DataType::kFLOAT, ::kHALF)
SKIP_LINE = "plugin library (libdvit_trt_plugins.so) SKIPPED"


def _nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _require_tools() -> str:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: cannot build the CUDA kernel library")
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) not found on PATH, in $CUDACXX or /usr/local/cuda/bin: cannot build")
    return nvcc


def _cmake_build(build_dir: Path, *options: str) -> str:
    """Configures and builds plugins/ into build_dir; returns the combined log (fails the test on error)."""
    nvcc = _require_tools()
    configure = [
        "cmake", "-S", str(PLUGINS), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_CUDA_ARCHITECTURES={TEST_ARCH}", f"-DCMAKE_CUDA_COMPILER={nvcc}", *options,
    ]
    log = ""
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j", JOBS]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        log += f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n"
        if proc.returncode != 0:
            pytest.fail(f"build failed (exit {proc.returncode}):\n{log[-6000:]}")
    return log


def _exported(lib: Path, undefined: bool = False) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed: cannot list the library's dynamic symbols")
    flag = "--undefined-only" if undefined else "--defined-only"
    out = subprocess.run([nm, "-D", flag, str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def _run_host_test(binary: Path) -> str:
    assert binary.is_file(), f"{binary} was not built"
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def _bind_launcher(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, i32, vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    lib.dvit_topk_gather_launch.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, i32, vp]
    lib.dvit_topk_gather_launch.restype = i32
    lib.dvit_topk_gather_validate.argtypes = [i64, i64, i64, i64, i32, i32]
    lib.dvit_topk_gather_validate.restype = i32
    lib.dvit_topk_gather_last_error.argtypes = []
    lib.dvit_topk_gather_last_error.restype = ctypes.c_char_p
    lib.dvit_topk_gather_max_n.argtypes = []
    lib.dvit_topk_gather_max_n.restype = i32
    return lib


# ---------------------------------------------------------------------------------------------------------------
# (a) kernel library
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    build_dir = tmp_path_factory.mktemp("dvit_kernel_build")
    log = _cmake_build(build_dir, "-DDVIT_BUILD_TRT_PLUGIN=OFF")
    return {"dir": build_dir, "log": log, "lib": build_dir / "libdvit_topk_gather_kernel.so"}


@pytest.fixture(scope="session")
def kernel_lib(kernel_build: dict) -> ctypes.CDLL:
    return _bind_launcher(ctypes.CDLL(str(kernel_build["lib"])))


def test_kernel_library_builds(kernel_build: dict) -> None:
    assert kernel_build["lib"].is_file(), kernel_build["log"][-4000:]
    assert SKIP_LINE in kernel_build["log"], "configure must say that the plugin library was skipped"
    exported = _exported(kernel_build["lib"])
    expected = {"dvit_topk_gather_launch", "dvit_topk_gather_launch_tiles", "dvit_topk_gather_validate",
                "dvit_topk_gather_last_error", "dvit_topk_gather_max_n"}
    assert expected <= exported
    # Only our entry points leave the library (the static CUDA runtime stays inside).
    assert not {s for s in exported if s.startswith("cuda")}, sorted(exported)


def test_selection_network_emulated_on_cpu(kernel_build: dict) -> None:
    """The kernel's own phase functions, run thread by thread on the CPU: races, bounds, order, gather."""
    out = _run_host_test(kernel_build["dir"] / "dvit_topk_gather_host_test")
    assert " 0 failures" in out


# ---------------------------------------------------------------------------------------------------------------
# (b) plugin library against each TensorRT header set
# ---------------------------------------------------------------------------------------------------------------


def _trt_include_dirs() -> list[str]:
    return [d for d in os.environ.get("DVIT_TRT_INCLUDE_DIRS", "").split(":") if d.strip()]


_PLUGIN_BUILDS: dict[str, dict] = {}


@pytest.fixture(params=_trt_include_dirs() or [None], ids=lambda d: Path(d).parent.name if d else "unset")
def plugin_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    include_dir = request.param
    if include_dir is None:
        pytest.skip("DVIT_TRT_INCLUDE_DIRS is unset or empty: no TensorRT headers to build the plugin against "
                    "(set it to colon-separated include dirs, e.g. /opt/trt-10.3/include:/opt/trt-11.1/include)")
    if not (Path(include_dir) / "NvInferRuntime.h").is_file():
        pytest.fail(f"DVIT_TRT_INCLUDE_DIRS entry {include_dir} holds no NvInferRuntime.h")
    if include_dir not in _PLUGIN_BUILDS:
        build_dir = tmp_path_factory.mktemp("dvit_plugin_build")
        log = _cmake_build(build_dir, f"-DTENSORRT_INCLUDE_DIR={include_dir}")
        _PLUGIN_BUILDS[include_dir] = {"dir": build_dir, "log": log}
    return _PLUGIN_BUILDS[include_dir]


def test_plugin_library_builds_and_exports_creators(plugin_build: dict) -> None:
    build_dir = plugin_build["dir"]
    assert SKIP_LINE not in plugin_build["log"]
    dynamic = build_dir / "libdvit_trt_plugins.so"
    static = build_dir / "libdvit_trt_plugins_static.so"
    assert dynamic.is_file() and static.is_file(), plugin_build["log"][-4000:]
    exported = _exported(dynamic)
    # IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, registry.load_library) looks these up.
    assert {"getCreators", "setLoggerFinder", "dvit_trt_register_plugins", "dvit_topk_gather_launch"} <= exported
    # The load-time-registering variant must not offer getCreators (loadLibrary would register twice).
    static_exported = _exported(static)
    assert "dvit_trt_register_plugins" in static_exported and "getCreators" not in static_exported
    for lib in (dynamic, static):
        undefined = _exported(lib, undefined=True)
        trt = {s for s in undefined if "nvinfer" in s or s in ("getPluginRegistry", "getLogger")}
        assert not trt, f"{lib.name} needs TensorRT symbols: {sorted(trt)}"


def test_plugin_build_time_checks_on_cpu(plugin_build: dict) -> None:
    """createPlugin / getOutputShapes / supportsFormatCombination / configurePlugin / onShapeChange / enqueue error
    paths, driven with fake TensorRT expression builders (no libnvinfer, no GPU)."""
    out = _run_host_test(plugin_build["dir"] / "dvit_trt_plugin_host_test")
    assert " 0 failures" in out


def test_plugin_library_loads_without_tensorrt(plugin_build: dict) -> None:
    lib = ctypes.CDLL(str(plugin_build["dir"] / "libdvit_trt_plugins.so"))
    lib.dvit_trt_register_plugins.restype = ctypes.c_int32
    lib.dvit_trt_plugin_last_error.restype = ctypes.c_char_p
    rc = lib.dvit_trt_register_plugins()
    if rc != 0:  # the usual case here: libnvinfer is not loaded in this process
        assert b"is not loaded" in lib.dvit_trt_plugin_last_error()


# ---------------------------------------------------------------------------------------------------------------
# (c) launcher error paths through ctypes (validation happens before any CUDA call: no GPU needed)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("batch", "n", "c", "k", "sdt", "tdt", "code", "words"),
    [
        (1, 196, 384, 197, F32, F32, ERR_K, "k=197"),
        (1, 196, 384, 0, F32, F32, ERR_K, "k=0"),
        (1, 196, 384, -3, F32, F32, ERR_K, "k=-3"),
        (2, 4097, 384, 10, F32, F32, ERR_N_TOO_LARGE, "4096"),
        (0, 196, 384, 137, F32, F32, ERR_SHAPE, "zero-sized"),
        (1, 0, 384, 1, F32, F32, ERR_SHAPE, "zero-sized"),
        (1, 196, 0, 137, F16, F16, ERR_SHAPE, "zero-sized"),
        (1, 196, 384, 137, 7, F32, ERR_DTYPE, "scores dtype"),
        (1, 196, 384, 137, F32, 2, ERR_DTYPE, "tokens dtype"),
        (1, 4096, 1 << 20, 1, F32, F32, ERR_SHAPE, "exceed 1 GiB"),
    ],
    ids=["k>N", "k=0", "k<0", "N>max", "B=0", "N=0", "C=0", "scores-dtype", "tokens-dtype", "too-big"],
)
def test_launcher_rejects_bad_config(kernel_lib: ctypes.CDLL, batch: int, n: int, c: int, k: int, sdt: int,
                                     tdt: int, code: int, words: str) -> None:
    rc = kernel_lib.dvit_topk_gather_launch(None, None, None, None, batch, n, c, k, sdt, tdt, None)
    message = kernel_lib.dvit_topk_gather_last_error().decode()
    assert rc == code, message
    assert words in message and message.startswith("DvitTopKGather: ")
    assert kernel_lib.dvit_topk_gather_validate(batch, n, c, k, sdt, tdt) == code


def test_launcher_null_pointers_and_valid_config(kernel_lib: ctypes.CDLL) -> None:
    assert kernel_lib.dvit_topk_gather_max_n() == 4096
    assert kernel_lib.dvit_topk_gather_validate(64, 196, 384, 137, F16, F16) == 0
    assert kernel_lib.dvit_topk_gather_last_error() == b""
    rc = kernel_lib.dvit_topk_gather_launch(None, None, None, None, 8, 196, 384, 137, F32, F32, None)
    assert rc == ERR_NULL
    assert b"null device pointer: scores tokens kept_tokens kept_indices" in kernel_lib.dvit_topk_gather_last_error()
    # Edges that are valid: k = N = max, k = 1, N = 1.
    for batch, n, c, k in ((1, 4096, 8, 4096), (3, 4096, 8, 1), (1, 1, 1, 1)):
        assert kernel_lib.dvit_topk_gather_validate(batch, n, c, k, F32, F16) == 0
