"""The DvitTopKGather reference op and the graph pass that puts the plugin into exported graphs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_models import TINY, trained_like

from pipeline import cli, export, onnx_utils, opscan, plugin_pass, topk_gather_ref
from pipeline.backend.onnxruntime.runner import run as run_onnx
from pipeline.checkpoint import save_checkpoint
from pipeline.config import ModelConfig
from pipeline.data import load_fashion_mnist
from pipeline.errors import DvitError
from pipeline.manifest import read_manifest
from pipeline.model import DynamicViT, select_tokens

pytest.importorskip("onnxruntime_extensions", reason="the reference op runs in ONNX Runtime through onnxruntime-extensions")

B = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model exported by Part A's exporter (non-zero biases and keep scores spread apart, as
    after training)."""
    torch.manual_seed(0)
    model = trained_like(DynamicViT(TINY))
    d = tmp_path_factory.mktemp("pp")
    save_checkpoint(d / "student.pt", model)
    return export.export(d / "student.pt", d / "export", batch_sizes=[B], progress=False).out


@pytest.fixture(scope="module")
def stage_inputs(exported: Path) -> dict[str, np.ndarray]:
    """Real test images and the tokens the original stage graphs compute from them."""
    ds = load_fashion_mnist("test")
    x = {"images": ds.normalize(ds.images[:B]).numpy()}
    tensors = dict(x)
    for i in range(4):
        out = run_onnx(exported / f"b{B}/stage{i}.onnx", x)
        tensors.update(out)
        x = {f"tokens_{i + 1}": out[f"tokens_{i + 1}"]} if i < 3 else {}
    return tensors


def _feeds(model: onnx.ModelProto, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: tensors[i.name] for i in model.graph.input}


def _assert_exactly_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert v.dtype == b[k].dtype and np.array_equal(v, b[k]), k


# ---- the reference op ----
def test_reference_semantics_ties_nan_and_signed_zero() -> None:
    scores = np.array([[0.5, 2.0, 0.5, -1.0, 2.0], [np.nan, -0.0, np.inf, 0.0, np.nan]], dtype=np.float32)
    tokens = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    kept, idx = topk_gather_ref.topk_gather(scores, tokens, 4)
    assert idx.dtype == np.int32 and kept.dtype == np.float32 and kept.shape == (2, 5, 3)
    # Ties to the lower index; NaN above +inf; -0.0 equals +0.0.
    assert idx.tolist() == [[1, 4, 0, 2], [0, 4, 2, 1]]
    for b in range(2):
        assert np.array_equal(kept[b, 0], tokens[b, 0])
        assert np.array_equal(kept[b, 1:], tokens[b, idx[b] + 1])
    kept16, idx16 = topk_gather_ref.topk_gather(scores.astype(np.float16), tokens.astype(np.float16), 4)
    assert kept16.dtype == np.float16 and np.array_equal(idx16, idx)


def test_reference_matches_torch_and_the_model_selection() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(-3, 3, size=(4, 49)).astype(np.float32)  # many exact ties
    tokens = rng.standard_normal((4, 50, 8)).astype(np.float32)
    kept, idx = topk_gather_ref.topk_gather(scores, tokens, 34)
    kt, it = topk_gather_ref.topk_gather_torch(torch.from_numpy(scores), torch.from_numpy(tokens), 34)
    assert np.array_equal(kept, kt.numpy()) and np.array_equal(idx, it.numpy())
    km, im = select_tokens(torch.from_numpy(tokens), torch.from_numpy(scores), 34)
    assert np.array_equal(kept, km.numpy()) and np.array_equal(idx, im.numpy())


@pytest.mark.parametrize("shapes, k", [(((2, 5), (2, 5, 3)), 2), (((2, 5), (2, 6, 3)), 0), (((2, 5), (2, 6, 3)), 6),
                                       (((5,), (2, 6, 3)), 1), (((2, 5), (3, 6, 3)), 1)])
def test_reference_rejects_bad_shapes(shapes, k) -> None:
    with pytest.raises(ValueError):
        topk_gather_ref.topk_gather(np.zeros(shapes[0], np.float32), np.zeros(shapes[1], np.float32), k)


# ---- the pass on real exported graphs ----
@pytest.mark.parametrize("index", [1, 2, 3])
def test_stage_graph_rewrite_is_exact(index: int, exported: Path, stage_inputs: dict[str, np.ndarray]) -> None:
    original = onnx.load(str(exported / f"b{B}/stage{index}.onnx"))
    new, n = plugin_pass.rewrite_checked(original, 1, f"stage{index}")
    assert n == 1 and plugin_pass.count_plugins(new) == 1
    ops = [node.op_type for node in new.graph.node]
    assert "TopK" not in ops and "GatherElements" not in ops
    feeds = _feeds(original, stage_inputs)
    want = run_onnx(original, feeds)
    got = run_onnx(new, feeds)
    _assert_exactly_equal(want, got)
    assert got[f"kept_indices_{index}"].dtype == np.int64
    # The real stage graph on real data: the plugin output equals the stage's own TopK selection.
    assert np.array_equal(got[f"kept_indices_{index}"], stage_inputs[f"kept_indices_{index}"])


def test_fused_graph_rewrite_is_exact_and_keeps_stage_names(exported: Path, stage_inputs: dict[str, np.ndarray]) -> None:
    original = onnx.load(str(exported / f"b{B}/fused.onnx"))
    new, n = plugin_pass.rewrite_checked(original, len(TINY.pruning_loc), "fused")
    assert n == len(TINY.pruning_loc) == plugin_pass.count_plugins(new)
    feeds = {"images": stage_inputs["images"]}
    _assert_exactly_equal(run_onnx(original, feeds), run_onnx(new, feeds))
    counts, orphans = onnx_utils.stage_attribution(new)
    assert orphans == [] and set(counts) == {0, 1, 2, 3}
    plugins = [node for node in new.graph.node if node.op_type == "DvitTopKGather"]
    assert [onnx_utils.stage_of(node.name) for node in plugins] == [1, 2, 3]


def test_plugin_node_is_what_tensorrt_looks_up(exported: Path) -> None:
    new, _ = plugin_pass.rewrite_checked(onnx.load(str(exported / f"b{B}/stage2.onnx")), 1, "stage2")
    (node,) = [n for n in new.graph.node if n.op_type == "DvitTopKGather"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "dvit" and attrs == {"k": 24, "plugin_version": b"1", "plugin_namespace": b"dvit"}
    assert {(o.domain, o.version) for o in new.opset_import} >= {("dvit", 1)}
    onnx.checker.check_model(new)
    inferred = plugin_pass.check_plugin_graph(new)
    shapes = {vi.name: onnx_utils.signature([vi])[0] for vi in inferred.graph.value_info}
    assert shapes[node.output[0]]["shape"] == [B, 25, 32] and shapes[node.output[1]]["dtype"] == "int32"
    assert opscan.scan_model(new) == []


def test_missing_pattern_where_pruning_is_expected_fails(exported: Path) -> None:
    stage0 = onnx.load(str(exported / f"b{B}/stage0.onnx"))
    assert plugin_pass.rewrite_checked(stage0, 0, "stage0")[1] == 0
    with pytest.raises(DvitError, match="found 0 TopK"):
        plugin_pass.rewrite_checked(stage0, 1, "stage0")
    # A TopK whose indices are shifted by 2 instead of 1 is not the plugin's selection: left alone, and reported.
    stage1 = onnx.load(str(exported / f"b{B}/stage1.onnx"))
    add = next(n for n in stage1.graph.node if n.op_type == "Add" and "kept_indices_1" in n.input)
    const = next(i for i in stage1.graph.initializer if i.name in add.input)
    const.CopyFrom(onnx.numpy_helper.from_array(np.array(2, dtype=np.int64), const.name))
    with pytest.raises(DvitError, match="found 0 TopK"):
        plugin_pass.rewrite_checked(stage1, 1, "stage1")


def test_cli_writes_a_plugin_manifest(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plugin"
    assert cli.main(["plugin-pass", "--graphs", str(exported), "--out", str(out), "--no-progress"]) == 0
    assert "replaced 6" in capsys.readouterr().out
    m = read_manifest(out, "plugin")
    assert m["plugin"] == {**m["plugin"], "name": "DvitTopKGather", "version": "1", "namespace": "dvit"}
    assert m["replaced"]["total"] == 6
    g = m["graphs"][str(B)]
    assert [s["replaced"] for s in g["stages"]] == [0, 1, 1, 1] and g["fused"]["replaced"] == 3
    assert all("bitwise equal" in s["verified"] for s in [*g["stages"][1:], g["fused"]])
    assert m["keep_counts"] == [34, 24, 16] and m["model_config"] == TINY.to_dict()
    assert [o["name"] for o in g["fused"]["outputs"]] == ["logits", "kept_indices_1", "kept_indices_2", "kept_indices_3"]
    src = json.loads((exported / "manifest.json").read_text())
    assert (out / g["stages"][0]["file"]).read_bytes() == (exported / src["graphs"][str(B)]["stages"][0]["file"]).read_bytes()


def test_more_than_64_tokens(tmp_path: Path) -> None:
    """100 patch tokens (k = 70): the pattern check must not depend on small token counts."""
    cfg = ModelConfig("wide", 40, 4, 1, 10, 32, 2, 2, pruning_loc=(1,), keep_ratio=0.7)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "wide.pt", trained_like_random(DynamicViT(cfg)))
    out = export.export(tmp_path / "wide.pt", tmp_path / "export", batch_sizes=[1], verify_images=2, progress=False).out
    fused = onnx.load(str(out / "b1/fused.onnx"))
    new, n = plugin_pass.rewrite_checked(fused, 1, "fused")
    assert n == 1
    (node,) = [x for x in new.graph.node if x.op_type == "DvitTopKGather"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["k"] == 70
    feeds = {"images": np.random.default_rng(0).standard_normal((1, 1, 40, 40)).astype(np.float32)}
    _assert_exactly_equal(run_onnx(fused, feeds), run_onnx(new, feeds))


def trained_like_random(model: DynamicViT) -> DynamicViT:
    """Non-zero biases and separating prediction modules, without Fashion-MNIST calibration (other image size)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
        for pred in model.score_predictor:
            for lin in pred.modules():
                if isinstance(lin, torch.nn.Linear):
                    torch.nn.init.normal_(lin.weight, std=2.0 / lin.in_features**0.5)
    return model.eval()
