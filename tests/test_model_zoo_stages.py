"""Every stage for every family of the zoo (issue 17): a reduced DeiT-S and a reduced LV-ViT-S through the command line
as a user runs them (the Makefile's export, precision, plugin-pass, engines, reference, validate, latency and report
targets).

The reduced configurations keep each family's code path (DeiT: one-convolution patch embedding, qkv bias, MLP
ratio 4; LV-ViT: the '4_2' convolutional stem with BatchNorm, skip_lam 2, no qkv bias, MLP ratio 3, the auxiliary
token head) at a small size: width 96 (6 heads, as both official S models), 4 blocks pruned before blocks 1, 2, 3,
4 classes of 64x64 RGB images (16 patch tokens kept as 11, 7, 5). Weights are random, drawn like trained ones under
the official keys (tests/official_zoo.py), a student and its dense teacher saved with checkpoint.save_checkpoint
(training is covered elsewhere); the images are a small ImageNet-style tree of real PNG files.

Per family, in stage order (each test runs the stages it needs first, once per module):
  export (with the teacher), `dvit scan`; precision fp16, int8 and fp16,int8,int8,fp16; the plugin pass on all four;
  TensorRT-RTX engines of the FP32 and FP16 plugin sets (skipped, saying why, without tensorrt_rtx or a compiler for
  the plugin library); validate (ONNX Runtime against PyTorch) of export, precision and plugin sets; latency (ONNX
  Runtime, a few iterations: figures are checked for their structure and the FLOP count, never for speed); reference
  and report.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from official_zoo import official_release
from plugin_build_helpers import build_plugin, header_set_id, headers_major, trt_include_dirs
from test_precision import qdq_per_stage
from train_data import write_image_tree

from pipeline import cli, precision
from pipeline.checkpoint import save_checkpoint
from pipeline.config import ModelConfig, model_config
from pipeline.graphset import GraphSet
from pipeline.model import DynamicViT

FAMILIES = {"deit": "deit-s", "lvvit": "lvvit-s"}
CLASSES = 4
BATCHES = (1, 2)
BATCH = 2  # what validate and the engine build run
PRECISIONS = {"fp16": "fp16", "int8": "int8", "mixed": "fp16,int8,int8,fp16"}
TARGET = "desktop-rtx"


def reduced_config(family: str) -> ModelConfig:
    name = FAMILIES[family]
    return model_config(name).replace(name=f"{name}-reduced", img_size=64, embed_dim=96, depth=4, pruning_loc=(1, 2, 3),
                                      num_classes=CLASSES)


def dvit(*argv: str | Path) -> tuple[int, str, str]:
    """`dvit ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def ok(argv: tuple[str | Path, ...]) -> str:
    rc, out, err = dvit(*argv)
    assert rc == 0, f"dvit {' '.join(map(str, argv[:3]))} ... exited {rc}:\n{err[-3000:]}\n{out[-2000:]}"
    return out


class Run:
    """One family's artifacts under `root`, each stage run once, on demand, after the stages it reads."""

    def __init__(self, family: str, root: Path) -> None:
        self.family, self.root, self.cfg = family, root, reduced_config(family)
        self.data = root / "data"
        self.printed: dict[str, str] = {}  # what a command printed on stdout, by stage
        self._done: dict[str, Any] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._done:
            self._done[key] = make()
        return self._done[key]

    def checkpoints(self) -> tuple[Path, Path]:
        def make() -> tuple[Path, Path]:
            write_image_tree(self.data / "train", 8, classes=CLASSES, size=64, mode="RGB", seed=0)
            write_image_tree(self.data / "val", 4, classes=CLASSES, size=64, mode="RGB", seed=1)
            paths = []
            for cfg, name, seed in ((self.cfg, "student.pt", 3), (self.cfg.as_dense(), "teacher.pt", 4)):
                model = DynamicViT(cfg)
                model.load_state_dict(official_release(cfg, seed=seed))  # strict: the official keys are ours
                paths.append(save_checkpoint(self.root / name, model.eval()))
            return paths[0], paths[1]
        return self._once("checkpoints", make)

    def export(self) -> Path:
        def make() -> Path:
            student, teacher = self.checkpoints()
            out = self.root / "export"
            self.printed["export"] = ok(("export", "--checkpoint", student, "--teacher", teacher, "--data", self.data,
                                         "--batch-sizes", ",".join(map(str, BATCHES)), "--verify-images", "4",
                                         "--out", out, "--no-progress"))
            return out
        return self._once("export", make)

    def precision(self, key: str) -> Path:
        def make() -> Path:
            out = self.root / f"precision-{key}"
            ok(("precision", "--graphs", self.export(), "--precision", PRECISIONS[key], "--data", self.data,
                "--calib-size", "16", "--cache-dir", self.root / "calibration", "--out", out, "--no-progress"))
            return out
        return self._once(f"precision-{key}", make)

    def graphs(self, name: str) -> Path:
        """'export', 'fp16', 'int8', 'mixed', or 'plugin-' + one of them."""
        if name.startswith("plugin-"):
            return self.plugin(name[len("plugin-"):])
        return self.export() if name == "export" else self.precision(name)

    def plugin(self, src: str) -> Path:
        def make() -> Path:
            out = self.root / f"plugin-{src}"
            self.printed[f"plugin-{src}"] = ok(("plugin-pass", "--graphs", self.graphs(src), "--out", out,
                                                "--no-progress"))
            return out
        return self._once(f"plugin-{src}", make)

    def engines(self, src: str, lib: Path) -> Path:
        def make() -> Path:
            out = self.root / f"engines-{src}"
            ok(("build", "--graphs", self.graphs(src), "--target", TARGET, "--out", out, "--plugin-lib", lib,
                "--batch-sizes", str(BATCH), "--cache-dir", self.root / "engine-cache", "--no-progress"))
            return out
        return self._once(f"engines-{src}", make)

    def validate(self, name: str, require: str | None = None) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            out = self.root / f"validate-{name}.json"
            ok(("validate", "--graphs", self.graphs(name), "--data", self.data, "--batch-size", str(BATCH), "--limit",
                "8", "--consistency-samples", "4", "--threads", "1", "--pool", "per-session", "--no-progress",
                "--json", out, *(("--require", require) if require else ())))
            return {"path": out, **json.loads(out.read_text())}
        return self._once(f"validate-{name}", make)

    def latency(self) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            out = self.root / "latency.json"
            ok(("latency", "--graphs", self.export(), "--batch-sizes", ",".join(map(str, BATCHES)), "--threads", "1",
                "--pool", "per-session", "--warmup-s", "0.01", "--duration-s", "0.02", "--min-iters", "2", "--rounds",
                "1", "--no-progress", "--json", out))
            return {"path": out, **json.loads(out.read_text())}
        return self._once("latency", make)

    def reference(self) -> Path:
        def make() -> Path:
            out = self.root / "reference.npz"
            ok(("reference", "--graphs", self.export(), "--data", self.data, "--limit", "8", "--threads", "1",
                "--no-progress", "--out", out))
            return out
        return self._once("reference", make)

    def built_engines(self) -> list[Path]:
        return [v for k, v in self._done.items() if k.startswith("engines-")]


@pytest.fixture(scope="module", params=list(FAMILIES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(request.param, tmp_path_factory.mktemp(f"zoo-{request.param}"))


@pytest.fixture(scope="session")
def plugin_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libdvit_trt_plugins.so against TensorRT 11.1's headers: the same session-wide build tests/test_build.py uses."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")
    dirs = trt_include_dirs()
    chosen = next((d for d in dirs if header_set_id(d) == "v11.1"), None) or next(
        (d for d in dirs if headers_major(d) >= 11), None)
    if chosen is None:
        pytest.skip(f"no TensorRT >= 11 headers to compile the plugin against (have: {dirs or 'none'}; expected "
                    "../shared/tensorrt-oss/v11.1/include or $DVIT_TRT_INCLUDE_DIRS)")
    return build_plugin(chosen, tmp_path_factory)["dir"] / "libdvit_trt_plugins.so"


def ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def expected_macs(cfg: ModelConfig, pruned: bool) -> int:
    """Multiply-accumulates of the MatMul, Gemm and Conv work of one image, counted here from the architecture (not
    from a graph): the patch embedding (LV-ViT: the 64-channel stem at half resolution, then the patch/2 projection),
    each block at the tokens it sees (qkv, q @ k^T, attn @ v, proj, fc1, fc2), the prediction modules on the tokens
    they score, the class head and LV-ViT's auxiliary head on the tokens left."""
    C, hidden, n = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.num_patches
    if cfg.family == "lvvit":
        side, w, half = cfg.img_size // 2, 64, cfg.patch_size // 2
        macs = side * side * w * (cfg.in_chans * 49 + 2 * w * 9) + n * C * w * half * half
    else:
        macs = n * C * cfg.in_chans * cfg.patch_size**2
    tokens = cfg.tokens_per_stage if pruned else [n + 1] * (len(cfg.pruning_loc) + 1)
    edges = [0, *cfg.pruning_loc, cfg.depth]
    for stage, (start, end) in enumerate(itertools.pairwise(edges)):
        if pruned and stage:
            scored = tokens[stage - 1] - 1  # the predictor scores the patch tokens entering the pruning point
            macs += scored * (C * C + C * (C // 2) + (C // 2) * (C // 4) + (C // 4) * 2)
        N = tokens[stage]
        macs += (end - start) * (N * (4 * C * C + 2 * C * hidden) + 2 * N * N * C)
    macs += C * cfg.num_classes
    if cfg.family == "lvvit":
        macs += (tokens[-1] - 1) * C * cfg.num_classes
    return macs


# ---------------------------------------------------------------- export
def test_export_with_teacher_and_scan(run: Run) -> None:
    out = run.export()
    cfg = run.cfg
    assert "exported 12 graphs" in run.printed["export"] and "all match PyTorch" in run.printed["export"]
    gs = GraphSet.load(out, ("export",))
    assert gs.config == cfg and gs.config.family == run.family and gs.batch_sizes == list(BATCHES)
    assert gs.manifest["keep_counts"] == [11, 7, 5] and gs.manifest["tokens_per_stage"] == [17, 12, 8, 6]
    assert gs.manifest["teacher_config"] == cfg.as_dense().to_dict()
    assert gs.manifest["preprocessing"]["channels"] == 3 and gs.manifest["preprocessing"]["input_size"] == [64, 64]
    assert gs.manifest["verification"]["data_source"]["source"] == f"folder:{run.data.resolve()}"
    b = gs.batch(BATCH)
    assert [s.name for s in b.stages] == ["stage0", "stage1", "stage2", "stage3"] and b.teacher is not None
    # the family's own operators in the graphs: LV-ViT's stem is four convolutions with its BatchNorms folded in,
    # its auxiliary head's maximum over the kept tokens a ReduceMax (in the last stage, the fused graph and the
    # teacher); DeiT has one convolution and no ReduceMax
    stem_convs, aux = (4, 1) if run.family == "lvvit" else (1, 0)
    for entry in b.entries():
        counted = ops(entry.path)
        assert "BatchNormalization" not in counted, entry.name
        assert counted["Conv"] == (stem_convs if entry.name in ("stage0", "fused", "teacher") else 0), entry.name
        assert counted["ReduceMax"] == (aux if entry.name in ("stage3", "fused", "teacher") else 0), entry.name
        assert counted["TopK"] == {"fused": 3, "teacher": 0, "stage0": 0}.get(entry.name, 1), entry.name
    # `dvit scan` (the Makefile's export target runs it on every graph): TensorRT parses every operator
    files = sorted(out.glob("b*/*.onnx"))
    text = ok(("scan", *files))
    assert len(files) == 12 and text.count(": OK") == 12, text


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("key", list(PRECISIONS))
def test_precision_fp16_int8_and_a_per_stage_mix(run: Run, key: str) -> None:
    out = run.precision(key)
    want = PRECISIONS[key].split(",") * (4 if key != "mixed" else 1)
    gs = GraphSet.load(out, ("precision",))
    assert gs.kind == "precision" and gs.precision == want and gs.config == run.cfg
    fused = onnx.load(str(gs.batch(BATCH).fused.path))
    qdq, summary = qdq_per_stage(fused), precision.graph_summary(fused)
    for i, p in enumerate(want):
        assert (qdq[i] > 0) == (p == "int8"), (i, p, dict(qdq))
        assert (summary[str(i)].get("fp16_nodes", 0) > 5) == (p == "fp16"), (i, p, summary)
    # the pruning decision (prediction modules, TopK) stays FP32 in every stage, whatever the stage's precision
    protected = precision.pruning_nodes(onnx.load(str(GraphSet.load(run.export()).batch(BATCH).fused.path)))
    assert protected and precision.fp32_violations(fused, protected) == []
    stage0 = onnx.load(str(gs.batch(BATCH).stages[0].path))
    producers = {o: n for n in stage0.graph.node for o in n.output}
    convs = [n for n in stage0.graph.node if n.op_type == "Conv"]
    assert len(convs) == (4 if run.family == "lvvit" else 1)
    for conv in convs:  # INT8: every convolution of the stem (BatchNorm folded) takes quantized input and weights
        fed = [producers[i].op_type if i in producers else "initializer" for i in conv.input[:2]]
        assert (fed == ["DequantizeLinear"] * 2) == (want[0] == "int8"), (conv.name, fed)


# ---------------------------------------------------------------- plugin pass
@pytest.mark.parametrize("src", ["export", *PRECISIONS])
def test_plugin_pass(run: Run, src: str) -> None:
    out = run.plugin(src)
    line = run.printed[f"plugin-{src}"]
    assert "replaced 12 TopK+gather pattern(s) with DvitTopKGather in 8 of 12 graphs" in line, line
    assert "outputs bitwise equal to the originals" in line, line
    gs = GraphSet.load(out, ("plugin",))
    assert gs.config == run.cfg and gs.precision == GraphSet.load(run.graphs(src)).precision
    for b in BATCHES:
        for entry in gs.batch(b).entries():
            counted = ops(entry.path)
            want = {"fused": 3, "teacher": 0, "stage0": 0}.get(entry.name, 1)
            assert counted["DvitTopKGather"] == entry.plugin_nodes == want and counted["TopK"] == 0, (b, entry.name)


# ---------------------------------------------------------------- engines
@pytest.mark.parametrize("src", ["export", "fp16"])
def test_tensorrt_rtx_engines_of_the_plugin_sets(run: Run, src: str, plugin_lib: Path) -> None:
    out = run.engines(f"plugin-{src}", plugin_lib)
    gs = GraphSet.load(out, ("engine",))
    source = GraphSet.load(run.plugin(src))
    assert gs.config == run.cfg and gs.precision == source.precision and gs.batch_sizes == [BATCH]
    assert gs.manifest["target"]["name"] == TARGET and gs.manifest["backend"]["backend"] == "tensorrt-rtx"
    entries = {e.name: e for e in gs.batch(BATCH).entries()}
    assert list(entries) == ["stage0", "stage1", "stage2", "stage3", "fused", "teacher"]
    for name, e in entries.items():
        s = e.info["layer_summary"]
        assert e.path.is_file() and e.info["bytes"] == e.path.stat().st_size > 0
        assert s["plugin_layers"] == e.plugin_nodes == {"fused": 3, "teacher": 0, "stage0": 0}.get(name, 1), name
        assert (s["half_tensors"] > 0) == (src == "fp16") and s["int8_tensors"] == 0, (name, s)


# ---------------------------------------------------------------- validate
@pytest.mark.parametrize("name", ["export", "plugin-export"])
def test_validate_fp32_sets_match_pytorch(run: Run, name: str) -> None:
    r = run.validate(name, require="auto")  # FP32 thresholds enforced: the command exits 1 when one is missed
    assert r["precision"] == ["fp32"] * 4 and r["requirements"]["profile"] == "fp32" and r["requirements"]["passed"]
    assert r["reference"]["matches_manifest"] and r["dataset"]["samples"] == 8
    for kind in ("chain", "fused"):
        assert r[kind]["logits"]["max_abs"] < 1e-4 and r[kind]["agreement"] == 1.0
        assert all(k["identical"] == 1.0 for k in r[kind]["kept"]), r[kind]["kept"]
    assert r["batch_consistency"]["batch_sizes"] == [BATCH, 1]
    assert r["batch_consistency"]["chain"]["logits_max_abs"] < 1e-4


@pytest.mark.parametrize("name", ["fp16", "plugin-fp16", "int8", "mixed"])
def test_validate_reduced_precision_sets(run: Run, name: str) -> None:
    """Random weights on 8 images of 4 classes: INT8 may flip a top-1 (one image is 12.5 points), so no accuracy
    threshold is enforced; FP16 stays close to PyTorch, and every set's stage chain agrees with its fused graph."""
    r = run.validate(name)
    assert r["precision"] == GraphSet.load(run.graphs(name)).precision and r["dataset"]["samples"] == 8
    for kind in ("chain", "fused"):
        err = r[kind]["logits"]["max_abs"]
        assert math.isfinite(err) and err > 0, (kind, err)  # reduced precision is not bit-exact
        if "int8" not in r["precision"]:
            assert err < 0.05 and min(k["iou_mean"] for k in r[kind]["kept"]) >= 0.9, (kind, r[kind])
    assert r["chain_vs_fused"]["agreement"] >= 0.75 and r["chain_vs_fused"]["logits_max_abs"] < 0.05, r["chain_vs_fused"]


# ---------------------------------------------------------------- latency
def test_latency(run: Run) -> None:
    r = run.latency()
    # the FLOP counter reads the graphs (stem, heads and all) as the architecture says: MACs x 2 at batch 1
    flops = r["flops"]
    assert flops["dense"] == 2 * expected_macs(run.cfg, pruned=False), flops
    assert flops["pruned"] == 2 * expected_macs(run.cfg, pruned=True), flops
    assert flops["ratio"] == pytest.approx(flops["pruned"] / flops["dense"]) and flops["ratio"] < 1
    modes = {(x["batch"], x["mode"]) for x in r["ratios"]}
    assert modes == {(b, m) for b in BATCHES for m in ("chain", "fused")}, modes
    for x in r["ratios"]:  # figures exist and are positive; their size is never asserted
        assert x["latency_ratio_p50"] > 0 and x["flops_ratio"] == flops["ratio"]
    assert r["graph_sets"][0]["model_config"] == run.cfg.to_dict()


# ---------------------------------------------------------------- report
def test_report(run: Run) -> None:
    validations = [run.validate("export", require="auto")["path"],
                   *(run.validate(n)["path"] for n in ("fp16", "int8", "mixed"))]
    engines = run.built_engines()
    out = run.root / "report"
    text = ok(("report", "--validation", *validations, "--latency", run.latency()["path"],
               *(("--engines", *engines) if engines else ()), "--reference", run.reference(), "--out", out))
    html = (out / "report.html").read_text()
    assert f"wrote {out / 'report.html'}" in text
    family = {"deit": "DeiT", "lvvit": "LV-ViT"}[run.cfg.family]
    assert f"DynamicViT-{family} deployment report: {run.cfg.name}" in html and run.cfg.name in (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["validations"]) == len(validations) and rep["token_masks"]["model"] == run.cfg.name
    assert rep["token_masks"]["images"] and len(rep["engines"]) == len(engines)
