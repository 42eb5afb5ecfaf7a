"""dvit precision: FP16 (AutoCast) and INT8 (ModelOpt Q/DQ) written into tiny exported graphs, per stage.

Tiny random model (depth 4, dim 32, pruning before blocks 1, 2, 3: four stages), real ORT sessions, real
ModelOpt calls on CPU, a few dozen Fashion-MNIST train images: seconds.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from pipeline import precision
from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.config import model_config
from pipeline.errors import DvitError
from pipeline.graphset import GraphSet
from pipeline.model import DynamicViT
from pipeline.precision import calibration

TINY = {"depth": 4, "embed_dim": 32, "num_heads": 2, "pruning_loc": (1, 2, 3)}


# ---------------------------------------------------------------- export fixture
def tiny_model(seed: int = 0) -> DynamicViT:
    """Random weights shaped like trained ones: non-zero biases and LayerNorm affines, and prediction modules
    whose keep scores are well apart (at the default init they all sit near log 0.5 and nearly tie)."""
    torch.manual_seed(seed)
    m = DynamicViT(model_config("fmnist_tiny").replace(**TINY)).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1.0, 0.1)
                mod.bias.normal_(0.0, 0.1)
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.1)
        for p in m.score_predictor.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5)
    return m


def make_tiny_export(root: Path, batch_sizes: tuple[int, ...] = (4, 1), seed: int = 0) -> tuple[Path, Path]:
    """(export dir, checkpoint) of the tiny model, written by `dvit export`'s API."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export

    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "student.pt"
    save_checkpoint(ckpt, tiny_model(seed))
    export(ckpt, root / "export", batch_sizes=batch_sizes, verify_images=4, progress=False)
    return root / "export", ckpt


# ---------------------------------------------------------------- graph inspection
def node_stage(name: str, default: int) -> int:
    s = precision.stage_of(name)
    return default if s is None else s


def qdq_per_stage(model: onnx.ModelProto, default: int = -1) -> Counter:
    return Counter(node_stage(n.name, default) for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))


def fp16_casts_per_stage(model: onnx.ModelProto, default: int = -1) -> Counter:
    return Counter(
        node_stage(n.name, default) for n in model.graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
    )


def io_fp32(model: onnx.ModelProto) -> bool:
    return all(v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64)
               for v in list(model.graph.input) + list(model.graph.output))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tiny")
    export, ckpt = make_tiny_export(root)
    return {"root": root, "export": export, "ckpt": ckpt, "cache": root / "cache"}


def build(tiny: dict, name: str, spec: str, **kw) -> Path:
    kw.setdefault("calib_size", 16)
    kw.setdefault("cache_dir", tiny["cache"])
    return precision.build_precision(tiny["export"], tiny["root"] / name, spec, **kw)


# ---------------------------------------------------------------- tests
def test_parse_precision() -> None:
    assert precision.parse_precision("fp16", 4) == ["fp16"] * 4
    assert precision.parse_precision("fp16,int8,INT8,fp32", 4) == ["fp16", "int8", "int8", "fp32"]
    with pytest.raises(DvitError, match="4 stages"):
        precision.parse_precision("fp16,int8", 4)
    with pytest.raises(DvitError, match="unknown precision 'bf8'"):
        precision.parse_precision("fp16,bf8,int8,fp16", 4)


def test_pruning_nodes_found_structurally(tiny: dict) -> None:
    """The score path is found from the TopK backwards even with the names stripped."""
    g = onnx.load(str(tiny["export"] / "b4" / "stage1.onnx"))
    named = precision.pruning_nodes(g)
    assert not any("blocks" in n for n in named)
    # the predictor's LayerNorm, its four Linear layers and the TopK are all reached from the TopK
    ops = Counter(n.op_type for n in g.graph.node if n.name in set(named))
    assert ops["TopK"] == 1 and ops["LayerNormalization"] == 1 and ops["MatMul"] == 4
    for i, n in enumerate(g.graph.node):
        n.name = f"n{i}"
    assert len(precision.pruning_nodes(g)) == len(named)
    fused = onnx.load(str(tiny["export"] / "b4" / "fused.onnx"))
    ops = Counter(n.op_type for n in fused.graph.node if n.name in set(precision.pruning_nodes(fused)))
    assert ops["TopK"] == 3 and ops["LayerNormalization"] == 3 and ops["MatMul"] == 12


def test_fp32_is_a_copy(tiny: dict) -> None:
    out = build(tiny, "fp32", "fp32")
    from pipeline.manifest import read_manifest

    m = read_manifest(out, "precision")
    e = read_manifest(tiny["export"], "export")
    assert m["precision"] == ["fp32"] * 4 and m["int8"] is None
    for b in e["graphs"]:
        for s_out, s_in in zip(m["graphs"][b]["stages"], e["graphs"][b]["stages"]):
            assert s_out["sha256"] == s_in["sha256"]
            assert s_out["inputs"] == s_in["inputs"] and s_out["outputs"] == s_in["outputs"]
    assert m["source_manifest"]["sha256"] == e["_sha256"]


def test_fp16_keeps_pruning_decision_fp32(tiny: dict) -> None:
    out = build(tiny, "fp16", "fp16")
    from pipeline.manifest import read_manifest

    m = read_manifest(out, "precision")
    for i in range(4):
        g = onnx.load(str(out / "b4" / f"stage{i}.onnx"))
        assert io_fp32(g)
        assert fp16_casts_per_stage(g)[-1] >= 1, f"stage {i} has no FP16 cast"
        assert precision.graph_summary(g, i)[str(i)].get("fp16_nodes", 0) > 5
        protected = precision.pruning_nodes(onnx.load(str(tiny["export"] / "b4" / f"stage{i}.onnx")))
        assert precision.fp32_violations(g, protected) == []
        if i:
            assert m["fp16_excluded_nodes"][f"b4/stage{i}.onnx"], "excluded nodes recorded"
            types = precision.tensor_types(g)
            topk = next(n for n in g.graph.node if n.op_type == "TopK")
            assert types[topk.input[0]] == TensorProto.FLOAT
            pred = [n for n in g.graph.node if n.name in set(protected) and n.op_type in ("MatMul", "LayerNormalization")]
            assert len(pred) == 5 and all(types[t] == TensorProto.FLOAT for n in pred for t in n.input if t in types)
    fused = onnx.load(str(out / "b4" / "fused.onnx"))
    assert all(n.name.startswith("/stage") for n in fused.graph.node)
    summary = precision.graph_summary(fused)
    assert all(summary[str(i)].get("fp16_nodes", 0) > 5 for i in range(4)), summary
    assert precision.fp32_violations(fused, precision.pruning_nodes(onnx.load(str(tiny["export"] / "b4" / "fused.onnx")))) == []
    assert m["graphs"]["4"]["fused"]["summary"] == summary


def test_int8_qdq_outside_pruning_decision(tiny: dict) -> None:
    calibration.COUNTERS.clear()
    out = build(tiny, "int8", "int8", calib_method="max")
    from pipeline.manifest import read_manifest

    m = read_manifest(out, "precision")
    assert m["int8"]["method"] == "max" and m["int8"]["calib_size"] == 16
    assert calibration.COUNTERS["calibrations"] >= 5
    for i in range(4):
        g = onnx.load(str(out / "b4" / f"stage{i}.onnx"))
        assert io_fp32(g)
        assert qdq_per_stage(g)[-1] > 0, f"stage {i} has no Q/DQ"
        protected = precision.pruning_nodes(onnx.load(str(tiny["export"] / "b4" / f"stage{i}.onnx")))
        assert precision.fp32_violations(g, protected) == []
    # B=1 graphs take the B=4 graphs' activation scales
    s4 = precision.activation_scales(onnx.load(str(out / "b4" / "stage2.onnx")))
    s1 = precision.activation_scales(onnx.load(str(out / "b1" / "stage2.onnx")))
    assert s4 and set(s1) == set(s4) and all(abs(s1[t] - s4[t]) <= 1e-7 * max(1.0, abs(s4[t])) for t in s4)
    excl = m["int8"]["excluded_nodes"]["b4/fused.onnx"]
    assert len(excl["pruning_decision"]) > 30 and excl["stage_boundary_producers"] and excl["outside_int8_stages"] is None


def test_per_stage_mix(tiny: dict) -> None:
    out = build(tiny, "mixed", "fp16,int8,fp32,fp16", calib_method="entropy")
    from pipeline.manifest import read_manifest

    m = read_manifest(out, "precision")
    assert m["precision"] == ["fp16", "int8", "fp32", "fp16"]
    want = {0: "fp16", 1: "int8", 2: "fp32", 3: "fp16"}
    for i, p in want.items():
        g = onnx.load(str(out / "b4" / f"stage{i}.onnx"))
        q, c = qdq_per_stage(g)[-1], fp16_casts_per_stage(g)[-1]
        assert (q > 0) == (p == "int8") and (c > 0) == (p == "fp16"), (i, p, q, c)
    fused = onnx.load(str(out / "b4" / "fused.onnx"))
    assert all(n.name.startswith("/stage") for n in fused.graph.node)
    q, c = qdq_per_stage(fused), fp16_casts_per_stage(fused)
    assert set(q) == {1}, q
    assert c[0] > 0 and c[3] > 0 and c[2] == 0
    assert m["graphs"]["4"]["fused"]["precision"] == ["fp16", "int8", "fp32", "fp16"]
    protected = precision.pruning_nodes(onnx.load(str(tiny["export"] / "b4" / "fused.onnx")))
    assert precision.fp32_violations(fused, protected) == []
    # it still runs in ONNX Runtime and chains
    res = OnnxRuntimeRunner(out / "b4" / "fused.onnx").infer({"images": np.zeros((4, 1, 28, 28), np.float32)})
    assert all(np.isfinite(r).all() for r in res.values() if r.dtype.kind == "f")


def test_calibration_cache_reused(tiny: dict) -> None:
    cache = tiny["root"] / "cache-reuse"
    calibration.COUNTERS.clear()
    build(tiny, "c1", "int8", calib_method="percentile", cache_dir=cache)
    first = dict(calibration.COUNTERS)
    assert first["calibrations"] > 0 and first["chain_runs"] > 0
    calibration.COUNTERS.clear()
    out = build(tiny, "c2", "int8", calib_method="percentile", cache_dir=cache)
    assert calibration.COUNTERS["calibrations"] == 0, "second build called the calibrator"
    assert calibration.COUNTERS["chain_runs"] == 0
    assert calibration.COUNTERS["int8_hits"] == first["calibrations"]
    from pipeline.manifest import read_manifest

    m = read_manifest(out, "precision")
    assert all(v["hit"] for v in m["int8"]["cache"].values())
    assert (tiny["root"] / "c1" / "b4" / "stage1.onnx").read_bytes() == (out / "b4" / "stage1.onnx").read_bytes()
    # another seed is another calibration set: a miss
    calibration.COUNTERS.clear()
    build(tiny, "c3", "int8", calib_method="percentile", cache_dir=cache, calib_seed=1)
    assert calibration.COUNTERS["calibrations"] > 0
    # cache files are what calibration/README.md says
    assert list((cache / "data").glob("*.npz")) and list((cache / "int8").glob("*.cache"))
    meta = json.loads(next((cache / "int8").glob("*.json")).read_text())
    assert meta["described"]["method"] == "percentile"


def test_percentile_clips_scales(tiny: dict) -> None:
    from pipeline.manifest import read_manifest

    mx = build(tiny, "pmax", "int8", calib_method="max")
    pc = build(tiny, "ppct", "int8", calib_method="percentile", percentile=99.0)
    a = precision.activation_scales(onnx.load(str(mx / "b4" / "stage1.onnx")))
    b = precision.activation_scales(onnx.load(str(pc / "b4" / "stage1.onnx")))
    assert set(a) == set(b)
    assert all(b[t] <= a[t] * (1 + 1e-6) for t in a) and any(b[t] < a[t] * 0.99 for t in a)
    assert read_manifest(pc, "precision")["int8"]["modelopt_method"] == "max"


@pytest.mark.parametrize(
    ("spec", "kw", "match"),
    [
        ("fp16,int8", {}, "lists 2 precisions but the export has 4 stages"),
        ("fp16,fp12,int8,fp16", {}, "unknown precision 'fp12'"),
        ("int8", {"calib_size": 0}, "calibration size 0"),
        ("int8", {"calib_method": "kl"}, "unknown calibration method"),
    ],
)
def test_bad_input_leaves_nothing(tiny: dict, spec: str, kw: dict, match: str) -> None:
    out = tiny["root"] / "bad"
    with pytest.raises(DvitError, match=re.escape(match)):
        precision.build_precision(tiny["export"], out, spec, cache_dir=tiny["cache"], **kw)
    assert not out.exists()
    assert not [p for p in tiny["root"].iterdir() if p.name.startswith(".bad")]


def test_missing_or_tampered_export(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(DvitError, match="no manifest.json"):
        precision.build_precision(tmp_path / "nothing", tmp_path / "o", "fp16")
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(tiny["export"], copy)
    with open(copy / "b4" / "stage2.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DvitError, match="does not match the hash"):
        precision.build_precision(copy, tmp_path / "o", "fp16")
    assert not (tmp_path / "o").exists()


def test_cli_one_line_error(tiny: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    rc = main(["precision", "--graphs", str(tiny["export"]), "--precision", "fp16,int8", "--out", str(tiny["root"] / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "4 stages" in err


def test_teacher_gets_the_students_recipe_block_for_block(tmp_path: Path) -> None:
    """Pruned against dense compares like for like: the teacher graph is converted with the same per-stage
    precision on the same blocks (its nodes renamed into the student's stages), not left FP32."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export

    torch.manual_seed(1)
    teacher = DynamicViT(model_config("fmnist_tiny").replace(**{**TINY, "pruning_loc": ()})).eval()
    save_checkpoint(tmp_path / "teacher.pt", teacher)
    save_checkpoint(tmp_path / "student.pt", tiny_model(0))
    src = export(tmp_path / "student.pt", tmp_path / "export", teacher=tmp_path / "teacher.pt", batch_sizes=(2,),
                 verify_images=2, progress=False).out
    out = precision.build_precision(src, tmp_path / "mixed", "fp16,int8,fp32,fp16", calib_size=8,
                                    cache_dir=tmp_path / "cache", calib_method="max", progress=False)
    g = onnx.load(str(out / "b2" / "teacher.onnx"))
    assert io_fp32(g)
    q, c = qdq_per_stage(g), fp16_casts_per_stage(g)
    assert set(q) == {1}, q  # INT8 exactly on the blocks of student stage 1 (block 1 of 4)
    assert c[0] > 0 and c[3] > 0 and c[2] == 0
    assert any("/blocks.1/" in n.name and precision.stage_of(n.name) == 1 for n in g.graph.node)
    assert GraphSet.load(out).batch(2).teacher.info["precision"] == ["fp16", "int8", "fp32", "fp16"]
    res = OnnxRuntimeRunner(out / "b2" / "teacher.onnx").infer({"images": np.zeros((2, 1, 28, 28), np.float32)})
    assert np.isfinite(res["logits"]).all()
