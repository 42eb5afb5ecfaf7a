"""Per-stage DLA placement (pipeline/build/placement.py): which engines a DLA build puts on the DLA core, and why.

Real ONNX graphs, written with the onnx helper API: a convolution/LayerNorm/GELU stage (what ConvNeXt and Swin run
before their first pruning location), one with TopK and GatherElements, one with ScatterElements, one with the
DvitTopKGather plugin node, one hiding a TopK in an If branch; and a real token-pruning graph set (the tiny
DynamicViT exported, and passed through the plugin pass). The op reader is checked against `onnx` on all of them.
No TensorRT is needed: the plan, the manifest entries (through the function `dvit build` writes them with) and the
printed line are tested; the engines themselves are built on the device (`dvit deploy`).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_targets import _profile

from pipeline.backend.tensorrt import BackendError, BuildSettings
from pipeline.build import engine_entry, placement_line
from pipeline.build.onnx_ops import graph_ops
from pipeline.build.placement import (
    DlaRequest,
    Placement,
    by_name,
    gpu_only_ops,
    off_reason,
    place,
    plan,
    request,
    summary,
)
from pipeline.errors import ConfigError, DvitError
from pipeline.graphset import GraphSet, batch_section, write_graph_set
from pipeline.io import sha256_file
from pipeline.targets import load_target

REPO = Path(__file__).resolve().parents[1]
PRE = DlaRequest(0, "pre-pruning")
ALL = DlaRequest(1, "all")
F16 = TensorProto.FLOAT16


# ---------------------------------------------------------------- small real graphs
def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: tuple = (), domains: tuple = ()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", 20), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="test_dla_placement")
    if not domains:
        onnx.checker.check_model(model, full_check=True)  # valid, shapes inferred
    onnx.save(model, path)
    return path


def _f16(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).normal(size=shape).astype(np.float16), name)


def conv_stage(path: Path, dtype: int = F16) -> Path:
    """Patchify convolution, depthwise convolution, LayerNorm over channels, GELU, residual Add: a ConvNeXt block."""
    cast = np.float16 if dtype == F16 else np.float32
    inits = [numpy_helper.from_array(numpy_helper.to_array(t).astype(cast), t.name) for t in (
        _f16("stem_w", 8, 3, 4, 4), _f16("stem_b", 8), _f16("dw_w", 8, 1, 3, 3), _f16("ln_s", 8), _f16("ln_b", 8))]
    nodes = [
        helper.make_node("Conv", ["images", "stem_w", "stem_b"], ["x"], strides=[4, 4]),
        helper.make_node("Conv", ["x", "dw_w"], ["dw"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["dw"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["nhwc", "ln_s", "ln_b"], ["ln"], axis=-1),
        helper.make_node("Gelu", ["ln"], ["act"]),
        helper.make_node("Transpose", ["act"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Add", ["x", "nchw"], ["tokens_1"]),
    ]
    return _save(path, nodes, [helper.make_tensor_value_info("images", dtype, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("tokens_1", dtype, [1, 8, 4, 4])], inits)


def topk_gather(path: Path) -> Path:
    nodes = [helper.make_node("TopK", ["scores", "k"], ["values", "idx"], sorted=1),
             helper.make_node("GatherElements", ["tokens", "idx"], ["kept"], axis=1)]
    return _save(path, nodes, [helper.make_tensor_value_info("scores", F16, [1, 16]),
                               helper.make_tensor_value_info("tokens", F16, [1, 16])],
                 [helper.make_tensor_value_info("kept", F16, [1, 4])],
                 [numpy_helper.from_array(np.array([4], np.int64), "k")])


def scatter(path: Path) -> Path:
    nodes = [helper.make_node("ScatterElements", ["data", "idx", "updates"], ["out"], axis=1)]
    return _save(path, nodes, [helper.make_tensor_value_info("data", F16, [1, 16]),
                               helper.make_tensor_value_info("updates", F16, [1, 4])],
                 [helper.make_tensor_value_info("out", F16, [1, 16])],
                 [numpy_helper.from_array(np.array([[0, 3, 5, 9]], np.int64), "idx")])


def plugin(path: Path) -> Path:
    """The DvitTopKGather node as the plugin pass writes it: domain and namespace 'dvit'."""
    node = helper.make_node("DvitTopKGather", ["scores", "tokens"], ["kept_indices_1", "kept_tokens"],
                            domain="dvit", k=4, plugin_version="1", plugin_namespace="dvit")
    return _save(path, [node], [helper.make_tensor_value_info("scores", F16, [1, 16]),
                                helper.make_tensor_value_info("tokens", F16, [1, 17, 8])],
                 [helper.make_tensor_value_info("kept_indices_1", TensorProto.INT32, [1, 4]),
                  helper.make_tensor_value_info("kept_tokens", F16, [1, 5, 8])], domains=("dvit",))


def topk_in_a_branch(path: Path) -> Path:
    """A TopK inside an If node's then-branch: nested graphs count as the graph's own ops."""
    def branch(name: str, op: str) -> onnx.GraphProto:
        nodes = ([helper.make_node("TopK", ["x", "k"], [f"{name}_out", f"{name}_i"])] if op == "TopK"
                 else [helper.make_node("Slice", ["x", "zero", "k"], [f"{name}_out"])])
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", F16, [4])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "TopK"),
                              else_branch=branch("else", "Slice"))]
    return _save(path, nodes, [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                               helper.make_tensor_value_info("x", F16, [16])],
                 [helper.make_tensor_value_info("y", F16, [4])],
                 [numpy_helper.from_array(np.array([4], np.int64), "k"),
                  numpy_helper.from_array(np.array([0], np.int64), "zero")])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graphs")
    return {"conv": conv_stage(d / "conv.onnx"), "conv32": conv_stage(d / "conv32.onnx", TensorProto.FLOAT),
            "topk": topk_gather(d / "topk.onnx"), "scatter": scatter(d / "scatter.onnx"),
            "plugin": plugin(d / "plugin.onnx"), "branch": topk_in_a_branch(d / "branch.onnx")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny DynamicViT (four stages, pruning before blocks 1-3) exported at batch 1 with its teacher, and the
    plugin pass of it: the token-pruning graph sets `dvit build` takes."""
    from test_precision import tiny_model

    from pipeline import plugin_pass
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export
    from pipeline.model import DynamicViT

    root = tmp_path_factory.mktemp("exported")
    student = tiny_model(0)
    save_checkpoint(root / "student.pt", student)
    save_checkpoint(root / "teacher.pt", DynamicViT(student.cfg.as_dense()).eval())
    export(root / "student.pt", root / "fp32", teacher=root / "teacher.pt", batch_sizes=(1,), verify_images=2,
           progress=False)
    plugin_pass.plugin_pass(root / "fp32", root / "plugin", progress=False)
    return {"root": root, "fp32": root / "fp32", "plugin": root / "plugin"}


def _onnx_ops(path: Path) -> Counter:
    """What `onnx` itself counts: every node of the graph and of the subgraphs in its attributes."""
    def walk(g: onnx.GraphProto) -> list[onnx.NodeProto]:
        out = []
        for n in g.node:
            out.append(n)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    out += walk(sub)
        return out
    return Counter((n.domain, n.op_type) for n in walk(onnx.load(path).graph))


# ---------------------------------------------------------------- reading the op types without onnx
def test_op_reader_agrees_with_onnx_on_every_graph(graphs: dict[str, Path], exported: dict[str, Path]) -> None:
    files = [*graphs.values(), *sorted(exported["fp32"].glob("b1/*.onnx")), *sorted(exported["plugin"].glob("b1/*.onnx"))]
    assert len(files) == 6 + 12
    for f in files:
        assert graph_ops(f) == _onnx_ops(f), f
    assert graph_ops(graphs["branch"])[("", "TopK")] == 1
    assert graph_ops(exported["plugin"] / "b1" / "stage2.onnx")[("dvit", "DvitTopKGather")] == 1


def test_op_reader_refuses_a_broken_file_in_one_line(graphs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(graphs["conv"].read_bytes()[:-7])
    with pytest.raises(DvitError) as e:
        graph_ops(broken)
    assert "\n" not in str(e.value) and "is not a readable ONNX model" in str(e.value) and "re-export" in str(e.value)
    with pytest.raises(DvitError, match="cannot read ONNX file .*missing.onnx"):
        graph_ops(tmp_path / "missing.onnx")


# ---------------------------------------------------------------- the rule
def test_a_convolution_layernorm_gelu_stage_goes_on_the_dla(graphs: dict[str, Path]) -> None:
    p = place("stage", graphs["conv"], ("fp16",), PRE)
    assert (p.device, p.dla_core, p.label) == ("dla", 0, "dla:0")
    assert p.reason == ("holds no TopK, Gather, Scatter, NonZero or plugin node: on DLA core 0 with GPU fallback "
                        '(dla.stages = "pre-pruning")')
    assert p.record() == {"device": "dla:0", "gpu_fallback": True, "device_reason": p.reason}
    assert place("stage", graphs["conv"], ("int8",), DlaRequest(1, "pre-pruning")).label == "dla:1"


@pytest.mark.parametrize("name, holds", [
    ("topk", "GatherElements, TopK"),
    ("scatter", "ScatterElements"),
    ("plugin", "plugin dvit:DvitTopKGather"),
    ("branch", "TopK"),
])
def test_a_stage_holding_pruning_ops_stays_on_the_gpu(graphs: dict[str, Path], name: str, holds: str) -> None:
    p = place("stage", graphs[name], ("fp16",), PRE)
    assert p.device == "gpu" and p.dla_core is None and p.label == "gpu"
    assert p.reason == f'holds {holds}, which the DLA cannot run: on the GPU (dla.stages = "pre-pruning")'
    assert p.record() == {"device": "gpu", "device_reason": p.reason}  # no gpu_fallback: a GPU engine


def test_the_ops_that_keep_a_graph_off_the_dla() -> None:
    ops = Counter({("", "Conv"): 2, ("", "Gather"): 3, ("", "GatherND"): 1, ("", "NonZero"): 1, ("", "Softmax"): 1,
                   ("", "ScatterND"): 1, ("ai.onnx", "TopK"): 1, ("com.example", "Fancy"): 1, ("", "DvitTopKGather"): 1})
    assert gpu_only_ops(ops) == ["Gather", "GatherND", "NonZero", "ScatterND", "TopK", "plugin DvitTopKGather",
                                 "plugin com.example:Fancy"]
    assert gpu_only_ops(Counter({("", "Conv"): 1, ("", "LayerNormalization"): 1, ("", "Erf"): 1})) == []


def test_fp32_stays_on_the_gpu_and_names_the_fix(graphs: dict[str, Path]) -> None:
    """The DLA runs FP16 and INT8 only: an FP32 graph is left on the GPU (not refused), in either mode."""
    for dla in (PRE, ALL):
        p = place("stage", graphs["conv32"], ("fp32",), dla)
        assert p.device == "gpu", dla
        assert p.reason.startswith("computes in fp32, and the DLA runs FP16 and INT8 only: on the GPU")
        assert "`dvit precision --precision fp16`" in p.reason
    # a fused graph of mixed stages: one FP32 stage keeps it off the DLA in "all"
    assert place("fused", graphs["conv"], ("fp16", "fp32", "int8"), ALL).reason.startswith("computes in fp32")
    # structure before precision: an FP32 stage that holds a TopK is told about the TopK, which no precision fixes
    assert place("stage", graphs["topk"], ("fp32",), PRE).reason.startswith("holds GatherElements, TopK")


def test_fused_and_teacher_stay_on_the_gpu_even_without_pruning_ops(graphs: dict[str, Path]) -> None:
    fused = place("fused", graphs["conv"], ("fp16",), PRE)
    teacher = place("teacher", graphs["conv"], ("fp16",), PRE)
    assert (fused.device, teacher.device) == ("gpu", "gpu")
    assert fused.reason == "the fused graph holds the pruning (TopK and gathers): on the GPU"
    assert "dense teacher" in teacher.reason and "baseline" in teacher.reason


def test_all_puts_every_fp16_engine_on_the_dla_and_says_what_falls_back(graphs: dict[str, Path]) -> None:
    conv = place("stage", graphs["conv"], ("fp16",), ALL)
    assert conv.label == "dla:1" and conv.reason == 'every engine on DLA core 1 with GPU fallback (dla.stages = "all")'
    for role in ("stage", "fused", "teacher"):
        p = place(role, graphs["topk"], ("fp16",), ALL)
        assert p.label == "dla:1" and p.reason.endswith("; its GatherElements, TopK fall back to the GPU"), role


def test_without_dla_nothing_is_read_and_everything_runs_on_the_gpu(tmp_path: Path) -> None:
    """A build that does not use the DLA (every desktop-rtx and h100 build) never opens a graph for placement."""
    absent = tmp_path / "never-read.onnx"
    p = place("stage", absent, ("fp16",), None, "target desktop-rtx has no DLA")
    assert p == Placement.gpu("target desktop-rtx has no DLA")
    rtx = load_target("desktop-rtx")
    settings = BuildSettings.from_target(rtx)
    assert settings.dla_core is None and request(settings.dla_core, rtx) is None
    assert off_reason(rtx, None) == "target desktop-rtx has no DLA"
    with pytest.raises(BackendError, match="target desktop-rtx has no DLA: build without DLA"):
        BuildSettings.from_target(rtx, use_dla=True)
    nx = load_target("orin-nx")
    assert off_reason(nx, None) == "DLA is opt-in: dla.enabled = false in orin-nx.toml (`dvit build --dla` builds for it)"
    assert off_reason(nx, False) == "built with --no-dla"


def test_build_settings_per_engine() -> None:
    """One request for the build (checked against the backend version), then the core or none per engine."""
    agx = load_target("agx-orin")
    assert (agx.dla.enabled, agx.dla.stages) == (False, "pre-pruning")  # opt-in stays
    assert BuildSettings.from_target(agx, None, "10.3.0.30").dla_core is None
    settings = BuildSettings.from_target(agx, True, "10.3.0.30")
    assert settings.dla_core == 0 and request(settings.dla_core, agx) == PRE
    assert settings.on(None).dla_core is None and settings.on(None).workspace_bytes == settings.workspace_bytes
    assert settings.on(0) == settings
    with pytest.raises(BackendError, match=r"drives its DLA with TensorRT 10\.3, 11\.4 only, this machine has 10\.13"):
        BuildSettings.from_target(agx, True, "10.13.3")


# ---------------------------------------------------------------- the profile field
@pytest.mark.parametrize("value, words", [
    ('"pre_pruning"', "'pre_pruning' is not one of 'all', 'pre-pruning' (did you mean 'pre-pruning'?)"),
    ('"gpu"', "'gpu' is not one of 'all', 'pre-pruning'"),
    ("true", "expected one of 'all', 'pre-pruning', got True"),
    ('["pre-pruning"]', "expected one of 'all', 'pre-pruning', got list"),
])
def test_a_bad_dla_stages_is_one_line_naming_file_and_field(tmp_path: Path, value: str, words: str) -> None:
    d = _profile(tmp_path, stages=value)
    with pytest.raises(ConfigError) as e:
        load_target("agx-orin", d)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{d / 'agx-orin.toml'}: field 'dla.stages': ") and words in msg, msg


def test_dla_stages_on_a_device_without_dla_is_refused(tmp_path: Path) -> None:
    d = _profile(tmp_path, "orin-nano", dla_stages='"pre-pruning"')
    with pytest.raises(ConfigError) as e:
        load_target("orin-nano", d)
    msg = str(e.value)
    assert "\n" not in msg and "field 'dla.stages': 'pre-pruning', but dla.cores is 0: this device has no DLA" in msg


def test_a_profile_without_dla_stages_keeps_the_all_or_nothing_build(tmp_path: Path) -> None:
    d = _profile(tmp_path, stages=None, enabled="true")
    t = load_target("agx-orin", d)
    assert (t.dla.enabled, t.dla.stages) == (True, "all")
    assert request(BuildSettings.from_target(t, None, "11.4.1").dla_core, t) == DlaRequest(0, "all")


# ---------------------------------------------------------------- a real token-pruning graph set
def test_a_token_pruning_graph_set_stays_on_the_gpu_and_says_why(exported: dict[str, Path]) -> None:
    """DeiT's stage 0 gathers q, k and v out of one tensor (Gather), its later stages prune (TopK, GatherElements;
    or the plugin): with dla.stages = "pre-pruning" none of them goes on the DLA."""
    for kind, pruning in (("fp32", "GatherElements, TopK"), ("plugin", "plugin dvit:DvitTopKGather")):
        src = GraphSet.load(exported[kind])
        got = plan(src, [1], PRE)
        assert list(got) == [(1, n) for n in ("stage0", "stage1", "stage2", "stage3", "fused", "teacher")]
        assert all(p.device == "gpu" for p in got.values())
        assert got[(1, "stage0")].reason.startswith("holds Gather, which the DLA cannot run")
        for i in (1, 2, 3):
            assert got[(1, f"stage{i}")].reason.startswith(f"holds {'Gather, ' if kind == 'fp32' else ''}"), kind
            assert pruning in got[(1, f"stage{i}")].reason, (kind, got[(1, f"stage{i}")].reason)
        assert got[(1, "fused")].reason.startswith("the fused graph holds the pruning")
        assert summary({n: p for (_, n), p in got.items()}).startswith(
            "stage0-3, fused, teacher on the GPU (stage0: holds Gather, which the DLA cannot run")


def _with_convolutional_stage0(src: Path, dst: Path, precision: list[str]) -> Path:
    """A copy of the exported set whose stage0.onnx is the convolution/LayerNorm/GELU stage and whose manifest says
    `precision` per stage (hashes updated): what a ConvNeXt set in FP16 looks like to the placement."""
    shutil.copytree(src, dst)
    stage0 = dst / "b1" / "stage0.onnx"
    conv_stage(stage0, F16 if precision[0] != "fp32" else TensorProto.FLOAT)
    m = json.loads((dst / "manifest.json").read_text())
    m["precision"] = precision
    entry = m["graphs"]["1"]["stages"][0]
    entry["sha256"], entry["bytes"] = sha256_file(stage0), stage0.stat().st_size
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _engine_set(src: GraphSet, placements: dict, out: Path) -> GraphSet:
    """The engine set `dvit build` would write, every entry made by its engine_entry (a placeholder plan where
    TensorRT would have written the engine), read back through the one reader."""
    bg = src.batch(1)
    entries = {}
    for e in bg.entries():
        plan_file = out / f"b1/{e.name}.plan"
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_bytes(b"placeholder for the engine TensorRT builds on the device")
        entries[e.name] = engine_entry(out, e, src.kind, placements[(1, e.name)], precision=e.info.get("precision"),
                                       inputs=e.info["inputs"], outputs=e.info["outputs"])
    write_graph_set(out, "engine", {**src.header(), "batch_sizes": [1]},
                    {1: batch_section([entries[s.name] for s in bg.stages], entries["fused"], entries["teacher"])})
    return GraphSet.load(out, ("engine",))


def test_the_engine_manifest_says_what_runs_where(exported: dict[str, Path], tmp_path: Path) -> None:
    agx = load_target("agx-orin")
    dla = request(BuildSettings.from_target(agx, True, "10.3.0.30").dla_core, agx)  # as `dvit build --dla` asks
    src = GraphSet.load(_with_convolutional_stage0(exported["fp32"], tmp_path / "convnext-like",
                                                   ["fp16", "fp32", "fp32", "fp32"]))
    engines = _engine_set(src, plan(src, [1], dla, off_reason(agx, True)), tmp_path / "engines")
    info = {e.name: e.info for e in engines.batch(1).entries()}
    assert info["stage0"]["device"] == "dla:0" and info["stage0"]["gpu_fallback"] is True
    assert "holds no TopK, Gather, Scatter, NonZero or plugin node" in info["stage0"]["device_reason"]
    for name in ("stage1", "stage2", "stage3", "fused", "teacher"):
        assert info[name]["device"] == "gpu" and "gpu_fallback" not in info[name] and info[name]["device_reason"]
    assert "GatherElements, TopK" in info["stage2"]["device_reason"]
    assert Placement.from_record(info["stage0"]) == Placement.dla(0, info["stage0"]["device_reason"])
    assert placement_line(engines) == "stage0 on DLA core 0 (GPU fallback); stage1-3, fused, teacher on the GPU"

    # the same set in FP32: nothing on the DLA, and the line says why
    fp32 = GraphSet.load(_with_convolutional_stage0(exported["fp32"], tmp_path / "convnext-like-fp32", ["fp32"] * 4))
    engines = _engine_set(fp32, plan(fp32, [1], dla), tmp_path / "engines-fp32")
    line = placement_line(engines)
    assert line.startswith("stage0-3, fused, teacher on the GPU (stage0: computes in fp32, and the DLA runs FP16 and "
                           "INT8 only"), line


def test_engines_built_before_placements_read_as_gpu() -> None:
    p = Placement.from_record({"file": "b1/stage0.plan"})
    assert p.device == "gpu" and "not recorded" in p.reason


def test_the_plan_needs_neither_onnx_nor_tensorrt(exported: dict[str, Path], tmp_path: Path) -> None:
    """On a Jetson (no onnx package) the placement is still computed: in a fresh interpreter in which onnx, torch and
    every TensorRT are unimportable."""
    src = _with_convolutional_stage0(exported["fp32"], tmp_path / "set", ["fp16", "fp16", "fp16", "fp16"])
    code = (
        "import sys\n"
        "for m in ('onnx', 'torch', 'timm', 'modelopt', 'onnxruntime', 'tensorrt', 'tensorrt_rtx'):\n"
        "    sys.modules[m] = None\n"
        "from pipeline.build import placement\n"
        "from pipeline.graphset import GraphSet\n"
        "from pipeline.targets import load_target\n"
        "t = load_target('agx-orin')\n"
        f"got = placement.plan(GraphSet.load({str(src)!r}), [1], placement.request(t.dla.core, t))\n"
        "print(placement.summary(placement.by_name(got)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "stage0 on DLA core 0 (GPU fallback); stage1-3, fused, teacher on the GPU"


def test_the_line_groups_names_and_batch_sizes() -> None:
    d0, gpu = Placement.dla(0, "eligible"), Placement.gpu("holds TopK")
    same = {(8, "stage0"): d0, (1, "stage0"): d0, (8, "stage1"): gpu, (1, "stage1"): gpu, (8, "fused"): gpu}
    assert summary(by_name(same)) == "stage0 on DLA core 0 (GPU fallback); stage1, fused on the GPU"
    differ = {(8, "stage0"): d0, (1, "stage0"): gpu, (8, "stage1"): gpu, (1, "stage1"): gpu}
    assert summary(by_name(differ)) == "b8/stage0 on DLA core 0 (GPU fallback); b1/stage0, stage1 on the GPU"


def test_a_desktop_rtx_build_records_its_engines_on_the_gpu(exported: dict[str, Path], tmp_path: Path) -> None:
    """The real build (TensorRT for RTX builds without a GPU): every entry says "gpu" and why, no DLA setting reaches
    the builder config, and no placement line is printed for a build that does not use the DLA."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")
    from pipeline.build import build_engines

    r = build_engines(exported["fp32"], "desktop-rtx", tmp_path / "engines", batch_sizes=(1,), cache_dir=None,
                      progress=False, plugin_search=())
    assert r.placement is None and r.engines.manifest["dla"] is None
    assert "default_device_type" not in r.engines.manifest["build"]
    for e in r.engines.batch(1).entries():
        assert (e.info["device"], e.info["device_reason"]) == ("gpu", "target desktop-rtx has no DLA"), e.name
        assert "gpu_fallback" not in e.info and "dla_capable_layers" not in e.info
