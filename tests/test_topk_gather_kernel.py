"""GPU correctness of the DvitTopKGather kernel (libdvit_topk_gather_kernel.so, called through ctypes).

Reference: torch.sort(scores, descending=True, stable=True) (computed on the CPU, whose NaN/-0 ordering is the
contract), then a gather of the class token and the selected patch rows. The kernel output must be bit-identical
(it is a copy). torch.topk is checked to keep the same score values.

Sweep: B in {1, 8, 64} x N in {49, 196, 576, 1024} x C in {64, 192, 384, 768} x {fp32, fp16, fp32 scores with fp16
tokens} x {random, tied} scores; every k for N <= 196, a dense sweep with the edges for larger N. Plus special
values (NaN, +-inf, +-0), non-default streams, forced tilings, misaligned / odd-sized rows, and N = 1024..4096
through both the select-once launches (the automatic choice there) and the fused launch.

Set DVIT_TOPK_KERNEL_LIB to a built libdvit_topk_gather_kernel.so to skip the build. On a GPU the module writes
benchmarks/results/topk_gather_kernel_<gpu-name-slug>.json with the counts of cases passed.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
F32, F16 = 0, 1
DTYPE_CODE = {torch.float32: F32, torch.float16: F16}

BATCHES = (1, 8, 64)
SIZES = (49, 196, 576, 1024)
CHANNELS = (64, 192, 384, 768)
DTYPES = {  # name: (scores dtype, tokens dtype)
    "fp32": (torch.float32, torch.float32),
    "fp16": (torch.float16, torch.float16),
    "fp32-scores-fp16-tokens": (torch.float32, torch.float16),
}

_COUNTS: dict[str, int] = {"cases_passed": 0, "cases_failed": 0, "k_values_checked": 0}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _k_values(n: int) -> list[int]:
    """Every k for small N; for larger N the edges, every power of two +-1, DynamicViT keep ratios, and a stride."""
    if n <= 196:
        return list(range(1, n + 1))
    ks = set(range(1, 9)) | set(range(n - 8, n + 1)) | set(range(9, n - 8, max(1, n // 24)))
    p = 2
    while p <= n:
        ks |= {p - 1, p, p + 1}
        p *= 2
    ks |= {round(n * r) for r in (0.343, 0.49, 0.5, 0.7)}
    return sorted(k for k in ks if 1 <= k <= n)


# ---------------------------------------------------------------------------------------------------------------
# Library
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    path = os.environ.get("DVIT_TOPK_KERNEL_LIB")
    if path:
        lib_path = Path(path)
        assert lib_path.is_file(), f"DVIT_TOPK_KERNEL_LIB={path} does not exist"
    else:
        nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
        if shutil.which("cmake") is None or not Path(nvcc).is_file():
            pytest.skip("cmake/nvcc not found to build the kernel library (or set DVIT_TOPK_KERNEL_LIB)")
        major, minor = torch.cuda.get_device_capability()
        build_dir = tmp_path_factory.mktemp("dvit_kernel_gpu_build")
        for cmd in (
            ["cmake", "-S", str(REPO / "plugins"), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
             "-DDVIT_BUILD_TRT_PLUGIN=OFF", "-DDVIT_BUILD_TESTS=OFF"],
            ["cmake", "--build", str(build_dir), "-j", os.environ.get("DVIT_TEST_BUILD_JOBS", "4")],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        lib_path = build_dir / "libdvit_topk_gather_kernel.so"
    handle = ctypes.CDLL(str(lib_path))
    i64, i32, vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    handle.dvit_topk_gather_launch_tiles.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, i32, vp, i32]
    handle.dvit_topk_gather_launch_tiles.restype = i32
    handle.dvit_topk_gather_launch.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, i32, vp]
    handle.dvit_topk_gather_launch.restype = i32
    handle.dvit_topk_gather_last_error.restype = ctypes.c_char_p
    return handle


@pytest.fixture(scope="module", autouse=True)
def result_file():
    start = time.time()
    yield
    if not torch.cuda.is_available():
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name()
    record = {
        "test": "tests/test_topk_gather_kernel.py",
        "gpu": name,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **_COUNTS,
        "seconds": round(time.time() - start, 1),
        "command": " ".join([Path(sys.executable).name, "-m", "pytest", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (RESULTS_DIR / f"topk_gather_kernel_{_slug(name)}.json").write_text(json.dumps(record, indent=2) + "\n")


def _launch(lib: ctypes.CDLL, scores, tokens, k: int, tiles: int = 0, stream=None, out=None, idx=None):
    b, n = scores.shape
    c = tokens.shape[2]
    if out is None:
        out = torch.full((b, k + 1, c), float("nan"), dtype=tokens.dtype, device=tokens.device)
    if idx is None:
        idx = torch.full((b, k), -1, dtype=torch.int32, device=tokens.device)
    s = stream if stream is not None else torch.cuda.current_stream()
    rc = lib.dvit_topk_gather_launch_tiles(
        scores.data_ptr(), tokens.data_ptr(), out.data_ptr(), idx.data_ptr(), b, n, c, k,
        DTYPE_CODE[scores.dtype], DTYPE_CODE[tokens.dtype], s.cuda_stream, tiles)
    assert rc == 0, lib.dvit_topk_gather_last_error().decode()
    return out, idx


def _bits(t):
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def _check_all_k(lib, scores, tokens, ks, label: str, tiles: int = 0, stream=None, check_topk: bool = True) -> None:
    """Kernel vs reference for every k in ks (scores [B, N], tokens [B, N+1, C] on the GPU)."""
    b = scores.shape[0]
    c = tokens.shape[2]
    order = torch.sort(scores.float().cpu(), dim=1, descending=True, stable=True).indices.to(scores.device)
    for k in ks:
        out, idx = _launch(lib, scores, tokens, k, tiles=tiles, stream=stream)
        torch.cuda.synchronize()
        ref_idx = order[:, :k]
        rows = torch.cat([torch.zeros((b, 1), dtype=torch.long, device=scores.device), ref_idx + 1], dim=1)
        ref_tok = torch.gather(tokens, 1, rows.unsqueeze(-1).expand(b, k + 1, c))
        ok_idx = torch.equal(idx.long(), ref_idx)
        ok_tok = torch.equal(_bits(out), _bits(ref_tok))
        if not (ok_idx and ok_tok):
            _COUNTS["cases_failed"] += 1
            bad = (idx.long() != ref_idx).nonzero()[:5].tolist()
            pytest.fail(f"{label} k={k}: indices {'ok' if ok_idx else 'differ at ' + str(bad)}, "
                        f"tokens {'ok' if ok_tok else 'differ'}")
        if check_topk:
            # torch.topk keeps the same score values (its order among ties is unspecified, the values are not).
            topv = torch.topk(scores.float(), k, dim=1, largest=True, sorted=True).values
            torch.testing.assert_close(topv, torch.gather(scores.float(), 1, ref_idx), rtol=0, atol=0,
                                       equal_nan=True)
        _COUNTS["cases_passed"] += 1
    _COUNTS["k_values_checked"] += len(ks)


def _scores(b: int, n: int, pattern: str, dtype, gen: torch.Generator):
    if pattern == "random":
        s = torch.log_softmax(torch.randn(b, n, generator=gen) * 3.0, dim=1)
    elif pattern == "tied":
        s = -torch.randint(0, 4, (b, n), generator=gen).float()  # about N/4 equal scores per value
    else:  # special values: NaN (both signs), +-inf, +-0 mixed into random scores
        s = torch.randn(b, n, generator=gen)
        specials = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
        mask = torch.rand(b, n, generator=gen) < 0.3
        pick = specials[torch.randint(0, len(specials), (b, n), generator=gen)]
        s = torch.where(mask, pick, s)
    return s.to(dtype).cuda()


@pytest.mark.parametrize("pattern", ["random", "tied"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("n", SIZES)
def test_matches_stable_sort_reference(lib, n: int, dtype_name: str, pattern: str) -> None:
    sdt, tdt = DTYPES[dtype_name]
    seed = n * 1000 + len(dtype_name) * 10 + len(pattern)
    gen = torch.Generator().manual_seed(seed)
    gen_cuda = torch.Generator(device="cuda").manual_seed(seed)
    ks_all = _k_values(n)
    for b in BATCHES:
        for c in CHANNELS:
            # Every (B, C) sees the edges; the full k list runs on a rotating subset of (B, C) to bound the time.
            full = (BATCHES.index(b) + CHANNELS.index(c)) % 3 == 0 or n <= 49
            ks = ks_all if full else sorted({1, 2, n // 2, round(0.7 * n), n - 1, n} & set(range(1, n + 1)))
            scores = _scores(b, n, pattern, sdt, gen)
            tokens = torch.randn(b, n + 1, c, generator=gen_cuda, device="cuda").to(tdt)
            _check_all_k(lib, scores, tokens, ks, f"B={b} N={n} C={c} {dtype_name} {pattern}")


@pytest.mark.parametrize("dtype_name", ["fp32", "fp16"])
def test_special_values_nan_inf_signed_zero(lib, dtype_name: str) -> None:
    sdt, tdt = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(7)
    for n in SIZES:
        scores = _scores(8, n, "special", sdt, gen)
        tokens = torch.randn(8, n + 1, 64, generator=gen).to(tdt).cuda()
        # torch.topk's NaN handling is not part of the contract: compare with the stable-sort reference only.
        _check_all_k(lib, scores, tokens, _k_values(n), f"special N={n} {dtype_name}", check_topk=False)


def test_streams_and_forced_tilings(lib) -> None:
    gen = torch.Generator().manual_seed(3)
    scores = _scores(8, 196, "tied", torch.float32, gen)
    tokens = torch.randn(8, 197, 384, generator=gen).cuda()
    side = torch.cuda.Stream()
    torch.cuda.synchronize()  # inputs were made on the default stream
    for tiles in (1, 2, 3, 5, 17, 138, 10_000):  # 10000 is clamped to k + 1
        with torch.cuda.stream(side):
            _check_all_k(lib, scores, tokens, [1, 137, 196], f"tiles={tiles}", tiles=tiles, stream=side)


@pytest.mark.parametrize("dtype_name", ["fp32", "fp16"])
@pytest.mark.parametrize("n", [1024, 2048, 4096])
def test_large_n_select_once_and_fused_agree(lib, n: int, dtype_name: str) -> None:
    """From N = 1024 on, the automatic launch sorts each image once (select launch, then gather launch reading
    kept_indices); tiles=1 is the single fused block, -7 the fused launch with 7 tiles (each sorting again, the rule
    before) and 7 the select-once path forced to 7 tiles. All must give the reference bits."""
    sdt, tdt = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(n + len(dtype_name))
    ks = sorted({1, 2, n // 2, round(0.7 * n), n - 1, n})
    for b, c in ((1, 768), (8, 64)):
        scores = _scores(b, n, "tied", sdt, gen)
        tokens = torch.randn(b, n + 1, c, generator=gen).to(tdt).cuda()
        for tiles in (0, 1, 7, -7):
            _check_all_k(lib, scores, tokens, ks, f"B={b} N={n} C={c} {dtype_name} tiles={tiles}", tiles=tiles)


@pytest.mark.parametrize(("c", "offset"), [(3, 0), (5, 1), (384, 1), (384, 2), (12, 3)])
def test_narrow_copy_units(lib, c: int, offset: int) -> None:
    """Rows whose size or start is not 16-byte aligned take the 8/4/2-byte copy paths."""
    gen = torch.Generator().manual_seed(11)
    b, n = 4, 196
    scores = _scores(b, n, "random", torch.float16, gen)
    flat = torch.randn(b * (n + 1) * c + offset, generator=gen).half().cuda()
    tokens = flat[offset:].view(b, n + 1, c)
    _check_all_k(lib, scores, tokens, [1, 64, 137, 196], f"C={c} offset={offset}")


def test_dynamicvit_deit_small_stages(lib) -> None:
    """The three pruning stages of DynamicViT DeiT-S at keep ratio 0.7: N = 196 -> 137 -> 96 -> 67."""
    gen = torch.Generator().manual_seed(5)
    n = 196
    for k in (137, 96, 67):
        scores = _scores(64, n, "random", torch.float16, gen)
        tokens = torch.randn(64, n + 1, 384, generator=gen).half().cuda()
        _check_all_k(lib, scores, tokens, [k], f"DeiT-S N={n} k={k}")
        n = k


def test_launch_error_is_reported_not_raised(lib) -> None:
    scores = torch.zeros(2, 49, device="cuda")
    tokens = torch.zeros(2, 50, 64, device="cuda")
    out = torch.zeros(2, 51, 64, device="cuda")
    idx = torch.zeros(2, 50, dtype=torch.int32, device="cuda")
    rc = lib.dvit_topk_gather_launch(scores.data_ptr(), tokens.data_ptr(), out.data_ptr(), idx.data_ptr(),
                                     2, 49, 64, 50, F32, F32, torch.cuda.current_stream().cuda_stream)
    assert rc == 3 and b"k=50" in lib.dvit_topk_gather_last_error()
