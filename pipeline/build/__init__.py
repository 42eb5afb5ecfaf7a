"""`dvit build`: TensorRT (or TensorRT-RTX) engines from any graph set, one per graph, plus an engine manifest.

    dvit build --graphs DIR --target NAME --out DIR [--plugin-lib PATH] [--batch-sizes 8,1] [--cache-dir DIR]
               [--overwrite] [--no-progress] [--dla | --no-dla] [--targets-dir DIR]

writes, per batch size B, b{B}/stage{i}.plan, b{B}/fused.plan and b{B}/teacher.plan, each with its layer report
b{B}/<name>.layers.json (pipeline.build.layers), and an "engine" graph set manifest (pipeline.graphset) that the
runners, `dvit validate`, `dvit latency` and `dvit report` read. Why it works as it does:

* precision comes from the graphs: every network is strongly typed and no precision builder flag is ever set,
  so an FP16, INT8 or mixed graph set builds into exactly what `dvit precision` wrote;
* the target profile (targets/*.toml) decides the backend, SMs, workspace, optimisation level and DLA; what a
  TensorRT release can or cannot do is asked of pipeline.backend.tensorrt's capabilities, never of version numbers;
* a DLA build places engine by engine (pipeline.build.placement, by the profile's dla.stages): each manifest entry
  says where its engine runs ("device": "dla:0" with "gpu_fallback", or "gpu") and why ("device_reason"), and the
  command prints one line of it;
* an engine is reused from the cache only when graph, plugin library, backend version, target, SMs and builder
  settings all match (pipeline.build.cache); --out appears complete or not at all (pipeline.io.atomic_dir).

Imports neither torch, timm, ModelOpt nor onnx: a Jetson runs it with JetPack's TensorRT, numpy and tqdm.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cli_args
from ..backend.tensorrt import (
    MODULES,
    Backend,
    BackendError,
    BuildSettings,
    apply_settings,
    build_serialized,
    config_json,
    create_builder,
    create_network,
    describe,
    is_jetson,
    load_for,
    parse_onnx,
    plugins,
    settings_json,
    timing_cache_note,
)
from ..backend.tensorrt import cuda as cuda_buffers
from ..backend.tensorrt.builder import dla_capable_layers
from ..errors import ConfigError, DvitError
from ..graphset import GraphEntry, GraphSet, batch_section, write_graph_set
from ..io import atomic_dir, atomic_write, atomic_write_json, ensure_writable_dir, sha256_file
from ..manifest import file_entry
from ..targets import ENV_DIR, Target, backend_label, load_target
from . import layers, placement
from .cache import DEFAULT_DIR as DEFAULT_CACHE_DIR
from .cache import EngineCache, cache_key
from .placement import Placement

if TYPE_CHECKING:  # annotations only; at run time `trt` is the module of the Backend in hand
    import tensorrt as trt

SOURCE_KINDS = ("export", "precision", "plugin")
# Keys of a graph's manifest entry that describe its engine as well.
CARRIED = ("index", "keep_count", "blocks", "plugin_nodes", "stage_prefixes")
INT8_RTX_NOTE = ("{label} lists INT8 only as weight-only GEMM in its support matrix: the activation Q/DQ layers of "
                 "{what} built ahead of time, but whether they run as INT8 on an RTX GPU is not established (no GPU "
                 "has run them here); time them against the FP16 engines before relying on INT8")


# ---------------------------------------------------------------------------------------------- API
@dataclass
class BuildResult:
    """What build_engines did: the engine set (read back and verified) and how each engine came about."""

    out: Path
    engines: GraphSet
    built: int
    reused: int
    seconds: float
    cache_dir: Path | None
    notes: list[str] = field(default_factory=list)
    placement: str | None = None  # where the engines run, one line; None for a build that does not use the DLA

    def summary(self) -> str:
        m = self.engines.manifest
        size = sum(int(e.info["bytes"]) for e in self.engines.entries())
        cache = f" (engine cache {self.cache_dir})" if self.cache_dir is not None else " (no engine cache)"
        return (f"wrote {self.out}: {self.built + self.reused} engines (batch sizes "
                f"{', '.join(map(str, self.engines.batch_sizes))}; {','.join(self.engines.precision)}) for "
                f"{m['target']['name']} with {backend_label(m['backend']['backend'])} {m['backend']['version']}: "
                f"{self.built} built, {self.reused} reused{cache}; {size / 2**20:.1f} MiB in {self.seconds:.1f} s")


def build_engines(
    graphs: str | Path,
    target: str,
    out: str | Path,
    *,
    plugin_lib: str | Path | None = None,
    plugin_search: tuple[str | Path, ...] = plugins.DEFAULT_SEARCH,
    batch_sizes: tuple[int, ...] | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    overwrite: bool = False,
    progress: bool = True,
    use_dla: bool | None = None,
    targets_dir: str | Path | None = None,
) -> BuildResult:
    """Build every graph of `graphs` (an export, precision or plugin graph set) for target profile `target` into
    `out`; `cache_dir` None builds everything and caches nothing; `use_dla` None keeps the target's default."""
    started = time.perf_counter()
    tgt = load_target(target, targets_dir)
    src = GraphSet.load(graphs, SOURCE_KINDS)
    out = Path(out)
    if out.resolve() == src.root.resolve():
        raise ConfigError(f"--out {out} is the --graphs directory: write the engines to another directory")
    if out.exists() and not overwrite:
        raise DvitError(f"{out} already exists: remove it or pass --overwrite")
    batches = select_batches(src, batch_sizes)
    entries = [e for b in batches for e in src.batch(b).entries()]
    lib = plugins.find(plugin_lib, sum(e.plugin_nodes for e in entries), plugin_search)
    b = open_backend(tgt)
    settings = BuildSettings.from_target(tgt, use_dla, b.version)
    dla = placement.request(settings.dla_core, tgt)
    placements = placement.plan(src, batches, dla, placement.off_reason(tgt, use_dla))
    gpu = cuda_buffers.gpu_available()
    ccs, notes = engine_compute_capabilities(b, tgt, settings, gpu)
    if plugin_lib is not None and lib is None:
        notes.append(f"--plugin-lib {plugin_lib} not loaded: the graphs hold no plugin nodes")
    cache = EngineCache(cache_dir) if cache_dir is not None else None
    if cache is not None:
        try:
            ensure_writable_dir(cache.root)
        except DvitError as err:
            raise DvitError(f"engine cache {cache.root} cannot be written ({err}): pass a writable --cache-dir") from err
    if lib is not None:
        plugins.check_parser_can_load(b)
        plugins.load(b, lib)  # before any graph is parsed
    builder = _Builder(b, tgt, settings, ccs, cache, lib, gpu, notes, placements)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        graph_sections: dict[int | str, dict[str, Any]] = {}
        from tqdm import tqdm  # type: ignore[import-untyped]

        with tqdm(total=len(entries), desc="build", unit="engine", disable=not progress, file=sys.stderr) as bar:
            for size in batches:
                bg = src.batch(size)
                done: dict[str, dict[str, Any]] = {}
                for graph in bg.entries():
                    bar.set_postfix_str(f"b{size} {graph.name}")
                    done[graph.name] = builder.engine(src, graph, tmp)
                    bar.update()
                graph_sections[size] = batch_section(
                    [done[s.name] for s in bg.stages], done["fused"], done.get("teacher"))
        builder.save_timing_cache()
        header = {**src.header(), "batch_sizes": sorted(batches)}
        write_graph_set(
            tmp, "engine", header, graph_sections,
            source_graphs={"path": str(src.root.resolve()), "kind": src.kind, "manifest_sha256": src.sha256},
            backend=describe(b),
            target={"name": tgt.name, "description": tgt.description, "backend": tgt.backend,
                    "profile": str(tgt.path), "profile_sha256": sha256_file(tgt.path)},
            compute_capabilities=ccs,
            build=builder.config_settings,
            build_settings=settings_json(settings),
            dla={"core": dla.core, "stages": dla.stages} if dla is not None else None,
            # relative to the engine set, so that it holds where the set is copied or hard-linked with the library
            # beside it (a deploy's release: ../plugins/); `absolute` is where it was at build time
            plugin_library=({**lib.to_json(), "path": os.path.relpath(lib.path, out.resolve()),
                             "absolute": str(lib.path)} if lib is not None else None),
            cache={"dir": str(cache.root.resolve()) if cache else None, "built": builder.built,
                   "reused": builder.reused},
            build_seconds=round(time.perf_counter() - started, 3),
            host={"machine": platform.machine(), "jetson": is_jetson(), "gpu": gpu[1]},
            notes=sorted(builder.notes),
        )
    engines = GraphSet.load(out, ("engine",))
    return BuildResult(out, engines, builder.built, builder.reused, time.perf_counter() - started,
                       cache.root if cache else None, sorted(builder.notes),
                       placement_line(engines) if dla is not None else None)


def placement_line(engines: GraphSet) -> str:
    """Where the engines of an engine set run, one line, read from their manifest entries."""
    return placement.summary(placement.by_name(
        {(e.batch, e.name): Placement.from_record(e.info) for e in engines.entries()}))


def parse_batch_sizes(spec: str | None) -> tuple[int, ...] | None:
    """'8,1' -> (8, 1); None or '' -> None (every batch size of the graph set)."""
    if not spec:
        return None
    try:
        sizes = tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError as e:
        raise ConfigError(f"--batch-sizes {spec!r} is not a comma-separated list of integers, e.g. 8,1") from e
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-sizes {spec!r}: batch sizes are positive integers, e.g. 8,1")
    return sizes


def select_batches(src: GraphSet, batch_sizes: tuple[int, ...] | None) -> list[int]:
    if batch_sizes is None:
        return src.batch_sizes
    if missing := [s for s in batch_sizes if s not in src.batches]:
        raise ConfigError(f"the graph set in {src.root} has no batch size {missing[0]} (it has "
                          f"{', '.join(map(str, src.batch_sizes))}): export it with --batch-sizes including "
                          f"{missing[0]}, or build one of those")
    return sorted(set(batch_sizes), key=batch_sizes.index)


def open_backend(target: Target) -> Backend:
    """The target's backend; a Jetson target on a machine that is not one says where its engines are built."""
    try:
        return load_for(target)
    except BackendError as e:
        if not (target.jetson and not is_jetson()):
            raise
        have = [backend_label(n) for n, m in MODULES.items() if n != target.backend and importlib.util.find_spec(m)]
        here = f"this machine has {' and '.join(have)}, which cannot build for it" if have else \
            f"this machine has no {backend_label(target.backend)}"
        raise BackendError(f"target {target.name} is a Jetson, whose engines {backend_label(target.backend)} from "
                           f"JetPack builds on the device itself, and {here}: run `dvit build --target "
                           f"{target.name}` on the Jetson (or `dvit deploy --target {target.name} --host ...`)") from e


def engine_compute_capabilities(b: Backend, target: Target, settings: BuildSettings,
                                gpu: tuple[bool, str]) -> tuple[list[int], list[str]]:
    """(the SMs the engines are for, notes). TensorRT-RTX builds ahead of time for the target's SMs; full
    TensorRT builds for the GPU it runs on, which must then be one of the target's."""
    if b.has("compute_capability_targets"):
        return list(settings.compute_capabilities), []
    ok, why = gpu
    if not ok:  # full TensorRT fails to build without a GPU anyway; cuda-python may just be missing
        return list(target.compute_capabilities), [
            f"this machine's GPU was not checked against target {target.name}'s SMs ({why})"]
    info = cuda_buffers.device_info()
    sm = int(str(info["compute_capability"]).replace(".", ""))
    if sm not in target.compute_capabilities:
        raise BackendError(f"{b.label} builds for the GPU it runs on, a {info['name']} (sm_{sm}), but target "
                           f"{target.name} is for sm_{', sm_'.join(map(str, target.compute_capabilities))}: build "
                           "on the target device, or choose a target listing this GPU (`dvit targets`)")
    return [sm], []


# ---------------------------------------------------------------------------------------------- one engine
class _Builder:
    """One backend builder for the whole run, with the cache, the timing cache and the counts."""

    def __init__(self, b: Backend, target: Target, settings: BuildSettings, ccs: list[int], cache: EngineCache | None,
                 lib: plugins.PluginLibrary | None, gpu: tuple[bool, str], notes: list[str],
                 placements: dict[tuple[int, str], Placement]) -> None:
        self.b, self.target, self.settings, self.ccs, self.cache, self.lib, self.gpu = (
            b, target, settings, ccs, cache, lib, gpu)
        self.placements = placements
        self.builder: trt.Builder = create_builder(b)
        self.notes: set[str] = set(notes)
        if note := timing_cache_note(b):
            self.notes.add(note)
        self.built = self.reused = 0
        self.config_settings: dict[str, Any] = {}
        self.timing: trt.ITimingCache | None = None
        self._open_timing_cache()

    def engine(self, src: GraphSet, e: GraphEntry, tmp: Path) -> dict[str, Any]:
        """Parse graph `e`, build (or reuse) its engine into tmp/b{B}/<name>.plan; its manifest entry."""
        b = self.b
        rel = plan_name(e)
        rel_layers = f"b{e.batch}/{e.name}.layers.json"
        plan = tmp / rel
        plan.parent.mkdir(parents=True, exist_ok=True)
        where = self.placements[(e.batch, e.name)]  # build_engines planned every graph it builds
        network: trt.INetworkDefinition = create_network(b, self.builder)
        parser: trt.OnnxParser = parse_onnx(b, network, e.path, "ERROR")  # owns the weights until the build is done
        config: trt.IBuilderConfig = self.builder.create_builder_config()
        self.notes.update(apply_settings(b, self.builder, config, self.settings.on(where.dla_core)))
        dla_layers = dla_capable_layers(b, network, config) if where.on_dla else None
        config.profiling_verbosity = b.trt.ProfilingVerbosity.DETAILED  # the engine inspector shows dtypes
        self.config_settings = config_json(b, config)
        parts = {
            "graph_sha256": e.sha256,
            "plugin_sha256": self.lib.sha256 if self.lib is not None and e.plugin_nodes else None,
            "backend": b.name, "version": b.version, "target": self.target.name,
            "compute_capabilities": self.ccs, "settings": self.config_settings,
        }
        key = cache_key(parts)
        inputs, outputs = layers.network_io(network)
        report = layers.network_report(network)
        hit, why = self.cache.lookup(key, parts) if self.cache is not None else (None, None)
        if why:
            self.notes.add(f"{rel}: {why}")
        if hit is not None:
            shutil.copyfile(hit.plan, plan)
            seconds, status = float(hit.record.get("build_seconds") or 0.0), "reused"
            self.reused += 1
        else:
            self._attach_timing_cache(config)
            t0 = time.perf_counter()
            data = build_serialized(b, self.builder, network, config)
            seconds, status = time.perf_counter() - t0, "built"
            plan.write_bytes(data)
            if self.cache is not None:
                self.cache.store(key, parts, plan, seconds)
            self.built += 1
        del parser
        precision = e.info.get("precision") or (src.precision[e.index] if e.index is not None else src.precision)
        capable = {"dla_capable_layers": dla_layers} if dla_layers is not None else {}
        notes = []
        if b.name == "tensorrt-rtx" and report["summary"]["qdq_layers"]:
            notes.append(INT8_RTX_NOTE.format(label=b.label, what="this engine"))
            self.notes.add(INT8_RTX_NOTE.format(label=b.label, what="the INT8 engines"))
        report.update(engine=rel, graph={"path": e.file, "sha256": e.sha256}, precision=precision, notes=notes,
                      backend={"backend": b.name, "version": b.version},
                      engine_inspector=layers.inspector_json(b, plan, self.gpu))
        atomic_write_json(tmp / rel_layers, report)
        return engine_entry(
            tmp, e, src.kind, where, precision=precision, **capable, inputs=inputs, outputs=outputs,
            build_seconds=round(seconds, 3), cache={"status": status, "key": key},
            layers=file_entry(tmp, rel_layers), layer_summary=_short(report["summary"]), notes=notes,
        )

    # ------------------------------------------------------------------------------------------ timing cache
    def _open_timing_cache(self) -> None:
        """Full TensorRT only: the cache folder's kernel timings for this backend version, read under the lock."""
        if self.cache is None or not self.b.has("timing_cache"):
            return
        path = self.cache.timing_cache_path(self.b.name, self.b.version, self.ccs)
        with self.cache.locked():
            data = path.read_bytes() if path.is_file() else b""
        config: trt.IBuilderConfig = self.builder.create_builder_config()
        self.timing = config.create_timing_cache(data)

    def _attach_timing_cache(self, config: trt.IBuilderConfig) -> None:
        if self.timing is not None and self.b.has("timing_cache") and not config.set_timing_cache(self.timing, False):
            self.notes.add("the timing cache in the cache folder was made on another device or release: not used")

    def save_timing_cache(self) -> None:
        """Merge this run's timings into the file (another build may have written it meanwhile), under the lock."""
        if self.cache is None or self.timing is None or not self.b.has("timing_cache") or not self.built:
            return
        path = self.cache.timing_cache_path(self.b.name, self.b.version, self.ccs)
        with self.cache.locked():
            if path.is_file():
                config: trt.IBuilderConfig = self.builder.create_builder_config()
                theirs: trt.ITimingCache = config.create_timing_cache(path.read_bytes())
                self.timing.combine(theirs, False)
            blob: trt.IHostMemory = self.timing.serialize()
            atomic_write(path, lambda p: p.write_bytes(bytes(memoryview(blob))))


def plan_name(e: GraphEntry) -> str:
    """Where graph `e`'s engine lies in the engine set: b{B}/<name>.plan."""
    return f"b{e.batch}/{e.name}.plan"


def engine_entry(tmp: Path, e: GraphEntry, kind: str, where: Placement, **built: Any) -> dict[str, Any]:
    """The manifest entry of graph `e`'s engine (already written under `tmp`): its hash and size, what the graph's
    entry carries, where the engine runs and why (`where`), the graph it came from (of a `kind` graph set), and
    what the build made of it (`built`)."""
    carried = {k: e.info[k] for k in CARRIED if k in e.info}
    # `graph`, not `file`: a `file` + `sha256` pair is verified as a file of the engine set by every reader.
    return file_entry(tmp, plan_name(e), **carried, **where.record(), **built,
                      source={"graph": e.file, "sha256": e.sha256, "kind": kind})


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    """The layer summary without the per-type table and names, for the manifest."""
    return {k: summary[k] for k in ("layers", "qdq_layers", "plugin_layers", "half_tensors", "int8_tensors")}


# ---------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build a TensorRT (or TensorRT-RTX) engine from every graph of a graph set (dvit export, precision or "
        "plugin-pass output) for a target device profile: b{B}/stage{i}.plan, fused.plan and teacher.plan per "
        "batch size, a layer report beside each, and an engine manifest. Precision comes from the graphs "
        "(strongly typed networks); the target decides backend, SMs, workspace and optimisation level. Engines "
        "whose graph, plugin library, backend version, target and builder settings match a cached one are "
        "reused from --cache-dir.")
    cli_args.add_graphs(parser, help="graph set to build: the output of dvit export, precision or plugin-pass")
    cli_args.add_target(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (engines + manifest.json)")
    cli_args.add_plugin_lib(parser, default_text=f"{plugins.DEFAULT_SEARCH[0]}, as `make plugins` writes it")
    cli_args.add_batch_sizes(parser, help="build only these batch sizes, e.g. 8,1 (default: every batch size of the "
                                          "graph set)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), metavar="DIR",
                        help=f"engine cache (and TensorRT's timing cache), shared between builds (default "
                             f"{DEFAULT_CACHE_DIR})")
    parser.add_argument("--dla", action=argparse.BooleanOptionalAction, default=None,
                        help="build for the target's DLA core with GPU fallback: the engines its dla.stages names "
                             "(\"pre-pruning\": the stage engines without top-k, gather, scatter or plugin nodes; "
                             "\"all\"); FP32 engines stay on the GPU; the manifest says where each runs (default: "
                             "the target's dla.enabled)")
    parser.add_argument("--targets-dir", default=None, metavar="DIR",
                        help=f"folder of target profiles (default: targets/ of this checkout, or ${ENV_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    cli_args.add_progress(parser)


def main(args: argparse.Namespace) -> int:
    with native_stdout_to_stderr():
        result = build_engines(
            args.graphs, args.target, args.out, plugin_lib=args.plugin_lib,
            batch_sizes=parse_batch_sizes(args.batch_sizes), cache_dir=args.cache_dir, overwrite=args.overwrite,
            progress=not args.no_progress, use_dla=args.dla, targets_dir=args.targets_dir,
        )
    print(result.summary())
    if result.placement is not None:
        print(f"placement: {result.placement}")
    for note in result.notes:
        print(f"dvit build: note: {note}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """TensorRT's default logger prints to the process's stdout (C++, below sys.stdout); the command keeps stdout
    for its summary line, so TensorRT's messages go to stderr while it builds."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)  # C stdio buffers still holding TensorRT's text
        os.dup2(saved, 1)
        os.close(saved)
