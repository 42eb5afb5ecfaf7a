"""The model zoo, measured: every official DynamicViT configuration at keep ratio 0.7, one table for the README.

For each official name, full 224x224 configurations, random weights seeded once per model, the dense teacher
sharing the student's backbone weights:
  - token pruning (deit-256, deit-s, deit-b, lvvit-s, lvvit-m; pipeline.config.model_config): tokens per stage
    (the static shapes of the exported graphs);
  - spatial sparsification (convnext-t/s/b: DynamicCNN, swin-t/s/b: DynamicSwin; pipeline.spatial.config.
    spatial_config): no token is removed, the third stage's map (14x14 = 196 positions) keeps its shape; what the
    table gives instead is the positions on the slow path (the block's MLP) at each pruning location, rho,
    rho - 0.2, rho - 0.4 of the map (137 / 97 / 58 of 196), the others taking the fast path (LayerNorm + Linear);
  - the parameters of the pruned model and of its dense teacher;
  - dense and pruned GMACs, COUNTED, not quoted: torch.utils.flop_counter.FlopCounterMode around one image's
    inference pass (model.forward_inference at batch 1, pipeline.measure.count_flops), which counts 2 FLOPs per
    multiply-add of matrix products and convolutions only (softmax, LayerNorm, GELU, BatchNorm, elementwise ops
    and the top-k/gather/scatter are free), so GMACs = counted / 2: the unit the DynamicViT paper and README call
    "GFLOPs". For the spatial models that is the real pass as exported: the depthwise convolution (ConvNeXt) and
    the windowed attention (Swin) on the whole map, the slow path's MLP on the kept positions only, the fast
    path's Linear on the others. The prediction modules' share of the pruned figure is counted on its own; each
    figure is set beside the official README's (where it quotes one), with the difference;
  - the ONNX Runtime CPU time of the fused pruned graph against the dense teacher graph, both exported by `dvit
    export`'s API (pipeline.export.export, reused from a previous run when still current), at batch 1 and 32:
    ONNX Runtime runner sessions, 2 intra-op threads, the process pinned to that many CPUs; per model and batch
    size one warm-up, then the two graphs take turns one run each (pruned, dense, pruned, ...; the latency
    harness pipeline.latency.timing with one run per round), so that load on the machine hits both alike; the
    p50 (median) of the runs and the pruned/dense ratio.
Writes benchmarks/results/model_zoo.json ("dvit-edge/bench-model-zoo/v1") and model_zoo.md (the table, what is
counted, the comparison with the official figures, the command and the machine); progress goes to stderr.

    .venv/bin/python benchmarks/bench_model_zoo.py            # the full run (make bench; 10 min on 2 cores for
                                                              # the five token-pruning names, more with the six
                                                              # spatial ones)
    .venv/bin/python benchmarks/bench_model_zoo.py --models convnext-t,swin-t     # a subset
    .venv/bin/python benchmarks/bench_model_zoo.py --quick    # a smoke run: reduced depths, small images, batch 1
                                                              # (its files go to artifacts/bench-model-zoo/)
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FORMAT = "dvit-edge/bench-model-zoo/v1"
TOKEN_MODELS = ("deit-256", "deit-s", "deit-b", "lvvit-s", "lvvit-m")  # token pruning (pipeline.config)
SPATIAL_MODELS = ("convnext-t", "convnext-s", "convnext-b", "swin-t", "swin-s", "swin-b")  # OFFICIAL_SPATIAL
MODELS = TOKEN_MODELS + SPATIAL_MODELS
KEEP_RATIO = 0.7
SEED = 0
# --quick: the same architectures reduced as tests/test_model_zoo_deit.py reduces them (the real widths, heads and
# MLP ratios; 4 blocks on 64x64 images, pruning before blocks 1, 2, 3): the same code path in seconds.
QUICK = {"depth": 4, "img_size": 64}
# --quick, spatial: the real widths (and Swin's heads), 1, 1, 4, 1 blocks, pruning before blocks 1, 2, 3 of the
# third stage, on 128x128 images: an 8x8 third-stage map (64 positions, 44 / 31 / 19 on the slow path). Swin's
# window shrinks to 4 (128 / 32): as 7 at 224, it tiles the third stage's map with 2x2 windows, shifted in every
# other block, and covers the fourth stage's map with one.
QUICK_SPATIAL: dict[str, Any] = {"depths": [1, 1, 4, 1], "img_size": 128, "pruning_loc": [1, 2, 3]}
QUICK_SWIN_WINDOW = 4
# GMACs the official DynamicViT README quotes (as "GFLOPs") at keep ratio 0.7 and for the dense backbones: its
# model zoo tables (raoyongming/DynamicViT README.md at 1322e62, the DynamicViT table and the DynamicCNN /
# DynamicSwin one, which quotes no dense figure).
QUOTED_SOURCE = "the official DynamicViT README (raoyongming/DynamicViT at 1322e62, its two model zoo tables)"
QUOTED_GMACS: dict[str, dict[str, float]] = {
    "deit-s": {"pruned": 2.9, "dense": 4.6},
    "deit-b": {"pruned": 11.4},
    "lvvit-s": {"pruned": 4.6, "dense": 6.6},
    "lvvit-m": {"pruned": 8.5, "dense": 12.7},
    "convnext-t": {"pruned": 3.6},  # DynamicCNN-T/0.7
    "convnext-s": {"pruned": 5.8},  # DynamicCNN-S/0.7
    "convnext-b": {"pruned": 10.2},  # DynamicCNN-B/0.7
    "swin-t": {"pruned": 4.0},  # DynamicSwin-T/0.7
    "swin-s": {"pruned": 6.9},  # DynamicSwin-S/0.7
    "swin-b": {"pruned": 12.1},  # DynamicSwin-B/0.7
}
GMACS_NOTE = ("GMACs: multiply-adds (10^9) of one image's inference pass, counted with "
              "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add, so GMACs = counted FLOPs / 2, "
              "the DynamicViT paper's \"GFLOPs\"). It counts matrix products and convolutions only: softmax, "
              "LayerNorm, GELU, BatchNorm, elementwise ops and the top-k/gather/scatter are not counted. Pruned "
              "GMACs include the prediction modules.")
SPATIAL_NOTE = ("Spatial sparsification (DynamicCNN on ConvNeXt, DynamicSwin on Swin) removes no token: the third "
                "stage's map keeps its shape through every stage graph. At each pruning location (inside the third "
                "stage) a prediction module ranks all its positions afresh; the top rho, rho - 0.2, rho - 0.4 of "
                "them take the block's MLP (the slow path), the others a LayerNorm and one Linear (the fast path), "
                "scattered back. The depthwise 7x7 convolution (ConvNeXt) and the windowed attention (Swin) still "
                "run on every position, as do the first, second and fourth stages. The column gives those "
                "slow-path counts per location, not token counts; the GMACs count the slow path's MLP on them "
                "only, the fast path's Linear on the others.")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_spatial(name: str) -> bool:
    return name in SPATIAL_MODELS


def zoo_config(name: str, quick: bool = False) -> Any:
    """The official configuration `name` at keep ratio 0.7; --quick: reduced to QUICK (pruning at its quarters),
    a spatial one to QUICK_SPATIAL (Swin with QUICK_SWIN_WINDOW)."""
    if is_spatial(name):
        from pipeline.spatial.config import spatial_config

        scfg = spatial_config(name, keep_ratio=KEEP_RATIO)
        if quick:
            window = {"window_size": QUICK_SWIN_WINDOW} if scfg.family == "swin" else {}
            scfg = scfg.replace(**QUICK_SPATIAL, **window)  # SpatialConfig makes the lists tuples
        return scfg

    from pipeline.config import default_pruning_loc, model_config

    cfg = model_config(name, keep_ratio=KEEP_RATIO)
    if quick:
        cfg = cfg.replace(**QUICK, pruning_loc=default_pruning_loc(QUICK["depth"]))
    return cfg


def build_pair(cfg: Any) -> tuple[Any, Any]:
    """The pruned model (seeded random weights) and its dense teacher with the same backbone weights, as
    bench_tradeoff builds them: the student's state dict less its own keys (prediction modules; for the spatial
    models also the fast paths), loaded strictly, so that every backbone tensor is shared."""
    import torch

    from pipeline.spatial.config import SPATIAL_FAMILIES

    torch.manual_seed(SEED)
    if cfg.family in SPATIAL_FAMILIES:
        from pipeline.spatial.load import build_spatial, sparse_key_of

        student, dense = build_spatial(cfg).eval(), build_spatial(cfg.as_dense()).eval()
        own = sparse_key_of(cfg.family)
    else:
        from pipeline.model import DynamicViT

        student, dense = DynamicViT(cfg).eval(), DynamicViT(cfg.as_dense()).eval()

        def own(k: str) -> bool:
            return k.startswith("score_predictor.")

    dense.load_state_dict({k: v for k, v in student.state_dict().items() if not own(k)})
    return student, dense


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: Any) -> float:
    """Multiply-adds (10^9) of one image's inference pass: FlopCounterMode's count (pipeline.measure) / 2."""
    from pipeline.measure import count_flops

    return count_flops(model) / 2e9


def predictor_gmacs(model: Any) -> float:
    """Multiply-adds (10^9) of the prediction modules alone, on the tokens (spatial: the whole map's positions)
    each one scores at inference."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    c = model.cfg
    with torch.no_grad():
        out = model.forward_inference(torch.zeros(1, c.in_chans, c.img_size, c.img_size))
        with FlopCounterMode(display=False) as counter:
            for stage, tokens in enumerate(out.stage_inputs[1:], start=1):
                model.keep_scores(stage, tokens)
    return int(counter.get_total_flops()) / 2e9


def export_model(cfg: Any, student: Any, dense: Any, sizes: tuple[int, ...], work: Path) -> Path:
    """The graph set of `student` with `dense` as its teacher, at `sizes`, in work/graphs; reused when it holds
    this configuration with every size and its teacher graph (the weights are seeded: same config, same graphs)."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export
    from pipeline.graphset import GraphSet

    graphs = work / "graphs"
    try:
        gs = GraphSet.load(graphs, ("export",))
    except Exception:  # noqa: BLE001 - absent or unreadable: export again
        gs = None
    if gs is not None and gs.config == cfg and all(b in gs.batches and gs.batches[b].teacher is not None
                                                   for b in sizes):
        return graphs
    work.mkdir(parents=True, exist_ok=True)
    ckpt, dense_ckpt = work / "student.pt", work / "dense.pt"
    save_checkpoint(ckpt, student)
    save_checkpoint(dense_ckpt, dense)
    export(ckpt, graphs, teacher=dense_ckpt, batch_sizes=sizes, verify_images=1, progress=False, overwrite=True)
    return graphs


def time_pair(graphs: Path, batch: int, runs: int, threads: int, pool: str, warmup_s: float) -> dict[str, Any]:
    """The fused pruned graph against the dense teacher graph at `batch`: warm-up (at least one run each, for
    `warmup_s`), then `runs` rounds of one run each, pruned then dense; p50 (median) and the ratio."""
    import numpy as np

    from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
    from pipeline.graphset import GraphSet
    from pipeline.latency import random_feeds
    from pipeline.latency.timing import Case, TimingSettings, run_interleaved

    b = GraphSet.load(graphs, ("export",), verify=False).batch(batch)  # export_model verified it
    assert b.teacher is not None
    # rounds = runs and a vanishing slot duration: exactly one run per case per round, the cases alternating
    settings = TimingSettings(warmup_s=warmup_s, duration_s=1e-9, min_iters=runs, rounds=runs)
    with ExitStack() as closer:
        cases = []
        for model, entry in (("pruned", b.fused), ("dense", b.teacher)):
            runner = closer.enter_context(OnnxRuntimeRunner(entry.path, entry.name, "cpu", threads, pool=pool))
            feeds = random_feeds(entry, np.random.default_rng(SEED))
            cases.append(Case({"model": model, "graph": entry.file}, _step(runner, feeds), batch))
        run_interleaved(cases, settings)
    pruned, dense = (c.result(settings.noisy_cv) for c in cases)
    return {
        "runs": runs, "pruned_p50_ms": pruned["end_to_end"]["p50_ms"], "dense_p50_ms": dense["end_to_end"]["p50_ms"],
        "ratio": pruned["end_to_end"]["p50_ms"] / dense["end_to_end"]["p50_ms"],
        "noisy": pruned["end_to_end"]["noisy"] or dense["end_to_end"]["noisy"],
        "pruned": pruned["end_to_end"], "dense": dense["end_to_end"],
        "samples_ms": {"pruned": cases[0].samples, "dense": cases[1].samples},
    }


def _step(runner: Any, feeds: dict[str, Any]) -> Callable[[], None]:
    def step() -> None:  # returns no per-stage times: the whole graph is one step
        runner.infer(feeds)

    return step


def measure_model(name: str, quick: bool, sizes: tuple[int, ...], work: Path) -> dict[str, Any]:
    """Everything but the timing: configuration, parameters, counted GMACs against the quoted ones, the graphs."""
    from pipeline.config import FAMILY_NAMES

    cfg = zoo_config(name, quick)
    student, dense = build_pair(cfg)
    gmacs = {"dense": count_gmacs(dense), "pruned": count_gmacs(student),
             "prediction_modules": predictor_gmacs(student)}
    gmacs["ratio"] = gmacs["pruned"] / gmacs["dense"]
    quoted = None if quick else QUOTED_GMACS.get(name)
    diff = None
    if quoted:
        diff = {k: {"gmacs": gmacs[k] - q, "percent": 100 * (gmacs[k] - q) / q} for k, q in quoted.items()}
    t0 = time.perf_counter()
    graphs = export_model(cfg, student, dense, sizes, work / (f"{name}-quick" if quick else name))
    log(f"[{name}] graphs in {graphs} ({time.perf_counter() - t0:.0f} s); GMACs dense {gmacs['dense']:.3f}, "
        f"pruned {gmacs['pruned']:.3f}")
    # spatial: tokens_per_stage is the static map every stage graph takes (all positions), keep_counts the
    # slow-path positions at each location (map_positions: the third stage's map)
    return {
        "name": name, "preset": cfg.name, "family": cfg.family, "family_name": FAMILY_NAMES[cfg.family],
        "sparsification": "spatial" if is_spatial(name) else "tokens",
        "keep_ratio": cfg.keep_ratio, "model_config": cfg.to_dict(), "tokens_per_stage": cfg.tokens_per_stage,
        "keep_counts": cfg.keep_counts, **({"map_positions": cfg.positions} if is_spatial(name) else {}),
        "params": count_params(student), "params_dense": count_params(dense),
        "gmacs": gmacs, "quoted_gmacs": quoted, "gmacs_diff": diff, "graphs": str(graphs), "ort": {},
    }


# ---------------------------------------------------------------------------------------------- the table
def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _ratio_cell(ort: dict[str, Any] | None) -> str:
    if not ort:
        return "—"
    mark = " †" if ort.get("noisy") else ""
    return f"{ort['ratio']:.2f}{mark} ({ort['pruned_p50_ms']:.1f} / {ort['dense_p50_ms']:.1f} ms)"


def _diff_cell(m: dict[str, Any], key: str) -> str:
    d = (m.get("gmacs_diff") or {}).get(key)
    return "—" if d is None else f"{d['gmacs']:+.2f} ({d['percent']:+.1f}%)"


def markdown_table(result: dict[str, Any]) -> str:
    """The README table: the zoo, what is counted and timed, the comparison with the quoted figures, the command
    and the machine."""
    s, mach = result["settings"], result["machine"]
    sizes = [int(b) for b in s["batch_sizes"]]
    models = result["models"]
    title = f"DynamicViT model zoo at keep ratio {result['keep_ratio']}"
    lines = [f"### {title}" + (" (--quick: REDUCED configurations, not for the README)" if result["quick"] else ""),
             ""]
    tokens = [m for m in models if not _is_spatial_row(m)]
    spatial = [m for m in models if _is_spatial_row(m)]
    # Two tables: token pruning gives tokens per stage; spatial sparsification keeps every position in every stage
    # graph, so its column is the slow-path positions per location instead (a token count would be all of them).
    for group, column, cell in (
        (tokens, "tokens per stage", lambda m: " → ".join(map(str, m["tokens_per_stage"]))),
        (spatial, "slow-path positions per location (of the third stage's map)",
         lambda m: " / ".join(map(str, m["keep_counts"])) + f" of {m.get('map_positions', m['tokens_per_stage'][0])}"),
    ):
        if not group:
            continue
        if group is spatial and tokens:
            lines.append("")
        head = ["model", "family", column, "params (M) pruned / dense", "dense GMACs (multiply-adds)",
                "pruned GMACs (multiply-adds)", *(f"ORT pruned/dense b{b} (p50 ms)" for b in sizes)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in group:
            row = [f"`{m['name']}`", m["family_name"], cell(m),
                   f"{m['params'] / 1e6:.2f} / {m['params_dense'] / 1e6:.2f}", _num(m["gmacs"]["dense"]),
                   _num(m["gmacs"]["pruned"]), *(_ratio_cell(m["ort"].get(str(b))) for b in sizes)]
            lines.append("| " + " | ".join(row) + " |")
    image_sizes = {_image_size(m) for m in models}
    if len(image_sizes) == 1:
        images = f"{image_sizes.pop()} images"
    else:
        kinds = dict.fromkeys(f"{_image_size(m)} ({'spatial' if _is_spatial_row(m) else 'token pruning'})"
                              for m in models)  # in table order
        images = ", ".join(kinds) + " images"
    lines += [
        "",
        (f"{images}, random weights (seeded); the dense model is the teacher with the same backbone weights."
         + (" Tokens per stage include the class token." if tokens else "")),
    ]
    if spatial:
        lines += ["", SPATIAL_NOTE]
    lines += [
        "",
        GMACS_NOTE,
        "",
        (f"ORT: ONNX Runtime {mach['versions'].get('onnxruntime', '?')} on the CPU, the fused pruned graph against "
         f"the dense teacher graph as `dvit export` writes them, {s['threads']} intra-op thread(s) ({s['pool']} pool, "
         f"process pinned to CPUs {s['pinned_cpus']}); per model and batch size a warm-up, then {s['runs']} runs of "
         "each taking turns (pruned, dense, pruned, ...); the ratio of the medians (p50), the p50s in parentheses. "
         "† : coefficient of variation above 2.5% in one of the two."),
    ]
    compared = [m for m in models if m.get("quoted_gmacs")]
    if compared:
        source = result.get("quoted_source", QUOTED_SOURCE)
        lines += ["", f"Counted against {source}, which quotes GFLOPs to 0.1 G (— : not quoted):", "",
                  ("| model | dense counted | dense quoted | difference | pruned counted | pruned quoted | difference "
                   "| of which prediction modules |"), "|---|---|---|---|---|---|---|---|"]
        for m in compared:
            g, q = m["gmacs"], m["quoted_gmacs"]
            lines.append(f"| `{m['name']}` | {g['dense']:.3f} | {_num(q.get('dense'), '.1f')} | {_diff_cell(m, 'dense')} "
                         f"| {g['pruned']:.3f} | {_num(q.get('pruned'), '.1f')} | {_diff_cell(m, 'pruned')} "
                         f"| {g['prediction_modules']:.3f} |")
    load = mach.get("load_average")
    lines += [
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores; onnxruntime {mach['versions'].get('onnxruntime', '?')}, "
        f"torch {mach['versions'].get('torch', '?')}, Python {mach['python']}; {result['date']}"
        + (f"; load average at the start {load[0]:.2f}" if load else ""),
        "",
    ]
    return "\n".join(lines)


def _is_spatial_row(m: dict[str, Any]) -> bool:
    return m.get("sparsification") == "spatial"


def _image_size(m: dict[str, Any]) -> str:
    size = m.get("model_config", {}).get("img_size", "?")
    return f"{size}x{size}"


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"official names, comma-separated: token pruning {', '.join(TOKEN_MODELS)}, spatial "
                        f"{', '.join(SPATIAL_MODELS)} (default: all)")
    p.add_argument("--batch-sizes", default=None, help="static batch sizes (default: 1,32; --quick: 1)")
    p.add_argument("--runs", type=int, default=10,
                   help="timed runs of each graph per model and batch size, after the warm-up (default: %(default)s)")
    p.add_argument("--warmup-s", type=float, default=0.5,
                   help="warm-up per graph: at least one run, more while this time lasts (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run in seconds: reduced configurations (token pruning: depth {QUICK['depth']}, "
                        f"{QUICK['img_size']}x{QUICK['img_size']} images; spatial: depths {QUICK_SPATIAL['depths']}, "
                        f"{QUICK_SPATIAL['img_size']}x{QUICK_SPATIAL['img_size']} images, Swin window "
                        f"{QUICK_SWIN_WINDOW}), batch 1 unless --batch-sizes says otherwise")
    p.add_argument("--work", default=str(REPO / "artifacts" / "bench-model-zoo"), help="exported graphs (reused)")
    p.add_argument("--out", default=None,
                   help="where model_zoo.json and model_zoo.md go (default: benchmarks/results; --quick: "
                        "model_zoo_quick.* in --work, out of git's sight)")
    args = p.parse_args(argv)

    from bench_tradeoff import repo_relative

    from pipeline.backend.onnxruntime import pools
    from pipeline.export import parse_batch_sizes
    from pipeline.io import atomic_write_json, atomic_write_text
    from pipeline.latency import machine_info
    from pipeline.latency.timing import cpu_affinity, pin_cpus, restore_cpus

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        p.error(f"--models {args.models!r}: choose among {', '.join(MODELS)}")
    if args.runs < 1 or args.threads < 1 or args.warmup_s < 0:
        p.error("--runs and --threads must be positive, --warmup-s not negative")
    sizes = parse_batch_sizes(args.batch_sizes or ("1" if args.quick else "1,32"))
    pool = pools.default_pool()
    pools.check(pool, args.threads)
    command = " ".join([".venv/bin/python benchmarks/bench_model_zoo.py", *(sys.argv[1:] if argv is None else argv)])
    machine = machine_info("onnxruntime")
    import torch

    machine["versions"]["torch"] = torch.__version__
    started = time.perf_counter()

    # Every export (and onnxsim's sessions in it) before the first timed session: that one may create ONNX
    # Runtime's global pool, which refuses the per-session pools made after it.
    work = Path(args.work)
    models = []
    for name in names:
        log(f"[{name}] counting and exporting (batch sizes {','.join(map(str, sizes))})")
        models.append(measure_model(name, args.quick, sizes, work))

    original, pinned = cpu_affinity(), None
    try:
        pinned = pin_cpus(args.threads)
        for b in sizes:
            for m in models:
                log(f"[{m['name']}] b{b}: warm-up, then {args.runs} runs each of pruned and dense, taking turns")
                t = time_pair(Path(m["graphs"]), b, args.runs, args.threads, pool, args.warmup_s)
                m["ort"][str(b)] = t
                log(f"[{m['name']}] b{b}: pruned {t['pruned_p50_ms']:.1f} ms, dense {t['dense_p50_ms']:.1f} ms, "
                    f"ratio {t['ratio']:.3f}" + (" (noisy)" if t["noisy"] else ""))
    finally:
        restore_cpus(original)
    machine["load_average_end"] = machine_info("onnxruntime")["load_average"]

    result = {
        "format": FORMAT, "command": command, "quick": args.quick, "keep_ratio": KEEP_RATIO,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "gmacs_note": GMACS_NOTE, "spatial_note": SPATIAL_NOTE, "quoted_source": QUOTED_SOURCE,
        "settings": {"batch_sizes": list(sizes), "runs": args.runs, "warmup_s": args.warmup_s,
                     "threads": args.threads, "pool": pool, "pinned_cpus": pinned, "seed": SEED,
                     "reduced": QUICK if args.quick else None,
                     "reduced_spatial": {**QUICK_SPATIAL, "swin_window_size": QUICK_SWIN_WINDOW} if args.quick
                     else None},
        "wall_s": time.perf_counter() - started,
        "models": models,
    }
    out = Path(args.out or (work if args.quick else REPO / "benchmarks" / "results"))
    stem = "model_zoo_quick" if args.quick else "model_zoo"
    result = repo_relative(result)
    atomic_write_json(out / f"{stem}.json", result)
    table = markdown_table(result)
    atomic_write_text(out / f"{stem}.md", table)
    print(table)
    print(f"wrote {out / stem}.json and {out / stem}.md ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
