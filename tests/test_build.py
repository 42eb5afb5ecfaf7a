"""`dvit build`: real engines from real graph sets, built by TensorRT for RTX (its ahead-of-time builder needs no GPU).

The tiny model (depth 4, dim 32: four stages) is exported with its teacher at batch sizes 4 and 1, converted to FP16,
INT8 and fp16,int8,int8,fp16 by `dvit precision`, and each of the four passed through `dvit plugin-pass`; every
stage, fused and teacher graph of the eight sets is built (batch 4) and the layer reports must show what the graphs
say. Then the engine cache (reuse, and rebuilds after a graph, plugin library or builder setting changes, or a
damaged entry), bad input (one line, nothing written), and the device side (no torch, no onnx; no TensorRT at all).
The plugin library is compiled with the CMake helpers of tests/test_plugin_build.py against TensorRT 11.1's public
headers, once per session.

Skips, saying why, only where tensorrt_rtx is not importable (the plugin cases also where nothing can be compiled).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")

from plugin_build_helpers import build_plugin, header_set_id, headers_major, trt_include_dirs
from test_precision import tiny_model

from pipeline import plugin_pass, precision
from pipeline.backend.tensorrt.plan_header import read_plan_header
from pipeline.build import BuildResult, build_engines
from pipeline.build.cache import EngineCache
from pipeline.cli import main as dvit
from pipeline.errors import DvitError, ManifestError
from pipeline.graphset import GraphSet
from pipeline.io import sha256_file
from pipeline.targets import load_target

REPO = Path(__file__).resolve().parents[1]
TARGET = "desktop-rtx"
SPECS = {"fp32": None, "fp16": "fp16", "int8": "int8", "mixed": "fp16,int8,int8,fp16"}
NO_SEARCH: tuple[str, ...] = ()  # never pick up a library `make plugins` may have left in build/plugins
# Runs `pipeline.build.cli` in a fresh interpreter with the modules a Jetson lacks made unimportable.
BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
sys.meta_path.insert(0, Block())
from pipeline.cli import main
rc = main([{command!r}, *sys.argv[1:]])
print('imported:', sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'timm', 'modelopt', 'onnx'}}))
sys.exit(rc)
"""
HEAVY = ("torch", "timm", "modelopt", "onnx", "onnxruntime", "onnxsim", "onnx_graphsurgeon")


def run_blocked(command: str, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """`dvit COMMAND ARGS` in a fresh interpreter in which the `blocked` modules cannot be imported."""
    code = BLOCKED_RUN.format(blocked=blocked, command=command)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def nothing_written(out: Path) -> bool:
    """Neither the output directory nor a temporary sibling of it exists."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ---------------------------------------------------------------- fixtures: graph sets, plugin library, engine sets
@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight graph sets of the tiny model: fp32 (the export), fp16, int8, mixed; each also through the plugin pass."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export
    from pipeline.model import DynamicViT

    root = tmp_path_factory.mktemp("build")
    student = tiny_model(0)
    save_checkpoint(root / "student.pt", student)
    save_checkpoint(root / "teacher.pt", DynamicViT(student.cfg.as_dense()).eval())
    export(root / "student.pt", root / "fp32", teacher=root / "teacher.pt", batch_sizes=(4, 1), verify_images=4,
           progress=False)
    out = {"fp32": root / "fp32", "root": root}
    for name, spec in SPECS.items():
        if spec is not None:
            out[name] = precision.build_precision(root / "fp32", root / name, spec, calib_size=16,
                                                  cache_dir=root / "calibration", progress=False)
        plugin_pass.plugin_pass(out[name], root / f"{name}-plugin", progress=False)
        out[f"{name}-plugin"] = root / f"{name}-plugin"
    return out


@pytest.fixture(scope="session")
def plugin_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libdvit_trt_plugins.so compiled against TensorRT 11.1's headers (shared with the plugin tests' builds)."""
    dirs = trt_include_dirs()
    chosen = next((d for d in dirs if header_set_id(d) == "v11.1"), None) or next(
        (d for d in dirs if headers_major(d) >= 11), None)
    if chosen is None:
        pytest.skip(f"no TensorRT >= 11 headers to compile the plugin against (have: {dirs or 'none'}; expected "
                    "../shared/tensorrt-oss/v11.1/include or $DVIT_TRT_INCLUDE_DIRS)")
    return build_plugin(chosen, tmp_path_factory)["dir"] / "libdvit_trt_plugins.so"


_BUILT: dict[str, BuildResult] = {}


def engines(sets: dict[str, Path], name: str, lib: Path | None) -> BuildResult:
    """The batch-4 engines of graph set `name`, built once per module, all through one engine cache."""
    if name not in _BUILT:
        root = sets["root"]
        _BUILT[name] = build_engines(sets[name], TARGET, root / "engines" / name, plugin_lib=lib,
                                     plugin_search=NO_SEARCH, batch_sizes=(4,), cache_dir=root / "engine-cache",
                                     progress=False)
    return _BUILT[name]


def layer_report(r: BuildResult, name: str, batch: int = 4) -> dict:
    gs = r.engines
    e = next(e for e in gs.batch(batch).entries() if e.name == name)
    return json.loads((gs.root / e.info["layers"]["file"]).read_text())


# ---------------------------------------------------------------- every graph, every precision, with and without the plugin
@pytest.mark.parametrize("plugin", [False, True], ids=["onnx-topk", "plugin"])
@pytest.mark.parametrize("name", list(SPECS))
def test_engines_show_what_the_graphs_say(sets: dict[str, Path], name: str, plugin: bool,
                                          request: pytest.FixtureRequest) -> None:
    lib = request.getfixturevalue("plugin_lib") if plugin else None
    key = f"{name}-plugin" if plugin else name
    r = engines(sets, key, lib)
    src = GraphSet.load(sets[key])
    gs = r.engines
    assert gs.kind == "engine" and gs.batch_sizes == [4] and gs.manifest["batch_sizes"] == [4]
    assert gs.precision == src.precision and gs.config == src.config
    precisions = src.precision
    m = gs.manifest

    # provenance: backend and exact version, target, SMs, builder settings by enum NAME, the plugin library
    assert m["backend"]["backend"] == "tensorrt-rtx" and m["backend"]["version"] == rtx.__version__
    assert m["target"]["name"] == TARGET and m["source_graphs"]["manifest_sha256"] == src.sha256
    sms = list(load_target(TARGET).compute_capabilities)
    assert m["compute_capabilities"] == sms
    assert m["build"]["compute_capabilities"] == [f"ComputeCapability.SM{s}" for s in sms]
    assert m["build"]["profiling_verbosity"] == "ProfilingVerbosity.DETAILED"
    assert not {"FP16", "INT8", "BF16"} & set(m["build"]["builder_flags"])  # precision comes from the graphs
    assert any("no timing cache" in n for n in m["notes"])
    int8_note = [n for n in m["notes"] if "weight-only GEMM" in n]
    assert bool(int8_note) == ("int8" in precisions)
    if lib is not None:
        # recorded relative to the engine set (it holds where the set moves with the library beside it), and found
        # there by the one reader
        assert m["plugin_library"] == {"path": os.path.relpath(lib.resolve(), gs.root.resolve()),
                                       "absolute": str(lib.resolve()), "sha256": sha256_file(lib)}
        assert not Path(m["plugin_library"]["path"]).is_absolute()
        from pipeline.backend.tensorrt import plugins as trt_plugins

        assert trt_plugins.for_graph_set(gs).resolve() == lib.resolve()
    else:
        assert m["plugin_library"] is None

    want = {e.name: e for e in src.batch(4).entries()}
    got = {e.name: e for e in gs.batch(4).entries()}
    assert list(got) == ["stage0", "stage1", "stage2", "stage3", "fused", "teacher"] == list(want)
    for n, e in got.items():
        g = want[n]
        assert e.file == f"b4/{n}.plan" and e.info["source"] == {"graph": g.file, "sha256": g.sha256, "kind": src.kind}
        assert [(t.name, t.shape) for t in e.inputs] == [(t.name, t.shape) for t in g.inputs]
        assert [(t.name, t.shape) for t in e.outputs] == [(t.name, t.shape) for t in g.outputs]
        assert e.index == g.index and e.keep_count == g.keep_count and e.plugin_nodes == g.plugin_nodes
        header = read_plan_header(e.path)
        assert (header.backend, header.version_str) == ("tensorrt-rtx", rtx.__version__)
        assert header.fields["compute_capabilities"] == sms and header.fields["plan_size"] == e.info["bytes"]
        assert e.info["build_seconds"] >= 0 and e.info["cache"]["status"] in ("built", "reused")

        report = layer_report(r, n)
        s = report["summary"]
        assert s == {**s, **e.info["layer_summary"]}
        assert report["graph"] == {"path": g.file, "sha256": g.sha256}
        assert "skipped" in report["engine_inspector"]  # no GPU here: said why
        assert sum(s["layer_types"].values()) == s["layers"] == len(report["layers"])
        assert s["tensor_dtypes"]["float32"] > 0 and set(report["tensors"]) >= {t.name for t in e.outputs}
        # the DvitTopKGather nodes became plugin layers, one per pruning point in the graph, none elsewhere
        assert s["plugin_layers"] == g.plugin_nodes == (0 if not plugin or n in ("stage0", "teacher")
                                                        else 3 if n == "fused" else 1)
        assert ("TOPK" in s["layer_types"]) == (not plugin and n not in ("stage0", "teacher"))
        if n == "teacher":
            continue
        stage_p = [precisions[e.index]] if e.index is not None else precisions
        assert (s["qdq_layers"] > 0) == ("int8" in stage_p), (n, stage_p, s)
        assert (s["int8_tensors"] > 0) == ("int8" in stage_p), (n, stage_p, s)
        assert (s["half_tensors"] > 0) == ("fp16" in stage_p), (n, stage_p, s)
        assert bool(e.info["notes"]) == ("int8" in stage_p)

    # `dvit report` reads the layer reports beside the engines
    from pipeline.report.engines import parse_layer_report

    parsed = parse_layer_report(layer_report(r, "stage1"))
    assert parsed["layers"] == got["stage1"].info["layer_summary"]["layers"]
    assert ("fp16" in parsed["precisions"]) == (precisions[1] == "fp16")


def test_every_batch_size_by_default_and_the_engines_load_back(sets: dict[str, Path], tmp_path: Path) -> None:
    r = build_engines(sets["fp32"], TARGET, tmp_path / "all", cache_dir=sets["root"] / "engine-cache",
                      progress=False, plugin_search=NO_SEARCH)
    assert r.engines.batch_sizes == [1, 4] and r.built + r.reused == 12
    b1 = r.engines.batch(1)
    assert b1.stages[1].inputs[0].shape == (1, 50, 32) and b1.fused.output_names[0] == "logits"
    # what a device does next: the runtime takes the plan (deserializing needs a GPU; its header check does not)
    runtime = rtx.Runtime(rtx.Logger(rtx.Logger.ERROR))
    assert runtime.engine_header_size == 64


# ---------------------------------------------------------------- the engine cache
def _change_graph(src: Path, dst: Path, rel: str) -> None:
    """A valid graph set differing from `src` in one graph (its doc string), the manifest updated to match."""
    import onnx

    shutil.copytree(src, dst)
    model = onnx.load(dst / rel)
    model.doc_string = "changed by test_build"
    onnx.save(model, dst / rel)
    m = json.loads((dst / "manifest.json").read_text())
    for g in m["graphs"].values():
        for e in [*g["stages"], g["fused"], g["teacher"]]:
            if e and e["file"] == rel:
                e["sha256"], e["bytes"] = sha256_file(dst / rel), (dst / rel).stat().st_size
    (dst / "manifest.json").write_text(json.dumps(m))


def _statuses(r: BuildResult) -> dict[str, str]:
    return {e.name: e.info["cache"]["status"] for e in r.engines.batch(4).entries()}


def test_cache_reuses_a_matching_engine_and_rebuilds_any_other(sets: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"

    def build(graphs: Path, out: str, **kw) -> BuildResult:
        return build_engines(graphs, TARGET, tmp_path / out, batch_sizes=(4,), cache_dir=cache, progress=False,
                             plugin_search=NO_SEARCH, **kw)

    first = build(sets["fp32"], "first")
    assert (first.built, first.reused) == (6, 0) and first.engines.manifest["cache"]["built"] == 6
    assert len(list(cache.glob("*.plan"))) == 6 and len(list(cache.glob("*.json"))) == 6

    # the same build again, through the command line: everything reused, byte for byte
    parser = argparse.ArgumentParser()
    from pipeline import build as stage

    stage.configure(parser)
    args = parser.parse_args(["--graphs", str(sets["fp32"]), "--target", TARGET, "--out", str(tmp_path / "again"),
                              "--batch-sizes", "4", "--cache-dir", str(cache), "--no-progress"])
    assert stage.main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {tmp_path / 'again'}: 6 engines") and "0 built, 6 reused" in line, line
    again = GraphSet.load(tmp_path / "again", ("engine",))
    assert again.manifest["cache"] == {"dir": str(cache.resolve()), "built": 0, "reused": 6}
    for a, b in zip(first.engines.batch(4).entries(), again.batch(4).entries(), strict=True):
        assert a.sha256 == b.sha256 and b.info["cache"] == {"status": "reused", "key": a.info["cache"]["key"]}
        assert b.info["build_seconds"] == a.info["build_seconds"]  # the time the cached engine took to build

    # one graph changed: only its engine is rebuilt
    _change_graph(sets["fp32"], tmp_path / "changed-graphs", "b4/stage2.onnx")
    changed = build(tmp_path / "changed-graphs", "changed")
    assert _statuses(changed) == {**{n: "reused" for n in _statuses(first)}, "stage2": "built"}

    # another builder setting (optimisation level 0, the target copied): everything rebuilt
    targets = tmp_path / "targets"
    targets.mkdir()
    text = (REPO / "targets" / f"{TARGET}.toml").read_text()
    (targets / f"{TARGET}.toml").write_text(text.replace("builder_optimization_level = 3",
                                                         "builder_optimization_level = 0"))
    level0 = build(sets["fp32"], "level0", targets_dir=targets)
    assert (level0.built, level0.reused) == (6, 0)
    assert level0.engines.manifest["build"]["builder_optimization_level"] == 0

    # a damaged cache entry is never used: rebuilt, and the build says so
    key = first.engines.batch(4).stages[1].info["cache"]["key"]
    EngineCache(cache).plan_path(key).write_bytes(b"vtrt" + bytes(100))
    repaired = build(sets["fp32"], "repaired")
    assert _statuses(repaired)["stage1"] == "built" and (repaired.built, repaired.reused) == (1, 5)
    assert read_plan_header(repaired.engines.batch(4).stages[1].path).backend == "tensorrt-rtx"
    hit, why = EngineCache(cache).lookup(key, json.loads(EngineCache(cache).record_path(key).read_text())["parts"])
    assert hit is not None and why is None  # the entry was replaced by the rebuilt engine
    assert any("does not match its record" in n for n in repaired.notes)


def test_cache_rebuilds_plugin_engines_after_the_plugin_library_changes(sets: dict[str, Path], plugin_lib: Path,
                                                                        tmp_path: Path) -> None:
    """In fresh processes (a process registers one plugin library for good): the same library reuses every engine,
    a changed one rebuilds exactly the engines holding plugin layers."""
    cache = tmp_path / "cache"
    changed = tmp_path / "libdvit_trt_plugins.so"
    shutil.copyfile(plugin_lib, changed)
    with open(changed, "ab") as f:
        f.write(b"\0dvit test: a different build of the library\0")
    counts = {}
    for run, lib in (("first", plugin_lib), ("same", plugin_lib), ("changed", changed)):
        r = run_blocked("build", (), "--graphs", str(sets["fp32-plugin"]), "--target", TARGET, "--out",
                        str(tmp_path / run), "--batch-sizes", "4", "--cache-dir", str(cache), "--plugin-lib", str(lib),
                        "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
        gs = GraphSet.load(tmp_path / run, ("engine",))
        assert gs.manifest["plugin_library"]["sha256"] == sha256_file(lib)
        counts[run] = (gs.manifest["cache"]["built"], gs.manifest["cache"]["reused"], _statuses_of(gs))
    assert counts["first"][:2] == (6, 0) and counts["same"][:2] == (0, 6)
    assert counts["changed"][:2] == (4, 2)
    assert counts["changed"][2] == {"stage0": "reused", "stage1": "built", "stage2": "built", "stage3": "built",
                                    "fused": "built", "teacher": "reused"}


def _statuses_of(gs: GraphSet) -> dict[str, str]:
    return {e.name: e.info["cache"]["status"] for e in gs.batch(4).entries()}


@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_timing_cache_is_written_under_the_lock_and_read_back(sets: dict[str, Path], tmp_path: Path) -> None:
    """Full TensorRT keeps kernel timings in the cache folder between builds. Without full TensorRT here, the same
    code runs through TensorRT-RTX's own timing-cache API (deprecated there, a no-op for its builds) with the
    capability forced on: the first build writes the file under the lock, the next one reads and merges it. Whether
    the timings speed up a full TensorRT build is not tested here."""
    from dataclasses import replace

    from pipeline.backend import tensorrt as trt_backend
    from pipeline.build import _Builder, placement
    from pipeline.build.cache import LOCK_NAME

    b = trt_backend.load("tensorrt-rtx")
    forced = replace(b, caps={**b.caps, "timing_cache": True})
    tgt = load_target(TARGET)
    settings = trt_backend.BuildSettings.from_target(tgt)
    cache = EngineCache(tmp_path / "cache")
    src = GraphSet.load(sets["fp32"])
    path = cache.timing_cache_path(b.name, b.version, list(tgt.compute_capabilities))
    for i in (0, 1):  # two graphs: each run builds (a reused engine leaves the timing cache alone)
        builder = _Builder(forced, tgt, settings, list(tgt.compute_capabilities), cache, None, (False, "no GPU"), [],
                           placement.plan(src, [1], None))
        assert builder.timing is not None and not any("timing cache" in n for n in builder.notes)
        (tmp_path / f"run{i}").mkdir()
        entry = builder.engine(src, src.batch(1).stages[i], tmp_path / f"run{i}")
        assert entry["cache"]["status"] == "built"
        builder.save_timing_cache()
        assert path.is_file() and path.stat().st_size > 0 and (cache.root / LOCK_NAME).is_file()


# ---------------------------------------------------------------- bad input: one line, nothing written
def test_plugin_nodes_without_a_plugin_library_name_make_plugins(sets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "engines"
    with pytest.raises(DvitError) as e:
        build_engines(sets["fp32-plugin"], TARGET, out, plugin_search=NO_SEARCH, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "make plugins" in msg and "--plugin-lib" in msg and "12 DvitTopKGather" in msg, msg
    with pytest.raises(DvitError, match=r"--plugin-lib .*no-such\.so does not exist: build it with `make plugins`"):
        build_engines(sets["fp32-plugin"], TARGET, out, plugin_lib=tmp_path / "no-such.so", progress=False)
    assert nothing_written(out)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="full TensorRT is installed here: a Jetson target's backend would load")
def test_an_rtx_backend_asked_for_a_jetson_target_is_one_line(sets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "engines"
    r = run_blocked("build", (), "--graphs", str(sets["fp32"]), "--target", "orin-nano", "--out", str(out),
                    "--no-progress")
    err = r.stderr.strip()
    assert r.returncode == 2 and err.count("\n") == 0, err
    assert err.startswith("dvit build: error: target orin-nano is a Jetson") and "TensorRT-RTX" in err, err
    assert "run `dvit build --target orin-nano` on the Jetson" in err
    assert nothing_written(out)


def test_a_tampered_graph_set_is_refused(sets: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(sets["fp16"], copy)
    graph = copy / "b4" / "stage1.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    out = tmp_path / "engines"
    with pytest.raises(ManifestError, match="stage1.onnx does not match the hash in .*: re-run the stage") as e:
        build_engines(copy, TARGET, out, progress=False)
    assert "\n" not in str(e.value) and nothing_written(out)


def test_other_bad_input_is_one_line(sets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "engines"
    with pytest.raises(DvitError, match="has no batch size 8 .*it has 1, 4"):
        build_engines(sets["fp32"], TARGET, out, batch_sizes=(8,), progress=False)
    with pytest.raises(DvitError, match="unknown target 'desktop-rtz' .*did you mean desktop-rtx"):
        build_engines(sets["fp32"], "desktop-rtz", out, progress=False)
    with pytest.raises(DvitError, match="is a 'engine' graph set, but this command takes 'export' or 'precision' or "
                                        "'plugin'"):
        build_engines(engines(sets, "fp32", None).out, TARGET, out, progress=False)
    with pytest.raises(DvitError, match="TensorRT-RTX ignores DLA|has no DLA"):
        build_engines(sets["fp32"], TARGET, out, use_dla=True, progress=False)
    assert nothing_written(out)
    out.mkdir()
    with pytest.raises(DvitError, match="already exists: remove it or pass --overwrite"):
        build_engines(sets["fp32"], TARGET, out, progress=False)
    assert dvit(["build", "--graphs", str(sets["fp32"]), "--target", TARGET, "--out", str(tmp_path / "o"),
                 "--batch-sizes", "4,x"]) == 2


# ---------------------------------------------------------------- the device side
def test_builds_without_torch_or_onnx_and_says_when_tensorrt_is_absent(sets: dict[str, Path], tmp_path: Path) -> None:
    """A Jetson has neither torch, timm, ModelOpt nor onnx: the build needs none of them. Without TensorRT (its
    import made to fail in a fresh interpreter: a real absence) it stops with the install hint."""
    out = tmp_path / "device"
    r = run_blocked("build", HEAVY, "--graphs", str(sets["mixed-plugin"]), "--target", TARGET, "--out",
                    str(out), "--batch-sizes", "1", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                    "--plugin-lib", str(sets["root"] / "no-such.so"))
    assert r.returncode == 2 and "does not exist: build it with `make plugins`" in r.stderr, r.stderr[-2000:]
    r = run_blocked("build", HEAVY, "--graphs", str(sets["mixed"]), "--target", TARGET, "--out", str(out),
                    "--batch-sizes", "1", "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0].startswith(f"wrote {out}: 6 engines (batch sizes 1; fp16,int8,int8,fp16)")
    assert "imported: []" in r.stdout and "note: TensorRT-RTX" in r.stderr
    assert GraphSet.load(out, ("engine",)).batch_sizes == [1]

    out2 = tmp_path / "no-trt"
    r = run_blocked("build", (*HEAVY, "tensorrt_rtx", "tensorrt_rtx_libs", "tensorrt"), "--graphs",
                    str(sets["fp32"]), "--target", TARGET, "--out", str(out2), "--no-progress")
    err = r.stderr.strip()
    assert r.returncode == 2 and err.count("\n") == 0, err
    assert err.startswith("dvit build: error: TensorRT-RTX is not installed (no Python module tensorrt_rtx): "
                          "install it with `pip install tensorrt-rtx-cu13`"), err
    assert nothing_written(out2)


def test_help_explains() -> None:
    r = subprocess.run([sys.executable, "-c", "from pipeline.cli import main; main(['build', '--help'])"], cwd=REPO,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0
    for words in ("--graphs DIR", "--target NAME", "--plugin-lib PATH", "--batch-sizes", "--cache-dir",
                  "--dla, --no-dla", "--no-progress", "strongly typed", "reused"):
        assert words in " ".join(r.stdout.split()), words
