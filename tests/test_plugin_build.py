"""Build and no-GPU tests of the DvitTopKGather CUDA kernel and TensorRT plugin (plugins/).

(a) the kernel library builds with CMake + nvcc for one architecture, and the CPU-only emulation of the kernel's
    selection network / tiling / gather (dvit_topk_gather_host_test) passes;
(b) for each TensorRT include directory (``$DVIT_TRT_INCLUDE_DIRS``, colon-separated; when unset, every
    ``../shared/tensorrt-oss/*/include`` beside the repository), the plugin libraries build against it, export the
    plugin-library entry points, need no libnvinfer symbol, and the plugin's build-time checks pass on the CPU
    (dvit_trt_plugin_host_test, with fake TensorRT expression builders). The header sets reuse the kernel build's
    directory, so only the TensorRT-dependent part is compiled per set;
(c) the launcher refuses bad configurations through ctypes with an error code and a readable message, before any
    CUDA call (so this runs without a GPU);
(d) CMake stops a Jetson build whose nvcc is newer than the target JetPack's CUDA driver.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_build_helpers import (
    PLUGINS,
    SKIP_LINE,
    build_kernel,
    build_plugin,
    exported,
    header_set_id,
    no_headers_reason,
    nvcc,
    require_tools,
    run_host_test,
    run_logged,
    trt_include_dirs,
)

ERR_DTYPE, ERR_SHAPE, ERR_K, ERR_N_TOO_LARGE, ERR_NULL = 1, 2, 3, 4, 5
F32, F16 = 0, 1  # dtype codes (= nvinfer1::DataType::kFLOAT, ::kHALF)


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
    return build_kernel(tmp_path_factory)


@pytest.fixture(scope="session")
def kernel_lib(kernel_build: dict) -> ctypes.CDLL:
    return _bind_launcher(ctypes.CDLL(str(kernel_build["lib"])))


def test_kernel_library_builds(kernel_build: dict) -> None:
    assert kernel_build["lib"].is_file(), kernel_build["log"][-4000:]
    assert SKIP_LINE in kernel_build["log"], "configure must say that the plugin library was skipped"
    names = exported(kernel_build["lib"])
    expected = {"dvit_topk_gather_launch", "dvit_topk_gather_launch_tiles", "dvit_topk_gather_validate",
                "dvit_topk_gather_last_error", "dvit_topk_gather_max_n"}
    assert expected <= names
    # Only our entry points leave the library (the static CUDA runtime stays inside).
    assert not {s for s in names if s.startswith("cuda")}, sorted(names)
    _assert_no_warnings(kernel_build["log"])


def _assert_no_warnings(log: str) -> None:
    """-Wall -Wextra (host code) and nvcc's own diagnostics: the build must be warnings-free."""
    for line in log.splitlines():
        assert not re.search(r"\bwarning\b", line, re.IGNORECASE), f"build warning: {line}"


def test_selection_network_emulated_on_cpu(kernel_build: dict) -> None:
    """The kernel's own phase functions, run thread by thread on the CPU: races, bounds, order, gather; from
    N = 1024 on every image is sorted once per launch (select launch + gather launch)."""
    out = run_host_test(kernel_build["dir"] / "dvit_topk_gather_host_test")
    assert " 0 failures" in out
    large = re.findall(r"N=(\d+) B=(\d+) \| 2 (\d+) (\d+) (\d+) \| 1 (\d+) (\d+) (\d+)", out)
    assert len(large) == 6, out[-2000:]
    for n, batch, _blocks, sorts, cx, _fused_blocks, fused_sorts, fused_cx in large:
        assert int(sorts) == int(batch) < int(fused_sorts), f"N={n} B={batch}: {sorts} sorts, fused {fused_sorts}"
        assert int(cx) * 10 < int(fused_cx), f"N={n} B={batch}: {cx} compare-exchanges, fused {fused_cx}"


# ---------------------------------------------------------------------------------------------------------------
# (b) plugin library against each TensorRT header set
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=trt_include_dirs() or [None], ids=header_set_id)
def plugin_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if request.param is None:
        pytest.skip(no_headers_reason())
    return build_plugin(request.param, tmp_path_factory)


def test_plugin_library_builds_and_exports_creators(plugin_build: dict) -> None:
    build_dir = plugin_build["dir"]
    assert SKIP_LINE not in plugin_build["log"]
    dynamic = build_dir / "libdvit_trt_plugins.so"
    static = build_dir / "libdvit_trt_plugins_static.so"
    assert dynamic.is_file() and static.is_file(), plugin_build["log"][-4000:]
    names = exported(dynamic)
    # IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, registry.load_library) looks these up.
    assert {"getCreators", "setLoggerFinder", "dvit_trt_register_plugins", "dvit_topk_gather_launch"} <= names
    # The load-time-registering variant must not offer getCreators (loadLibrary would register twice).
    static_names = exported(static)
    assert "dvit_trt_register_plugins" in static_names and "getCreators" not in static_names
    for lib in (dynamic, static):
        undefined = exported(lib, undefined=True)
        trt = {s for s in undefined if "nvinfer" in s or s in ("getPluginRegistry", "getLogger")}
        assert not trt, f"{lib.name} needs TensorRT symbols: {sorted(trt)}"


def test_header_set_rebuilds_only_the_tensorrt_part(plugin_build: dict) -> None:
    """Reconfiguring the kernel build for a header set compiles no CUDA and leaves the kernel library alone."""
    assert "Building CUDA object" not in plugin_build["log"], plugin_build["log"][-3000:]
    kernel = plugin_build["kernel_build"]
    assert kernel["lib"].stat().st_mtime_ns == kernel["lib_mtime_ns"]
    _assert_no_warnings(plugin_build["log"])


def test_plugin_build_time_checks_on_cpu(plugin_build: dict) -> None:
    """createPlugin / getOutputShapes / supportsFormatCombination / configurePlugin / onShapeChange / enqueue error
    paths, driven with fake TensorRT expression builders (no libnvinfer, no GPU)."""
    out = run_host_test(plugin_build["dir"] / "dvit_trt_plugin_host_test")
    assert " 0 failures" in out


def _ctypes_load(lib: Path, register: bool) -> tuple[int, str]:
    """ctypes.CDLL(lib) [+ dvit_trt_register_plugins()] in a fresh interpreter (this pytest process may have
    imported tensorrt_rtx for other tests); returns (rc, dvit_trt_plugin_last_error())."""
    code = (
        "import ctypes, sys\n"
        "lib = ctypes.CDLL(sys.argv[1])\n"
        "lib.dvit_trt_plugin_last_error.restype = ctypes.c_char_p\n"
        f"rc = lib.dvit_trt_register_plugins() if {register} else -1\n"
        "print(rc, lib.dvit_trt_plugin_last_error().decode())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rc, _, message = proc.stdout.strip().partition(" ")
    return int(rc), message


def test_plugin_library_loads_without_tensorrt(plugin_build: dict) -> None:
    """Explicit registration without any TensorRT loaded fails cleanly and names the runtimes it looked for."""
    rc, message = _ctypes_load(plugin_build["dir"] / "libdvit_trt_plugins.so", register=True)
    assert rc == 1, message
    major = plugin_build["major"]
    for name in (f"libnvinfer.so.{major}", f"libnvinfer_lean.so.{major}", f"libnvinfer_dispatch.so.{major}",
                 "libtensorrt_rtx.so.1", "is not loaded"):
        assert name in message, message


def test_load_time_registration_error_survives_static_initialisation(plugin_build: dict) -> None:
    """The static variant's registrar runs while the library is loaded, before or after the other translation
    units' static objects are constructed (link order decides). Its error must still be readable afterwards: the
    shared state lives in function-local statics. (With namespace-scope globals the message was wiped: b''.)"""
    rc, message = _ctypes_load(plugin_build["dir"] / "libdvit_trt_plugins_static.so", register=False)
    assert rc == -1 and "TensorRT is not loaded in this process" in message, message


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


# ---------------------------------------------------------------------------------------------------------------
# (d) Jetson targets: nvcc newer than the JetPack driver
# ---------------------------------------------------------------------------------------------------------------


def _nvcc_major() -> int:
    out = subprocess.run([require_tools(), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"release (\d+)\.", out)
    assert found, out
    return int(found.group(1))


def test_jetson_target_refuses_nvcc_newer_than_its_jetpack(tmp_path: Path) -> None:
    """The check runs before CUDA is enabled, so the refusal costs a fraction of a second."""
    major = _nvcc_major()
    # A target whose default JetPack has an older CUDA than this nvcc.
    target, jetpack, jetpack_cuda = {13: ("orin", 6, "12.6"), 12: ("orin", 5, "11.4")}.get(major, (None, 0, ""))
    if target is None:
        pytest.skip(f"nvcc {major}.x is not newer than any JetPack's CUDA: nothing to refuse")
    cmd = ["cmake", "-S", str(PLUGINS), "-B", str(tmp_path / "b"), f"-DCMAKE_CUDA_COMPILER={nvcc()}",
           f"-DDVIT_TARGET={target}", f"-DDVIT_JETPACK={jetpack}"]
    log: list[str] = []
    proc = run_logged(cmd, log)
    text = " ".join("".join(log).split())  # CMake wraps long messages
    assert proc.returncode != 0, text[-3000:]
    assert f"is newer than the CUDA driver of DVIT_TARGET={target} on JetPack {jetpack} (CUDA {jetpack_cuda})" in text
    assert "Build on the device" in text and "-DDVIT_ALLOW_NEWER_CUDA=ON" in text
    # The override turns the stop into a warning (configure only, no compilation).
    proc = run_logged([*cmd, "-DDVIT_ALLOW_NEWER_CUDA=ON", "-DDVIT_BUILD_TRT_PLUGIN=OFF"], log)
    text = " ".join("".join(log[-1:]).split())
    assert proc.returncode == 0 and "CMake Warning" in text and "building anyway" in text, text[-3000:]
