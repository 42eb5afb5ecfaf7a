"""`dvit scan`: the TensorRT operator table and the checks that flag what TensorRT's ONNX parser would refuse."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline import cli, export, opscan
from pipeline.config import ModelConfig
from pipeline.model import DynamicViT


@pytest.fixture(scope="module")
def table() -> opscan.OpTable:
    return opscan.load_table()


def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_opsets)]
    )


def _vi(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _topk_model(k: int | None, sorted_: int = 1) -> onnx.ModelProto:
    """scores [2, 4096] -> TopK; k None: K computed at run time from the input's shape."""
    nodes, inits = [], []
    if k is None:
        nodes += [
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Slice", ["shape", "one", "two"], ["k"], name="k_from_shape"),
        ]
        inits += [numpy_helper.from_array(np.array([1]), "one"), numpy_helper.from_array(np.array([2]), "two")]
        kk = 4096
    else:
        inits.append(numpy_helper.from_array(np.array([k], dtype=np.int64), "k"))
        kk = k
    nodes.append(helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=1, sorted=sorted_))
    return _model(nodes, [_vi("x", [2, 4096])], [_vi("v", [2, kk]), _vi("i", [2, kk], TensorProto.INT64)], inits)


# ---- the table ----
def test_table_names_its_sources_and_versions(table: opscan.OpTable) -> None:
    data = json.loads(Path(table.path).read_text())
    assert table.versions == ("10.3", "11.1") and table.opset_range == (9, 20)
    assert [s["covers"] for s in data["sources"]] == ["10.3", "11.1"]
    assert all(s["document"] and s["sha256"] and s["note"] for s in data["sources"])
    # What our graphs use is supported by both releases.
    for op in ("TopK", "GatherElements", "Gather", "LayerNormalization", "MatMul", "Softmax", "LogSoftmax", "Erf",
               "Conv", "Concat", "Expand", "Unsqueeze", "Slice", "ReduceMean", "Gemm", "Cast"):
        assert table.status(op) is None, op
    # Supported only by the newer release -> not supported for us; never supported; unknown.
    for op in ("STFT", "Attention", "RMSNormalization", "Swish"):
        assert data["ops"][op]["11.1"] and not data["ops"][op]["10.3"]
        assert "10.3" in (table.status(op) or "")
    assert table.status("Unique") and table.status("NotAnOp")


def test_build_table_intersects_the_two_documents() -> None:
    older = (
        "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20.\n"
        "| Operator | Supported | Supported Types | Restrictions |\n|---|---|---|---|\n"
        "| A | Y | FP32, FP16 |\n| B | Y | FP32 | `axes` must be an initializer |\n| C | N |\n"
    )
    newer = (
        "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24.\n"
        "| Operator | Supported | Supported Types | Restrictions |\n|---|---|---|---|\n"
        "| A | Y | FP32, FP16, BF16 |\n| B | N |\n| C | Y | FP32 |\n"
    )
    t = opscan.build_table(older, newer, older_source={"document": "o"}, newer_source={"document": "n"},
                           newer_added=["D"])
    ops = t["ops"]
    assert ops["A"]["supported"] and ops["A"]["types"] == ["FP32", "FP16"]
    assert not ops["B"]["supported"] and ops["B"]["10.3"] and ops["B"]["restrictions"] == ["`axes` must be an initializer"]
    assert not ops["C"]["supported"] and ops["C"]["11.1"]
    assert not ops["D"]["supported"] and ops["D"]["11.1"]  # added by the newer changelog only
    assert t["opset_range"] == [9, 20]


# ---- flagged graphs ----
def test_unsupported_operator_is_flagged(table: opscan.OpTable) -> None:
    m = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_vi("x", [8])], [_vi("y", [8])])
    f = opscan.scan_model(m, table, file="u.onnx", check_shapes=False)
    assert [(x.node, x.op) for x in f] == [("uniq", "Unique")]


def test_newer_only_operator_is_flagged(table: opscan.OpTable) -> None:
    m = _model([helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="rms")],
               [_vi("x", [2, 8]), _vi("s", [8])], [_vi("y", [2, 8])], opset=20)
    f = opscan.scan_model(m, table, check_shapes=False)
    assert len(f) == 1 and "10.3" in f[0].problem


@pytest.mark.parametrize(
    "k, sorted_, expect",
    [(4000, 1, "below 3840"), (3840, 1, "below 3840"), (None, 1, "'K' is computed"), (16, 0, "sorted=0")],
)
def test_bad_topk_is_flagged(k: int | None, sorted_: int, expect: str, table: opscan.OpTable) -> None:
    f = opscan.scan_model(_topk_model(k, sorted_), table, check_shapes=False)
    assert any(x.op == "TopK" and expect in x.problem for x in f), f


def test_good_topk_passes(table: opscan.OpTable) -> None:
    assert opscan.scan_model(_topk_model(3839), table) == []


def test_dynamic_shapes_and_opset_are_flagged(table: opscan.OpTable) -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", ["batch", 8])], [_vi("y", ["batch", 8])])
    assert any("non-static shape" in x.problem and "x" in x.problem for x in opscan.scan_model(m, table))
    m21 = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [1])], [_vi("y", [1])], opset=21)
    assert any("opset 21" in x.problem for x in opscan.scan_model(m21, table))


def test_custom_ops_need_a_known_plugin(table: opscan.OpTable) -> None:
    ours = helper.make_node("DvitTopKGather", ["s", "t"], ["kt", "ki"], name="p", domain="dvit", k=2)
    other = helper.make_node("Mystery", ["s"], ["z"], name="q", domain="acme")
    m = _model([ours, other], [_vi("s", [1, 4]), _vi("t", [1, 5, 8])],
               [_vi("kt", [1, 3, 8]), _vi("ki", [1, 2], TensorProto.INT32), _vi("z", [1, 4])],
               extra_opsets=("dvit", "acme"))
    f = opscan.scan_model(m, table, check_shapes=False)
    assert [(x.node, x.op) for x in f] == [("q", "acme::Mystery")]


# ---- our graphs pass; the CLI ----
@pytest.fixture(scope="module")
def exported_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DynamicViT(ModelConfig("tiny", 28, 4, 1, 10, 32, 4, 2, pruning_loc=(1, 2, 3))).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)  # non-zero, as after training
    spec = next(s for s in export.plan_graphs(model, [1]) if s.name == "stage1")
    finished = export.finish(export.trace(spec, export.DEFAULT_OPSET), spec, opscan.load_table())
    path = tmp_path_factory.mktemp("scan") / "stage1.onnx"
    onnx.save(finished, str(path))
    return path


def test_exported_stage_graph_passes(exported_stage: Path, table: opscan.OpTable) -> None:
    assert opscan.scan_file(exported_stage, table) == []


def test_cli_exit_codes(exported_stage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scan", str(exported_stage)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.onnx"
    onnx.save(_topk_model(4000), str(bad))
    assert cli.main(["scan", str(exported_stage), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "TopK" in out and "3840" in out and "bad.onnx" in out
    assert cli.main(["scan", "--json", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)[0]["op"] == "TopK"
    assert cli.main(["scan", str(tmp_path / "missing.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
