"""Benchmark: DvitTopKGather kernel vs torch.topk + gather, at DeiT-S / keep ratio 0.7 (N=196, k=137, C=384).

    python benchmarks/bench_topk_gather.py [--lib build/plugins/libdvit_topk_gather_kernel.so] [--sweep-tiles]
    python benchmarks/bench_topk_gather.py --n 1024 --c 768 --sweep-tiles   # large N: select-once vs fused

Timing: CUDA events around CUDA-graph replays of --inner launches (GPU time per call, without Python/launch
overhead), after --warmup replays; the median over --repeats replays is reported. "eager" columns time the same
calls issued one by one from Python (what a Python caller sees). The torch baseline is what an exported graph does:
TopK -> Gather(rows) -> Concat(class token). Writes benchmarks/results/topk_gather_bench_<gpu-slug>.json (other
shapes: topk_gather_bench_<gpu-slug>_n<N>_k<k>_c<C>.json).
Without a CUDA GPU it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LIB = REPO / "build" / "plugins" / "libdvit_topk_gather_kernel.so"
RESULTS_DIR = REPO / "benchmarks" / "results"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _load(lib_path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(lib_path))
    i64, i32, vp = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    lib.dvit_topk_gather_launch_tiles.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, i32, vp, i32]
    lib.dvit_topk_gather_launch_tiles.restype = i32
    lib.dvit_topk_gather_last_error.restype = ctypes.c_char_p
    return lib


def _make_calls(lib: ctypes.CDLL, torch, scores, tokens, out, idx, k: int):
    """The two timed calls for one configuration: our kernel (optionally with forced tiles), and the torch path
    an exported graph takes (TopK -> Gather rows -> Concat with the class token)."""
    b, n = scores.shape
    c = tokens.shape[2]
    code = 0 if scores.dtype == torch.float32 else 1

    def ours(tiles: int = 0) -> None:
        rc = lib.dvit_topk_gather_launch_tiles(
            scores.data_ptr(), tokens.data_ptr(), out.data_ptr(), idx.data_ptr(), b, n, c, k, code, code,
            torch.cuda.current_stream().cuda_stream, tiles)
        if rc != 0:
            raise RuntimeError(lib.dvit_topk_gather_last_error().decode())

    def reference():
        top = torch.topk(scores, k, dim=1, largest=True, sorted=True).indices
        patches = torch.gather(tokens[:, 1:], 1, top.unsqueeze(-1).expand(b, k, c))
        return torch.cat([tokens[:, :1], patches], dim=1)

    return ours, reference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", type=Path, default=DEFAULT_LIB, help="libdvit_topk_gather_kernel.so")
    parser.add_argument("--n", type=int, default=196)
    parser.add_argument("--k", type=int, default=None, help="tokens kept (default: round(0.7 N), 137 at N=196)")
    parser.add_argument("--c", type=int, default=384)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--warmup", type=int, default=20, help="graph replays before timing")
    parser.add_argument("--repeats", type=int, default=200, help="timed graph replays (median reported)")
    parser.add_argument("--inner", type=int, default=20, help="calls captured per graph")
    parser.add_argument("--sweep-tiles", action="store_true", help="also time forced row tilings (tuning)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        print("bench_topk_gather: needs PyTorch with a CUDA GPU (torch is not installed); nothing measured.")
        return 0
    if not torch.cuda.is_available():
        print("bench_topk_gather: needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 0
    if not args.lib.is_file():
        print(f"bench_topk_gather: {args.lib} not found; build it first with `make plugins`.", file=sys.stderr)
        return 2
    lib = _load(args.lib)
    n, c = args.n, args.c
    k = args.k if args.k is not None else round(0.7 * n)
    dev = torch.device("cuda")

    def time_graph(fn) -> float:
        """Median microseconds per call of fn, from CUDA-graph replays of args.inner calls."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()  # warm up allocator / caches before capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(args.inner):
                fn()
        for _ in range(args.warmup):
            graph.replay()
        torch.cuda.synchronize()
        samples = []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(args.repeats):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1000.0 / args.inner)
        return statistics.median(samples)

    def time_eager(fn) -> float:
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        samples = []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(max(10, args.repeats // 4)):
            start.record()
            for _ in range(args.inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1000.0 / args.inner)
        return statistics.median(samples)

    rows = []
    header = (f"{'B':>4} {'dtype':>5} {'ours us':>9} {'torch us':>9} {'speedup':>8} "
              f"{'ours eager':>11} {'torch eager':>12}")
    print(f"DvitTopKGather vs torch.topk+gather+cat, N={n} k={k} C={c}, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}")
    print(header)
    print("-" * len(header))
    for dtype in (torch.float32, torch.float16):
        for b in args.batches:
            gen = torch.Generator(device=dev).manual_seed(b)
            scores = torch.log_softmax(torch.randn(b, n, device=dev, generator=gen), dim=1).to(dtype)
            tokens = torch.randn(b, n + 1, c, device=dev, generator=gen).to(dtype)
            out = torch.empty(b, k + 1, c, device=dev, dtype=dtype)
            idx = torch.empty(b, k, device=dev, dtype=torch.int32)
            ours, reference = _make_calls(lib, torch, scores, tokens, out, idx, k)

            # Sanity: same kept values as topk (ties may order differently, so compare the selected scores).
            ours()
            torch.cuda.synchronize()
            kept = torch.gather(scores.float(), 1, idx.long())
            assert torch.equal(kept, torch.topk(scores.float(), k, dim=1).values), "kernel disagrees with topk"

            row = {
                "B": b, "dtype": "fp32" if dtype == torch.float32 else "fp16", "N": n, "k": k, "C": c,
                "ours_us": round(time_graph(ours), 3),
                "torch_topk_gather_us": round(time_graph(reference), 3),
                "ours_eager_us": round(time_eager(ours), 3),
                "torch_topk_gather_eager_us": round(time_eager(reference), 3),
            }
            row["speedup"] = round(row["torch_topk_gather_us"] / row["ours_us"], 2)
            if args.sweep_tiles:
                tile_counts = [t for t in (1, 2, 4, 8, 16, 32, 64, 138, 256, 528) if t <= k + 1]
                row["tiles_us"] = {t: round(time_graph(lambda t=t, f=ours: f(t)), 3) for t in tile_counts}
                if n >= 1024:
                    # Negative tiles force the fused launch (every tile sorts again), the rule before the select-once
                    # path: the same tile counts side by side show what sorting once per image saves.
                    row["fused_tiles_us"] = {t: round(time_graph(lambda t=t, f=ours: f(-t)), 3)
                                             for t in tile_counts}
            rows.append(row)
            print(f"{b:>4} {row['dtype']:>5} {row['ours_us']:>9.2f} {row['torch_topk_gather_us']:>9.2f} "
                  f"{row['speedup']:>7.2f}x {row['ours_eager_us']:>11.2f} {row['torch_topk_gather_eager_us']:>12.2f}"
                  + (f"  tiles: {row['tiles_us']}" if args.sweep_tiles else "")
                  + (f"  fused tiles: {row['fused_tiles_us']}" if "fused_tiles_us" in row else ""))

    name = torch.cuda.get_device_name()
    record = {
        "benchmark": "DvitTopKGather kernel vs torch.topk + gather + cat",
        "gpu": name,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timing": f"CUDA events over CUDA-graph replays of {args.inner} calls; median of {args.repeats} replays "
                  f"after {args.warmup} warm-up replays (eager: calls issued from Python)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
    }
    suffix = "" if (n, k, c) == (196, 137, 384) else f"_n{n}_k{k}_c{c}"  # other shapes never overwrite DeiT-S's
    out_path = args.out or RESULTS_DIR / f"topk_gather_bench_{_slug(name)}{suffix}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
