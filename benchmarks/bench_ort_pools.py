"""ONNX Runtime's thread pools side by side: global, no-spin and per-session, for pruned chain, pruned fused and
dense, so that the default pool of the ONNX Runtime backend (pipeline/backend/onnxruntime/pools.py) is chosen by
measurement.

Each pool runs alone, in a process of its own (`dvit latency --pool P`: the global pool is final for a process),
on the same DeiT-S-sized graph set (224x224, rho 0.7, random weights, exported once by bench_tradeoff's helper).
The pools take turns in rounds (g n p g n p ...) so that drift of the machine hits all alike; each figure is the
median over the rounds of `dvit latency`'s p50. Writes JSON ("dvit-edge/bench-ort-pools/v1") under
benchmarks/results/ and prints a table with the default marked, and whether it was the fastest.

    .venv/bin/python benchmarks/bench_ort_pools.py            # make bench
    .venv/bin/python benchmarks/bench_ort_pools.py --quick    # a short smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FORMAT = "dvit-edge/bench-ort-pools/v1"
CONTENDERS = (("pruned", "chain"), ("pruned", "fused"), ("dense", "fused"))


def time_pool(graphs: Path, pool: str, batch: int, threads: int, warmup_s: float, duration_s: float) -> dict[str, float]:
    """p50 (ms) of each contender, from one `dvit latency` process running `pool` alone."""
    env = {k: v for k, v in os.environ.items() if k != "DVIT_ORT_POOL"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "latency.json"
        cmd = [sys.executable, "-m", "pipeline.cli", "latency", "--graphs", str(graphs), "--batch-sizes", str(batch),
               "--threads", str(threads), "--pool", pool, "--warmup-s", str(warmup_s), "--duration-s",
               str(duration_s), "--json", str(out), "--no-progress"]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    return {f"{r['model']} {r['mode']}": r["end_to_end"]["p50_ms"] for r in report["runs"] if "end_to_end" in r}


def summarize(samples: dict[str, dict[str, list[float]]], default: str) -> dict[str, Any]:
    """Medians per pool and contender, the fastest pool per contender and over the three together (what one
    `dvit latency` run times: a chain, a fused graph and the dense graph), and whether that is `default`."""
    names = [f"{m} {mode}" for m, mode in CONTENDERS]
    p50 = {pool: {c: statistics.median(v) for c, v in got.items()} for pool, got in samples.items()}
    total = {pool: sum(p50[pool][c] for c in names) for pool in p50}
    overall = min(total, key=lambda pool: total[pool])
    return {
        "p50_ms": p50, "sum_ms": total, "default_pool": default,
        "fastest": {c: min(p50, key=lambda pool: p50[pool][c]) for c in names},
        "fastest_overall": overall, "default_is_fastest": overall == default,
        "chain_over_fused": {pool: p50[pool]["pruned chain"] / p50[pool]["pruned fused"] for pool in p50},
    }


def main(argv: list[str] | None = None) -> int:
    from bench_tradeoff import export_sets, machine_slug, repo_relative

    from pipeline.backend.onnxruntime import pools
    from pipeline.io import atomic_write_json

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="deit_small_patch16_224", help="architecture preset (default: DeiT-S)")
    p.add_argument("--keep-ratio", type=float, default=0.7, help="keep ratio (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="static batch size (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every pool (default: %(default)s)")
    p.add_argument("--duration-s", type=float, default=3.0, help="measured time per contender and run")
    p.add_argument("--quick", action="store_true", help="a short smoke run: one round, 0.3 s each")
    p.add_argument("--work", default=str(REPO / "artifacts" / "bench-tradeoff"), help="exported graphs (reused)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where the JSON goes")
    args = p.parse_args(argv)

    rounds, duration, warmup = (1, 0.3, 0.1) if args.quick else (args.rounds, args.duration_s, 1.0)
    graphs = export_sets(args.model, [args.keep_ratio], (args.batch,), Path(args.work) / args.model)[0]
    samples: dict[str, dict[str, list[float]]] = {pool: {} for pool in pools.POOLS}
    for r in range(rounds):
        for pool in pools.POOLS:
            print(f"round {r + 1}/{rounds}: --pool {pool}", file=sys.stderr)
            for contender, ms in time_pool(graphs, pool, args.batch, args.threads, warmup, duration).items():
                samples[pool].setdefault(contender, []).append(ms)
    result: dict[str, Any] = {
        "format": FORMAT, "model": args.model, "keep_ratio": args.keep_ratio, "batch": args.batch,
        "threads": args.threads, "rounds": rounds,
        "command": " ".join(["benchmarks/bench_ort_pools.py", *(sys.argv[1:] if argv is None else argv)]),
        "samples_ms": samples, **summarize(samples, pools.DEFAULT_POOL),
    }
    name = f"ort_pools_{args.model}_{machine_slug()}" + ("_quick" if args.quick else "")
    atomic_write_json(Path(args.out) / f"{name}.json", repo_relative(result))
    print(f"{args.model}, rho {args.keep_ratio}, batch {args.batch}, {args.threads} threads; p50 ms, median of "
          f"{rounds} round(s), each pool alone in its process")
    names = [f"{m} {mode}" for m, mode in CONTENDERS]
    p50 = result["p50_ms"]
    print(f"{'pool':<18}" + "".join(f"{c:>15}" for c in names) + f"{'sum':>10}{'chain/fused':>13}")
    for pool in pools.POOLS:
        mark = " (default)" if pool == pools.DEFAULT_POOL else ""
        print(f"{pool + mark:<18}" + "".join(f"{p50[pool][c]:15.2f}" for c in names)
              + f"{result['sum_ms'][pool]:10.2f}{result['chain_over_fused'][pool]:13.3f}")
    print(f"fastest per contender: {', '.join(f'{c}: {f}' for c, f in result['fastest'].items())}; fastest over "
          f"the three: {result['fastest_overall']}; the default ({pools.DEFAULT_POOL}) is "
          f"{'the fastest' if result['default_is_fastest'] else 'NOT the fastest'}")
    print(f"wrote {Path(args.out) / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
