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
(d) the device comes from its target profile (targets/*.toml through `python -m pipeline.targets --cmake-args`, what
    `make plugins TARGET=...` passes): `make plugins TARGET=orin-nano` with nvcc 13 stops with one line naming
    JetPack 6's CUDA 12.6; desktop-rtx configures with its architectures; CMake keeps no device table of its own.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_build_helpers import (
    PLUGINS,
    REPO,
    SHARED_HEADERS,
    SKIP_LINE,
    build_kernel,
    build_plugin,
    configure,
    exported,
    header_set_id,
    no_headers_reason,
    nvcc_major,
    profile_cmake_args,
    require_tools,
    run_host_test,
    trt_include_dirs,
)

from pipeline import targets

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
# (d) the device comes from its target profile
# ---------------------------------------------------------------------------------------------------------------

# What the Makefile passes without TARGET (PLUGINS_NO_PROFILE): forget a previous profile.
NO_PROFILE = ("-UCMAKE_CUDA_ARCHITECTURES", "-DDVIT_PROFILE=", "-DDVIT_DEVICE_CUDA=", "-DDVIT_DEVICE_JETPACK=")


def _lines_with(log: str, words: str) -> list[str]:
    return [line for line in log.splitlines() if words in line]


def _cache(build_dir: Path) -> dict[str, str]:
    entries = {}
    for line in (build_dir / "CMakeCache.txt").read_text().splitlines():
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*:[A-Z]+=", line):
            key, _, value = line.partition("=")
            entries[key.split(":")[0]] = value
    return entries


def _nvcc_archs() -> set[str]:
    out = subprocess.run([require_tools(), "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"compute_(\d+)", out))


def test_make_plugins_for_orin_nano_stops_when_nvcc_is_newer_than_jetpack_6(tmp_path: Path) -> None:
    """`make plugins TARGET=orin-nano` on a CUDA 13 machine: the profile says JetPack 6 (CUDA 12.6), so CMake stops
    before CUDA is enabled, with one line naming the device's CUDA and the fix. (Before the profile fed CMake, make
    passed DVIT_TARGET=desktop and built an Orin plugin JetPack 6 cannot load.)"""
    if nvcc_major() <= 12:
        pytest.skip(f"nvcc {nvcc_major()}.x is not newer than JetPack 6's CUDA 12.6: nothing to refuse")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    build_dir = tmp_path / "b"
    proc = subprocess.run(["make", "--no-print-directory", "plugins", "TARGET=orin-nano", f"PLUGINS_BUILD={build_dir}",
                           f"PY={sys.executable}"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    lines = _lines_with(out, "JetPack 6's CUDA 12.6")
    assert len(lines) == 1, out[-3000:]
    line = lines[0]
    assert f"nvcc {nvcc_major()}." in line and "the CUDA driver of orin-nano" in line, line
    for fix in ("NVCC=/usr/local/cuda-12.6/bin/nvcc", "JETPACK=", "DVIT_ALLOW_NEWER_CUDA=ON"):
        assert fix in line, line
    # The profile's options reached CMake, and nothing was compiled.
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in out and "-DDVIT_DEVICE_CUDA=12.6" in out, out[-3000:]
    assert "Building" not in out and not list(build_dir.glob("*.so"))


def test_device_cuda_check_override_and_newer_jetpack(tmp_path: Path) -> None:
    """DVIT_ALLOW_NEWER_CUDA=ON turns the stop into a warning; an Orin on JetPack 7 (--jetpack 7, make JETPACK=7)
    gets CUDA 13 from its profile and configures without either (configure only, no compilation)."""
    major = nvcc_major()
    build_dir = tmp_path / "b"
    orin = profile_cmake_args("orin-nano")
    assert orin == ["-DCMAKE_CUDA_ARCHITECTURES=87", "-DDVIT_PROFILE=orin-nano", "-DDVIT_DEVICE_CUDA=12.6",
                    "-DDVIT_DEVICE_JETPACK=6"]
    if major > 12:
        rc, log = configure(build_dir, *orin, "-DDVIT_ALLOW_NEWER_CUDA=ON", "-DDVIT_BUILD_TRT_PLUGIN=OFF")
        assert rc == 0 and "CMake Warning" in log and "building anyway" in log, log[-3000:]
    rc, log = configure(build_dir, *profile_cmake_args("orin-nano", "--jetpack", "7"), "-DDVIT_ALLOW_NEWER_CUDA=OFF",
                        "-DDVIT_BUILD_TRT_PLUGIN=OFF")
    if major > 13:
        assert rc != 0 and len(_lines_with(log, "JetPack 7's CUDA 13")) == 1, log[-3000:]
    else:
        assert rc == 0 and "newer than" not in log, log[-3000:]
        assert "CUDA architectures: 87 (target profile orin-nano, device CUDA 13)" in log, log[-3000:]


def test_desktop_rtx_profile_configures_the_plugin_libraries(tmp_path: Path) -> None:
    """`make plugins TARGET=desktop-rtx`'s configure step (profile options, the 11.1 headers the Makefile defaults
    to): no driver check, the profile's architectures, the plugin libraries. (The build itself is what the header
    set builds above compile, for one architecture.)"""
    options = profile_cmake_args("desktop-rtx")
    assert options == ["-DCMAKE_CUDA_ARCHITECTURES=80;86;89;120;121", "-DDVIT_PROFILE=desktop-rtx",
                       "-DDVIT_DEVICE_CUDA=", "-DDVIT_DEVICE_JETPACK="]
    if missing := {"80", "86", "89", "120", "121"} - _nvcc_archs():
        pytest.skip(f"nvcc {nvcc_major()}.x lacks sm_{', sm_'.join(sorted(missing))} of desktop-rtx")
    root = SHARED_HEADERS / "v11.1"
    trt = [f"-DTENSORRT_ROOT={root}"] if (root / "include" / "NvInferRuntime.h").is_file() else []
    rc, log = configure(tmp_path / "b", *options, *trt)
    assert rc == 0, log[-3000:]
    assert "CUDA architectures: 80;86;89;120;121 (target profile desktop-rtx)" in log, log[-3000:]
    assert "newer than" not in log and "CMake Warning" not in log
    if trt:
        assert "building dvit_trt_plugins;dvit_trt_plugins_static;dvit_trt_plugin_host_test" in log, log[-3000:]
    assert _cache(tmp_path / "b")["CMAKE_CUDA_ARCHITECTURES"] == "80;86;89;120;121"


def test_cmake_architectures_come_from_the_profile(tmp_path: Path) -> None:
    """One build directory, reconfigured for two profiles and then for none: the architectures CMake uses are each
    profile's, and without a profile the defaults come back (nothing of the previous profile stays in the cache)."""
    build_dir = tmp_path / "b"
    chosen = [("h100", "90")] + ([("thor", "110")] if "110" in _nvcc_archs() else [("agx-orin", "87")])
    for name, archs in chosen:
        rc, log = configure(build_dir, *profile_cmake_args(name), "-DDVIT_BUILD_TRT_PLUGIN=OFF",
                            "-DDVIT_ALLOW_NEWER_CUDA=ON")
        assert rc == 0, log[-3000:]
        assert f"CUDA architectures: {archs} (target profile {name}" in log, log[-3000:]
        cache = _cache(build_dir)
        assert (cache["CMAKE_CUDA_ARCHITECTURES"], cache["DVIT_PROFILE"]) == (archs, name)
    rc, log = configure(build_dir, *NO_PROFILE, "-DDVIT_BUILD_TRT_PLUGIN=OFF")
    assert rc == 0 and "(no target profile: default architectures)" in log, log[-3000:]
    assert "CMAKE_CUDA_ARCHITECTURES" not in _cache(build_dir)


def test_cmake_has_no_device_table(tmp_path: Path) -> None:
    """A device CMake has never heard of: its profile alone says JetPack 5 with CUDA 11.4, and CMake refuses any newer
    nvcc naming exactly that. The former options of CMake's own table are gone and say where the device comes from."""
    folder = tmp_path / "targets"
    folder.mkdir()
    (folder / "jetson-x.toml").write_text(
        'name = "jetson-x"\ndescription = "a Jetson no table lists"\nbackend = "tensorrt"\nmin_version = "10.3"\n'
        "compute_capabilities = [87]\ncuda_archs = [87]\nprecision = \"fp16\"\nworkspace_mib = 1024\n"
        'builder_optimization_level = 3\n[[stack]]\nversion = "10.3"\ncuda = "11.4"\njetpack = ["5.1"]\n')
    env = {**os.environ, targets.ENV_DIR: str(folder)}
    options = profile_cmake_args("jetson-x", env=env)
    assert options == ["-DCMAKE_CUDA_ARCHITECTURES=87", "-DDVIT_PROFILE=jetson-x", "-DDVIT_DEVICE_CUDA=11.4",
                       "-DDVIT_DEVICE_JETPACK=5"]
    rc, log = configure(tmp_path / "b", *options)
    assert rc != 0, log[-3000:]
    lines = _lines_with(log, "JetPack 5's CUDA 11.4, the CUDA driver of jetson-x")
    assert len(lines) == 1 and "build with CUDA 11.x" in lines[0], log[-3000:]

    text = (PLUGINS / "CMakeLists.txt").read_text()
    assert not re.search(r'STREQUAL\s+"(xavier|orin|thor|desktop|native)"', text)
    assert "_dvit_jetpack_cuda" not in text and "set(DVIT_TARGET" not in text and "set(DVIT_JETPACK" not in text
    for old in ("-DDVIT_TARGET=orin", "-DDVIT_JETPACK=6"):
        rc, log = configure(tmp_path / "old", old)
        assert rc != 0 and len(_lines_with(log, "is gone")) == 1 and "--cmake-args" in log, log[-3000:]
    rc, log = configure(tmp_path / "old", "-DDVIT_PROFILE=orin-nano")
    assert rc != 0 and "only names the profile" in log, log[-3000:]


def test_op_folders_are_found_by_cmake(kernel_build: dict) -> None:
    """CMake lists the op folders (plugins/*Plugin/ with a CMakeLists.txt) instead of naming them; the library-wide
    code lives in plugins/common/ and plugins/api/, not in an op's folder."""
    ops = sorted(p.parent.name for p in PLUGINS.glob("*Plugin/CMakeLists.txt"))
    assert "topkGatherPlugin" in ops
    top = (PLUGINS / "CMakeLists.txt").read_text()
    assert not any(op in top for op in ops), "plugins/CMakeLists.txt names an op folder"
    assert (PLUGINS / "api" / "dvitPluginApi.cpp").is_file() and (PLUGINS / "common" / "dvitLogging.cpp").is_file()
    assert not list(PLUGINS.glob("*Plugin/*Registration*"))
    for op in ops:
        assert (kernel_build["dir"] / op).is_dir(), f"{op} was not configured"
