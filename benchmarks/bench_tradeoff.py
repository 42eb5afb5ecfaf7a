"""The keep-ratio trade-off: latency of DynamicViT at keep ratios 0.5..0.9 against the dense model, per backend.

Users pick a keep ratio for a latency budget. This exports a DeiT-S-sized DynamicViT (224x224, 196 tokens; random
weights: speed does not depend on them, the accuracy side comes from the embedded default's validation) at each
keep ratio with `dvit export`'s API, the dense model beside the first, and times them all with `dvit latency`'s
harness in ONE process, interleaved (every configuration in each round), so that machine drift hits all alike:
stage chain and fused graph, batch 1 and 32. It writes JSON ("dvit-edge/bench-tradeoff/v1") and an SVG of latency
against keep ratio with the FLOPs-ratio line, per batch size, under benchmarks/results/.

    .venv/bin/python benchmarks/bench_tradeoff.py            # the full run (make bench)
    .venv/bin/python benchmarks/bench_tradeoff.py --quick    # a short smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FORMAT = "dvit-edge/bench-tradeoff/v1"


def machine_slug() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1]
                break
    except OSError:
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:40]
    return f"{slug}-{os.cpu_count()}cores"


def repo_relative(obj: Any) -> Any:
    """`obj` with every absolute path below the checkout made relative to it: results name the run's files, not
    the machine they were measured on."""
    if isinstance(obj, dict):
        return {k: repo_relative(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [repo_relative(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(f"{REPO}{os.sep}"):
        return os.path.relpath(obj, REPO)
    return obj


def export_sets(model: str, ratios: list[float], batch_sizes: tuple[int, ...], work: Path) -> list[Path]:
    """One graph set per keep ratio (the dense model's graph in the first), reused when already exported."""
    import torch

    from pipeline.checkpoint import save_checkpoint
    from pipeline.config import model_config
    from pipeline.export import export
    from pipeline.graphset import GraphSet
    from pipeline.model import DynamicViT

    work.mkdir(parents=True, exist_ok=True)
    ckpt, dense_ckpt = work / "student.pt", work / "dense.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        student = DynamicViT(model_config(model)).eval()
        dense = DynamicViT(model_config(model, dense=True)).eval()
        dense.load_state_dict({k: v for k, v in student.state_dict().items() if not k.startswith("score_predictor.")})
        save_checkpoint(ckpt, student)
        save_checkpoint(dense_ckpt, dense)
    out = []
    for i, rho in enumerate(ratios):
        d = work / f"rho{rho:.2f}"
        try:
            gs = GraphSet.load(d)
            fresh = gs.config.keep_ratio == rho and set(batch_sizes) <= set(gs.batch_sizes)
            fresh = fresh and (i > 0 or gs.batch(batch_sizes[0]).teacher is not None)
        except Exception:  # noqa: BLE001 - absent or stale: export again
            fresh = False
        if not fresh:
            export(ckpt, d, teacher=dense_ckpt if i == 0 else None, keep_ratio=rho, batch_sizes=batch_sizes,
                   verify_images=1, progress=False, overwrite=True)
        out.append(d)
    return out


def summarize(report: dict[str, Any], ratios: list[float], sets: list[Path]) -> list[dict[str, Any]]:
    """Per batch size and keep ratio: dense, fused and chain p50, their ratios, and the FLOPs ratio."""
    runs = [r for r in report["runs"] if "end_to_end" in r]
    flops = {g["graphs"]: g["flops"] for g in report["graph_sets"]}
    dense_flops = flops[str(sets[0])]["dense"]
    rows = []
    for b in sorted({r["batch"] for r in runs}):
        dense = next(r for r in runs if r["batch"] == b and r["model"] == "dense")
        for rho, d in zip(ratios, sets):
            mine = [r for r in runs if r["batch"] == b and r["graphs"] == str(d) and r["model"] == "pruned"]
            fused = next(r for r in mine if r["mode"] == "fused")
            chain = next(r for r in mine if r["mode"] == "chain")
            p = {k: r["end_to_end"]["p50_ms"] for k, r in (("dense", dense), ("fused", fused), ("chain", chain))}
            rows.append({
                "keep_ratio": rho, "batch": b, "dense_ms": p["dense"], "fused_ms": p["fused"], "chain_ms": p["chain"],
                "fused_over_dense": p["fused"] / p["dense"], "chain_over_dense": p["chain"] / p["dense"],
                "chain_over_fused": p["chain"] / p["fused"], "flops_ratio": flops[str(d)]["pruned"] / dense_flops,
                "noisy": any(r["end_to_end"]["noisy"] for r in (dense, fused, chain)),
            })
    return rows


def plot(rows: list[dict[str, Any]], batch: int) -> str:
    """Latency relative to dense against keep ratio, fused and chain, with the FLOPs ratio (the limit)."""
    from pipeline.report.svg import Series, line_chart

    mine = [r for r in rows if r["batch"] == batch]
    xs = [r["keep_ratio"] for r in mine]
    series = [
        Series("fused / dense", [(x, r["fused_over_dense"]) for x, r in zip(xs, mine)], "#0072B2"),
        Series("chain / dense", [(x, r["chain_over_dense"]) for x, r in zip(xs, mine)], "#E69F00", "square"),
        Series("FLOPs ratio (the limit)", [(x, r["flops_ratio"]) for x, r in zip(xs, mine)], "#555555", dashed=True),
    ]
    return line_chart(series, "keep ratio", "pruned / dense latency (p50)", f"Latency relative to dense, batch {batch}",
                      "DynamicViT latency relative to the dense model against keep ratio, with the FLOPs ratio",
                      x_ticks=xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="deit_small_patch16_224", help="architecture preset (default: DeiT-S)")
    p.add_argument("--ratios", default="0.5,0.6,0.7,0.8,0.9", help="keep ratios (default: %(default)s)")
    p.add_argument("--batch-sizes", default="1,32", help="static batch sizes (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="warm-up per configuration (default: %(default)s)")
    p.add_argument("--duration-s", type=float, default=4.0, help="measured time per configuration (default: %(default)s)")
    p.add_argument("--min-iters", type=int, default=5, help="at least this many timed runs per configuration")
    p.add_argument("--quick", action="store_true", help="a short smoke run: ratio 0.7, batch 1, 0.5 s each")
    p.add_argument("--work", default=str(REPO / "artifacts" / "bench-tradeoff"), help="exported graphs (reused)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where the JSON and SVGs go")
    args = p.parse_args(argv)

    from pipeline.io import atomic_write_json, atomic_write_text
    from pipeline.latency import measure_latency
    from pipeline.latency.timing import TimingSettings

    ratios = [0.7] if args.quick else [float(r) for r in args.ratios.split(",")]
    sizes = (1,) if args.quick else tuple(int(b) for b in args.batch_sizes.split(","))
    settings = (TimingSettings(warmup_s=0.2, duration_s=0.5, min_iters=3) if args.quick
                else TimingSettings(warmup_s=args.warmup_s, duration_s=args.duration_s, min_iters=args.min_iters))
    sets = export_sets(args.model, ratios, sizes, Path(args.work) / args.model)
    report = measure_latency([str(d) for d in sets], list(sizes), threads=args.threads, settings=settings,
                             progress=sys.stderr.isatty())
    rows = summarize(report, ratios, sets)
    out = Path(args.out)
    name = f"tradeoff_{args.model}_{machine_slug()}" + ("_quick" if args.quick else "")
    command = " ".join(["benchmarks/bench_tradeoff.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_json(out / f"{name}.json", repo_relative({"format": FORMAT, "model": args.model, "command": command,
                                                           "rows": rows, "latency": report}))
    for b in sizes:
        atomic_write_text(out / f"{name}_b{b}.svg", plot(rows, b))
    print(f"{'rho':>5} {'B':>3} {'dense ms':>9} {'fused ms':>9} {'chain ms':>9} {'fused/dense':>11} {'FLOPs ratio':>11} "
          f"{'chain/fused':>11}")
    for r in rows:
        print(f"{r['keep_ratio']:5.2f} {r['batch']:3d} {r['dense_ms']:9.2f} {r['fused_ms']:9.2f} {r['chain_ms']:9.2f} "
              f"{r['fused_over_dense']:11.3f} {r['flops_ratio']:11.3f} {r['chain_over_fused']:11.3f}"
              + ("  (noisy)" if r["noisy"] else ""))
    print(f"wrote {out / name}.json and its SVGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
