"""Every stage for the spatially sparsified families (issue 18): a reduced DynamicCNN (ConvNeXt) and a reduced
DynamicSwin through the command line, as tests/test_model_zoo_stages.py runs the token-pruning families.

The reduced configurations are the small presets (pipeline/spatial/config.py: convnext-fmnist, swin-fmnist: the
official code path at 1x64x64, a 4x4 third-stage map of 16 positions, 11/7/4 on the slow path at rho 0.7, the
official rounding of rho - 0.2), with 4 classes. Weights are the models' own seeded initialisation, a student and
its dense teacher saved with checkpoint.save_checkpoint (training is tests/test_train_spatial.py's); the images are
a small tree of real grey PNG files with texture (flat images would make whole regions of the map tie).

What the contract says for these families and what is checked here: stage i >= 1 takes `features_i`, the third
stage's whole map; `kept_indices_i` are positions of that map (absolute, each location ranking all of them), equal
to PyTorch's; the plugin pass leaves the graphs to TensorRT's native TopK, GatherElements and ScatterElements; the
dense teacher's nodes carry the student's /stageN/ prefixes; precision keeps the ranking FP32; TensorRT-RTX builds
the FP32 and FP16 engines; validate, latency, reference and report run unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from test_model_zoo_stages import BATCH, BATCHES, CLASSES, PRECISIONS, TARGET, Run, dvit, ok, ops

from pipeline import onnx_utils, precision
from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.checkpoint import save_checkpoint
from pipeline.graphset import GraphSet
from pipeline.spatial.config import spatial_config
from pipeline.spatial.load import build_spatial

PRESETS = {"convnext": "convnext-fmnist", "swin": "swin-fmnist"}
KEEP_COUNTS = [11, 7, 4]  # int(16 * r) for r = 0.7, 0.7 - 0.2 (= 0.4999...), 0.7 - 0.4: the official rounding
SELECTION_OPS = ("TopK", "GatherElements", "ScatterElements")


def write_textured_tree(root: Path, per_class: int, seed: int) -> None:
    """Grey 64x64 PNGs of noise, darker per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.integers(0, 256, (64, 64)) // (c + 1)).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i}.png")


class SpatialRun(Run):
    """Run (tests/test_model_zoo_stages.py) with a spatial student and teacher; every stage command is the same."""

    def __init__(self, family: str, root: Path) -> None:
        self.family, self.root = family, root
        self.cfg = spatial_config(PRESETS[family], num_classes=CLASSES)  # type: ignore[assignment]
        self.data = root / "data"
        self.printed: dict[str, str] = {}
        self._done: dict[str, Any] = {}

    def checkpoints(self) -> tuple[Path, Path]:
        def make() -> tuple[Path, Path]:
            write_textured_tree(self.data / "train", 4, seed=0)
            write_textured_tree(self.data / "val", 2, seed=1)
            torch.manual_seed(5)
            student = save_checkpoint(self.root / "student.pt", build_spatial(self.cfg).eval())  # type: ignore[arg-type]
            teacher = save_checkpoint(self.root / "teacher.pt", build_spatial(self.cfg.as_dense()).eval())  # type: ignore[attr-defined]
            return student, teacher
        return self._once("checkpoints", make)  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=list(PRESETS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SpatialRun:
    return SpatialRun(request.param, tmp_path_factory.mktemp(f"spatial-{request.param}"))


def map_shape(run: SpatialRun, batch: int) -> tuple[int, ...]:
    return (batch, 64, 4, 4) if run.family == "convnext" else (batch, 16, 64)


# ---------------------------------------------------------------- export
def test_export_follows_the_contract_with_feature_maps(run: SpatialRun) -> None:
    out = run.export()
    printed = run.printed["export"]
    assert "exported 12 graphs" in printed and f"slow-path positions {KEEP_COUNTS} of 16" in printed, printed
    gs = GraphSet.load(out, ("export",))
    assert gs.config == run.cfg and gs.manifest["keep_counts"] == KEEP_COUNTS
    assert gs.manifest["teacher_config"] == run.cfg.as_dense().to_dict()  # type: ignore[attr-defined]
    b = gs.batch(BATCH)
    for st in b.stages:
        if st.index:
            assert [(t.name, t.shape) for t in st.inputs] == [(f"features_{st.index}", map_shape(run, BATCH))]
            kept = next(t for t in st.outputs if t.name == f"kept_indices_{st.index}")
            assert kept.shape == (BATCH, KEEP_COUNTS[st.index - 1])
    for entry in b.entries():
        counted = ops(entry.path)
        want = {"stage0": (0, 0, 0), "teacher": (0, 0, 0), "fused": (3, 6, 3)}.get(entry.name, (1, 2, 1))
        assert tuple(counted[o] for o in SELECTION_OPS) == want, (entry.name, counted)
    # the teacher is split at the student's pruning locations: every node under a /stageN/ prefix
    assert b.teacher is not None
    counts, orphans = onnx_utils.stage_attribution(onnx.load(str(b.teacher.path)))
    assert sorted(counts) == [0, 1, 2, 3] and not orphans
    files = sorted(out.glob("b*/*.onnx"))
    text = ok(("scan", *files))
    assert len(files) == 12 and text.count(": OK") == 12, text


def test_kept_indices_are_absolute_positions_equal_to_pytorch(run: SpatialRun) -> None:
    """The fused graph's kept_indices_i are the slow positions of the whole map at location i, PyTorch's own
    (forward_inference), not indices into the previous location's selection."""
    from pipeline.checkpoint import load_model

    gs = GraphSet.load(run.export(), ("export",))
    model = load_model(run.checkpoints()[0])
    images = torch.randn(BATCH, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    got = OnnxRuntimeRunner(onnx.load(str(gs.batch(BATCH).fused.path)), "fused").infer({"images": images.numpy()})
    with torch.no_grad():
        want = model.forward_inference(images)
    for i, pos in enumerate(want.kept_positions, start=1):
        assert np.array_equal(got[f"kept_indices_{i}"], pos.numpy()), i
    # each location ranks afresh: a later location keeps positions the earlier one did not
    first, last = set(got["kept_indices_1"][0].tolist()), set(got["kept_indices_3"][0].tolist())
    assert len(last) == KEEP_COUNTS[2] and last <= set(range(16)) and first != last
    assert float(np.abs(got["logits"] - want.logits.numpy()).max()) < 1e-4


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("key", list(PRECISIONS))
def test_precision_keeps_the_ranking_fp32(run: SpatialRun, key: str) -> None:
    out = run.precision(key)
    want = PRECISIONS[key].split(",") * (4 if key != "mixed" else 1)
    gs = GraphSet.load(out, ("precision",))
    assert gs.precision == want and gs.config == run.cfg
    fused = onnx.load(str(gs.batch(BATCH).fused.path))
    protected = precision.pruning_nodes(onnx.load(str(GraphSet.load(run.export()).batch(BATCH).fused.path)))
    assert protected and precision.fp32_violations(fused, protected) == []
    summary = precision.graph_summary(fused)
    for i, p in enumerate(want):
        assert (summary[str(i)].get("fp16_nodes", 0) > 5) == (p == "fp16"), (i, p, summary)


# ---------------------------------------------------------------- plugin pass
def test_plugin_pass_leaves_native_selection(run: SpatialRun) -> None:
    out = run.plugin("export")
    assert "native TopK" in run.printed["plugin-export"] and "12 graphs copied unchanged" in run.printed["plugin-export"]
    gs, src = GraphSet.load(out, ("plugin",)), GraphSet.load(run.export())
    assert gs.manifest["native_selection"] and gs.manifest["replaced"]["total"] == 0
    for a, b in zip(gs.entries(), src.entries(), strict=True):
        assert a.sha256 == b.sha256 and a.plugin_nodes == 0


# ---------------------------------------------------------------- engines
@pytest.mark.parametrize("src", ["export", "fp16"])
def test_tensorrt_rtx_engines(run: SpatialRun, src: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")
    out = run.root / f"engines-{src}"
    if not out.exists():
        ok(("build", "--graphs", run.graphs(src), "--target", TARGET, "--out", out, "--batch-sizes", str(BATCH),
            "--cache-dir", run.root / "engine-cache", "--no-progress"))
    gs = GraphSet.load(out, ("engine",))
    assert gs.config == run.cfg and gs.precision == GraphSet.load(run.graphs(src)).precision
    entries = {e.name: e for e in gs.batch(BATCH).entries()}
    assert list(entries) == ["stage0", "stage1", "stage2", "stage3", "fused", "teacher"]
    for name, e in entries.items():
        s = e.info["layer_summary"]
        assert e.path.is_file() and e.info["bytes"] == e.path.stat().st_size > 0 and s["plugin_layers"] == 0, name
        assert (s["half_tensors"] > 0) == (src == "fp16"), (name, s)


# ---------------------------------------------------------------- validate, latency, report
def test_validate_fp32_matches_pytorch(run: SpatialRun) -> None:
    r = run.validate("export", require="auto")
    assert r["requirements"]["passed"] and r["dataset"]["samples"] == 8
    for kind in ("chain", "fused"):
        assert r[kind]["logits"]["max_abs"] < 1e-4 and r[kind]["agreement"] == 1.0
        assert [k["identical"] for k in r[kind]["kept"]] == [1.0, 1.0, 1.0], r[kind]["kept"]
    assert r["chain"]["boundaries"] == []  # token-level boundary metrics are token pruning's (see the note)
    assert r["batch_consistency"]["chain"]["logits_max_abs"] < 1e-4


def test_validate_fp16_stays_close(run: SpatialRun) -> None:
    r = run.validate("fp16")
    for kind in ("chain", "fused"):
        err = r[kind]["logits"]["max_abs"]
        assert 0 < err < 0.05 and min(k["iou_mean"] for k in r[kind]["kept"]) >= 0.9, (kind, r[kind])


def test_latency_counts_fewer_flops_when_pruned(run: SpatialRun) -> None:
    r = run.latency()
    assert 0 < r["flops"]["pruned"] < r["flops"]["dense"] and r["flops"]["ratio"] < 1, r["flops"]
    pruned = [x for x in r["runs"] if x.get("model") == "pruned"]
    assert {(x["batch"], x["mode"]) for x in pruned} == {(b, m) for b in BATCHES for m in ("chain", "fused")}, pruned
    assert all(x["end_to_end"]["p50_ms"] > 0 for x in pruned)


def test_reference_and_report_picture_the_slow_positions(run: SpatialRun) -> None:
    ref = run.reference()
    v = run.validate("export", require="auto")
    out = run.root / "report"
    ok(("report", "--validation", v["path"], "--latency", run.latency()["path"], "--reference", ref, "--out", out))
    data = json.loads((out / "report.json").read_text())
    title = {"convnext": "DynamicCNN (ConvNeXt)", "swin": "DynamicSwin"}[run.family]
    assert data["title"].startswith(f"{title} deployment report")
    md = (out / "report.md").read_text()
    assert "Positions on the slow path per location:** 16 \u2192 11 \u2192 7 \u2192 4" in md, md[:800]
    rec = np.load(ref)
    masks = data["token_masks"]
    assert masks["grid"] == 4 and masks["patch_size"] == 16
    for img in masks["images"]:
        assert [len(k) for k in img["kept"]] == KEEP_COUNTS
        for i, kept in enumerate(img["kept"], start=1):  # absolute positions, as recorded
            assert kept == sorted(rec[f"out/kept_indices_{i}"][img["index"]].tolist())


# ---------------------------------------------------------------- bad input
def one_line_error(argv: tuple[str | Path, ...], *needles: str) -> str:
    rc, _, err = dvit(*argv)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and lines[0].startswith(f"dvit {argv[0]}: error:"), (rc, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_a_convnext_checkpoint_given_as_swin_is_refused(tmp_path: Path) -> None:
    """An official-layout ConvNeXt file named as a Swin model: one line naming both, nothing written."""
    sd = build_spatial(spatial_config("convnext-fmnist")).state_dict()
    path = tmp_path / "convnext_release.pth"
    torch.save({"model": sd}, path)
    one_line_error(("export", "--checkpoint", path, "--model", "swin-t", "--out", tmp_path / "out", "--no-progress"),
                   "ConvNeXt", "Swin", "--model")
    assert not (tmp_path / "out").exists()


def test_rho_at_or_below_0_4_is_refused(run: SpatialRun, tmp_path: Path) -> None:
    student, _ = run.checkpoints()
    one_line_error(("export", "--checkpoint", student, "--keep-ratio", "0.4", "--out", tmp_path / "out"),
                   "--keep-ratio above 0.4")
    assert not (tmp_path / "out").exists()


def test_our_spatial_checkpoint_asked_for_as_deit_is_refused(run: SpatialRun, tmp_path: Path) -> None:
    student, _ = run.checkpoints()
    one_line_error(("export", "--checkpoint", student, "--model", "deit-s", "--out", tmp_path / "out"),
                   PRESETS[run.family], "--model")


def test_evaluate_refits_fashion_mnist_for_a_64x64_model(tmp_path: Path) -> None:
    """`dvit evaluate` of a convnext-fmnist checkpoint on the default data: the 1x28x28 test images are refitted to
    1x64x64 as training fitted them (it used to stop on a shape mismatch)."""
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "cnn.pt", build_spatial(spatial_config("convnext-fmnist")).eval())
    rc, _, err = dvit("evaluate", path, "--limit", "32", "--no-speed", "--json", tmp_path / "e.json")
    assert rc == 0, err
    row = json.loads((tmp_path / "e.json").read_text())[0]
    assert 0 <= row["top1"] <= 100 and row["keep_ratio"] == 0.7


def test_a_spatial_teacher_for_a_vit_student_is_refused(tmp_path: Path) -> None:
    from pipeline.checkpoint import load_teacher
    from pipeline.config import model_config
    from pipeline.errors import CheckpointError

    path = save_checkpoint(tmp_path / "t.pt", build_spatial(spatial_config("convnext-fmnist", dense=True)).eval())
    with pytest.raises(CheckpointError, match="ConvNeXt") as e:
        load_teacher(path, model_config("fmnist_tiny"))
    assert "\n" not in str(e.value) and "--teacher" in str(e.value)
