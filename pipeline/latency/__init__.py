"""`dvit latency`: pruned against dense, stage chain against fused graph, every runner timed the same way.

For each graph set (export, precision or plugin graphs in ONNX Runtime on the CPU; engine sets in TensorRT on a
GPU) and each batch size, the pruned model runs as its stage chain and as its fused graph, and the dense teacher
graph of the same set runs beside them: same backend, same settings, in ONE process, interleaved in rounds
(pipeline.latency.timing) so that drift of the machine hits all alike. The report puts the pruned/dense latency
ratio next to the ratio of their FLOPs, counted from the ONNX graphs (pipeline.latency.flops), the limit the
latency ratio would reach if time scaled with matrix-product work alone.

CPU (ONNX Runtime): wall clock per stage (each stage runner's infer, timed inside the chain) and end to end;
--threads intra-op threads (default: every CPU the process may use), the process pinned to that many CPUs
(os.sched_setaffinity where the OS has it; recorded), and --pool, how the sessions share them
(pipeline.backend.onnxruntime.pools; default: one global pool). GPU (TensorRT): host time end to end with the
host-device copies ("io": "host") and without them ("io": "device"), and CUDA-graph replay of the whole chain
("cuda_graph": true); ONE pair of CUDA events around every timed step ("gpu"), the same for chain, fused and
dense, and per-stage GPU times from iterations of their own. Where no GPU is usable, the report records why
instead of numbers; a CUDA-graph capture that fails drops that variant with a warning.

JSON (--json OUT.json), format "dvit-edge/latency/v1":
    {"format", "machine": {"cpu", "cores", "affinity", "os", "python", "versions", "load_average", "gpu"?},
     "settings": {"warmup_s", "duration_s", "min_iters", "rounds", "noisy_cv", "batch_sizes", "backend",
                  "threads", "pool", "pinned_cpus", "cuda_graph"},
     "flops": {"pruned", "dense", "ratio"} | null             (per image, of the first graph set)
     "graph_sets": [{"graphs", "kind", "precision", "model_config", "flops"}],
     "runs": [{"graphs", "kind", "precision", "model": "pruned"|"dense", "mode": "chain"|"fused", "backend",
               "io": "host"|"device", "cuda_graph", "batch", "end_to_end": STATS, "stages": [STATS...] | null,
               "gpu": STATS | null, "throughput_ips"}
              | {"graphs", "kind", "precision", "backend", "batch", "unavailable": REASON}],
     "ratios": [{"graphs", "backend", "batch", "mode", "io", "cuda_graph", "latency_ratio_p50",
                 "latency_ratio_mean", "flops_ratio"}],
     "unavailable": [{"backend", "reason"}]}
    STATS = {"iterations", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "cv", "noisy"}
The dense model has no stages: its runs are "fused" (the teacher graph) with "stages": null.

Imports neither torch, timm nor ModelOpt (a Jetson runs it); TensorRT and cuda-python only with --backend tensorrt.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from .. import cli_args
from ..backend import BACKENDS, KINDS, graph_runners
from ..backend.onnxruntime import pools
from ..errors import ConfigError, DvitError
from ..graphset import GraphEntry, GraphSet
from ..results.latency import FORMAT, LatencyResult, ratio_entries
from ..runners.chain import StageChain
from .flops import graph_set_flops
from .timing import (
    Case,
    StageTimes,
    TimingSettings,
    cpu_affinity,
    pin_cpus,
    restore_cpus,
    run_interleaved,
    slots,
)

SEED = 0


# ---------------------------------------------------------------------------------------------- inputs
def parse_batch_sizes(text: str | Sequence[int] | None) -> list[int] | None:
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = [int(s) for s in items if str(s).strip()]
    except ValueError as e:
        raise ConfigError(f"--batch-sizes {text!r} is not a list of integers: pass e.g. --batch-sizes 1,8") from e
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: pass positive batch sizes, e.g. --batch-sizes 1,8")
    return list(dict.fromkeys(sizes))


def random_feeds(entry: GraphEntry, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of the entry's static shapes (the graphs are static: their cost does not depend on the values)."""
    return {t.name: rng.standard_normal(t.shape).astype(t.dtype or "float32") for t in entry.inputs}


def _precision(gs: GraphSet) -> str:
    p = gs.precision
    return p[0] if len(set(p)) == 1 else ",".join(p)


def _key(gs: GraphSet, model: str, mode: str, backend: str, io: str = "host", cuda_graph: bool = False) -> dict[str, Any]:
    return {"graphs": str(gs.root), "kind": gs.kind, "precision": _precision(gs), "model": model, "mode": mode,
            "backend": backend, "io": io, "cuda_graph": cuda_graph}


# ---------------------------------------------------------------------------------------------- ONNX Runtime
def ort_cases(gs: GraphSet, batch: int, threads: int | None, pool: str | None, rng: np.random.Generator,
              closer: ExitStack) -> list[Case]:
    """Pruned chain, pruned fused and dense teacher of one batch size, as ONNX Runtime CPU cases; the runners are
    closed by `closer`."""
    runners = closer.enter_context(graph_runners(gs, batch, backend="onnxruntime", threads=threads, pool=pool,
                                                 teacher=True))
    feeds = random_feeds(gs.batch(batch).stages[0], rng)
    times = StageTimes()
    chain = StageChain([times.wrap(r) for r in runners.stages], f"stage chain (b{batch})")

    def chain_step() -> list[float]:
        chain.infer(feeds)
        return times.take()

    cases = [Case(_key(gs, "pruned", "chain", "onnxruntime"), chain_step, batch),
             Case(_key(gs, "pruned", "fused", "onnxruntime"), _step(runners.fused, feeds), batch)]
    if runners.teacher is not None:
        cases.append(Case(_key(gs, "dense", "fused", "onnxruntime"), _step(runners.teacher, feeds), batch))
    return cases


def _step(runner: Any, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    def step() -> None:
        runner.infer(feeds)

    return step


# ---------------------------------------------------------------------------------------------- TensorRT
def trt_runner_cases(runner: Any, key: dict[str, Any], feeds: dict[str, np.ndarray], batch: int,
                     cuda_graph: bool, event: Callable[[], Any], closer: ExitStack) -> list[Case]:
    """The TensorRT variants of one runner (a backend.tensorrt.runner.TensorRTRunner): with host-device copies,
    inputs resident on the device, and CUDA-graph replay. Each step synchronizes the stream, so the host clock
    times the whole step; inside it ONE pair of CUDA events brackets the enqueue for every runner alike (its GPU
    time), and a chain's per-stage GPU times come from iterations of their own (timing.Case). A CUDA-graph
    capture that fails drops that variant with a warning."""
    n = len(runner.engines)
    pair = [closer.enter_context(_destroyed(event())) for _ in range(2)]
    per_stage = [closer.enter_context(_destroyed(event())) for _ in range(n + 1)] if n > 1 else []

    def gpu_time() -> float:
        return float(pair[1].elapsed_ms(pair[0]))

    def stage_times() -> list[float]:
        runner.enqueue(per_stage)
        runner.synchronize()
        return [per_stage[i + 1].elapsed_ms(per_stage[i]) for i in range(n)]

    def with_copies() -> None:
        runner.set_inputs(feeds)
        runner.enqueue(pair)
        runner.fetch_outputs()
        runner.synchronize()

    def on_device() -> None:
        runner.enqueue(pair)
        runner.synchronize()

    def replay() -> None:
        runner.launch()
        runner.synchronize()

    runner.set_inputs(feeds)  # the device-resident variants run on these
    stage_step = stage_times if per_stage else None
    cases = [Case({**key, "io": "host"}, with_copies, batch, gpu_time, stage_step),
             Case({**key, "io": "device"}, on_device, batch, gpu_time, stage_step)]
    if cuda_graph:
        try:
            runner.capture_graph()
        except DvitError as e:
            warnings.warn(f"{runner.name}: CUDA-graph replay not timed ({e})", stacklevel=2)
        else:
            cases.append(Case({**key, "io": "device", "cuda_graph": True}, replay, batch))
    return cases


class _destroyed:
    """A CUDA event as a context manager: destroyed when the runs that use it are over."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def __enter__(self) -> Any:
        return self.event

    def __exit__(self, *exc: object) -> None:
        self.event.destroy()


def trt_cases(gs: GraphSet, batch: int, rng: np.random.Generator, cuda_graph: bool,
              plugin_lib: str | None, closer: ExitStack) -> list[Case]:
    from ..backend.tensorrt import cuda as cb

    g = gs.batch(batch)
    runners = closer.enter_context(graph_runners(gs, batch, backend="tensorrt", plugin_lib=plugin_lib, teacher=True,
                                                 device_chain=True, copy_outputs=g.fused.output_names))
    feeds = random_feeds(g.stages[0], rng)
    cases: list[Case] = []
    for model, mode, runner in (("pruned", "chain", runners.chain), ("pruned", "fused", runners.fused),
                                ("dense", "fused", runners.teacher)):
        if runner is not None:
            cases += trt_runner_cases(runner, _key(gs, model, mode, "tensorrt"), feeds, batch, cuda_graph, cb.Event,
                                      closer)
    return cases


def trt_unavailable() -> str | None:
    """Why TensorRT cannot run here, or None."""
    from ..backend.tensorrt.cuda import gpu_available

    ok, why = gpu_available()
    return None if ok else why


# ---------------------------------------------------------------------------------------------- report
def machine_info(backend: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    if backend == "onnxruntime":
        import onnxruntime as ort  # type: ignore[import-untyped]

        versions["onnxruntime"] = ort.__version__
    return {"cpu": cpu, "cores": os.cpu_count(), "affinity": cpu_affinity(), "os": platform.platform(),
            "python": sys.version.split()[0], "versions": versions,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def ratios(runs: list[dict[str, Any]], flops: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Pruned over dense latency, per graph set, batch, mode and I/O variant, beside the FLOP ratio: paired by
    the one rule the report reads them by (pipeline.results.latency.pair_pruned_dense)."""
    return ratio_entries(runs, flops)


# ---------------------------------------------------------------------------------------------- API
def measure_latency(
    graphs: Sequence[str | os.PathLike[str]],
    batch_sizes: str | Sequence[int] | None = None,
    *,
    backend: str = "onnxruntime",
    threads: int | None = None,
    pool: str | None = None,
    settings: TimingSettings | None = None,
    pin: bool = True,
    cuda_graph: bool = True,
    plugin_lib: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time every graph set's pruned chain, pruned fused graph and dense teacher, interleaved; the report (see the
    module docstring). Batch sizes default to those every set has; `pool` None is ONNX Runtime's default pool
    (backend.onnxruntime.pools.default_pool())."""
    from tqdm import tqdm

    if backend not in BACKENDS:
        raise ConfigError(f"unknown --backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not graphs:
        raise ConfigError("no graph set given: pass --graphs DIR")
    settings = settings or TimingSettings()
    if backend == "onnxruntime":
        pool = pool or pools.default_pool()
        pools.check(pool, threads)
    sets = [GraphSet.load(d, KINDS[backend]) for d in graphs]
    sizes = parse_batch_sizes(batch_sizes) or sorted(set.intersection(*(set(gs.batch_sizes) for gs in sets)))
    if not sizes:
        raise ConfigError("the graph sets have no batch size in common: pass --batch-sizes")
    for gs in sets:
        for b in sizes:
            gs.batch(b, flag="--batch-sizes")  # one line naming the batch sizes it has
    flops = {str(gs.root): graph_set_flops(gs) for gs in sets}
    report: dict[str, Any] = {
        "format": FORMAT, "machine": machine_info(backend), "settings": {},
        "flops": _flops_summary(flops.get(str(sets[0].root))),
        "graph_sets": [{"graphs": str(gs.root), "kind": gs.kind, "precision": gs.precision,
                        "model_config": gs.config.to_dict(), "flops": flops[str(gs.root)]} for gs in sets],
        "runs": [], "ratios": [], "unavailable": [],
    }
    settings_json = {**settings.to_dict(), "batch_sizes": sizes, "backend": backend, "threads": threads,
                     "pool": pool if backend == "onnxruntime" else None, "pinned_cpus": None,
                     "cuda_graph": cuda_graph if backend == "tensorrt" else None}
    report["settings"] = settings_json

    if backend == "tensorrt" and (why := trt_unavailable()) is not None:
        report["unavailable"].append({"backend": backend, "reason": why})
        report["runs"] = [{"graphs": str(gs.root), "kind": gs.kind, "precision": _precision(gs), "backend": backend,
                           "batch": b, "unavailable": why} for b in sizes for gs in sets]
        return report

    original = cpu_affinity()
    try:
        if backend == "onnxruntime":
            threads = threads or pools.default_threads()
            settings_json["threads"] = threads
            if pin:
                settings_json["pinned_cpus"] = pin_cpus(threads)
        else:
            from ..backend.tensorrt.cuda import device_info

            report["machine"]["gpu"] = device_info()
        bar = tqdm(total=0, desc="latency", unit="slot", file=sys.stderr, disable=not progress, leave=False)
        try:
            for b in sizes:
                report["runs"] += _measure_batch(sets, b, backend, settings, threads, pool, cuda_graph, plugin_lib,
                                                 bar)
        finally:
            bar.close()
    finally:
        restore_cpus(original)
    report["machine"]["versions"].update(_backend_versions())  # the backend modules are imported by now
    if backend == "onnxruntime" and pool == "global":
        settings_json["threads"] = pools.global_pool_threads()  # what the process's pool has, whatever was asked
    report["ratios"] = ratios(report["runs"], flops)
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _measure_batch(sets: list[GraphSet], batch: int, backend: str, settings: TimingSettings, threads: int | None,
                   pool: str | None, cuda_graph: bool, plugin_lib: str | None, bar: Any) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    with ExitStack() as closer:  # every runner and CUDA event made for this batch size
        cases: list[Case] = []
        for gs in sets:
            if backend == "onnxruntime":
                cases += ort_cases(gs, batch, threads, pool, rng, closer)
            else:
                cases += trt_cases(gs, batch, rng, cuda_graph, plugin_lib, closer)
        bar.total += slots(len(cases), settings)
        bar.set_description(f"latency b{batch}")
        run_interleaved(cases, settings, lambda: bar.update(1))
        return [c.result(settings.noisy_cv) for c in cases]


def _flops_summary(f: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if f is None else {k: f.get(k) for k in ("pruned", "dense", "ratio")}


def _backend_versions() -> dict[str, str]:
    """Versions of the backend modules this process imported (read after the runners were made)."""
    out = {}
    for mod in ("tensorrt", "tensorrt_rtx", "cuda.bindings", "onnxruntime"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = str(m.__version__)
    return out


# ---------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    cli_args.add_graphs(parser, multiple=True,
                        help="a graph set: export/precision/plugin graphs (onnxruntime) or an engine set (tensorrt); "
                             "repeat to time several side by side")
    cli_args.add_batch_sizes(parser, help="batch sizes to time, e.g. 1,8 (default: every batch size the graph sets "
                                          "have in common)")
    cli_args.add_backend(parser, BACKENDS, help="onnxruntime (CPU) or tensorrt (engine sets, GPU; TensorRT or "
                                                "TensorRT-RTX as the plans' headers say)")
    cli_args.add_threads(parser, help="CPU threads: ONNX Runtime's intra-op threads and the CPUs the process is pinned "
                                      "to (default: every CPU this process may use)")
    cli_args.add_pool(parser)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to --threads CPUs")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="warm-up per runner, seconds (default 0.5)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="measured time per runner, seconds (default 2)")
    parser.add_argument("--min-iters", type=int, default=20, help="minimum measured iterations per runner (default 20)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaving rounds: the runners take turns this many times (default 4)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="tensorrt: do not time CUDA-graph replay")
    cli_args.add_plugin_lib(parser, help="tensorrt: the DvitTopKGather plugin library (default: the engine set's, "
                                         f"else {Path('build') / 'plugins' / 'libdvit_trt_plugins.so'})")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="write the report as JSON")
    cli_args.add_progress(parser)


def main(args: argparse.Namespace) -> int:
    settings = TimingSettings(warmup_s=args.warmup_s, duration_s=args.duration_s, min_iters=args.min_iters,
                              rounds=args.rounds)
    report = measure_latency(args.graphs, args.batch_sizes, backend=args.backend, threads=args.threads,
                             pool=args.pool, settings=settings, pin=not args.no_pin,
                             cuda_graph=not args.no_cuda_graph, plugin_lib=args.plugin_lib,
                             progress=not args.no_progress)
    if args.json:
        LatencyResult(report).save(args.json)
    print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """A few lines per batch size: p50, p90, CV and throughput of each run, then the pruned/dense ratios."""
    s = report["settings"]
    lines = [f"{s['backend']}: warm-up {s['warmup_s']} s, {s['duration_s']} s measured (>= {s['min_iters']} "
             f"iterations) per runner in {s['rounds']} interleaved rounds"
             + (f"; {s['threads']} thread(s), pool {s['pool']}, CPUs {s['pinned_cpus']}" if s["pool"] else "")]
    for u in report["unavailable"]:
        lines.append(f"{u['backend']} unavailable: {u['reason']}")
    for r in report["runs"]:
        if "end_to_end" not in r:
            continue
        e = r["end_to_end"]
        variant = "" if r["backend"] == "onnxruntime" else (" graph" if r["cuda_graph"] else f" {r['io']}-io")
        stages = ""
        if r["stages"]:
            stages = "  stages " + "/".join(f"{st['p50_ms']:.3f}" for st in r["stages"]) + " ms"
        lines.append(f"b{r['batch']:<3} {Path(r['graphs']).name:<14} {r['precision']:<8} {r['model']:<6} "
                     f"{r['mode']:<5}{variant:<9} p50 {e['p50_ms']:8.3f} ms  p90 {e['p90_ms']:8.3f} ms  "
                     f"cv {100 * e['cv']:5.1f}%{' NOISY' if e['noisy'] else '      '}  "
                     f"{r['throughput_ips']:9.1f} img/s{stages}")
    for q in report["ratios"]:
        variant = "" if q["backend"] == "onnxruntime" else (" graph" if q["cuda_graph"] else f" {q['io']}-io")
        flops = f"{q['flops_ratio']:.3f}" if q["flops_ratio"] is not None else "n/a"
        lines.append(f"b{q['batch']:<3} {Path(q['graphs']).name}: pruned {q['mode']}{variant} / dense = "
                     f"{q['latency_ratio_p50']:.3f} (p50), {q['latency_ratio_mean']:.3f} (mean); FLOPs {flops}")
    return "\n".join(lines)


__all__ = ["FORMAT", "TimingSettings", "configure", "format_report", "main", "measure_latency"]
