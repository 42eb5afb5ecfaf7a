"""The contract between stages: the graph set, the import boundary of the device side, the stage-import rule, and
one ONNX Runtime session factory, one chain runner, one comparison driver."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_precision import make_tiny_export

from pipeline import cli
from pipeline.errors import ConfigError, DvitError, ManifestError
from pipeline.graphset import HEADER_KEYS, GraphSet, write_graph_set
from pipeline.manifest import write_manifest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline"
# The pipeline's stages (a `dvit` subcommand each, reading the previous stage's artifacts). Utilities with a command
# of their own (scan, targets, inspect) are libraries that stages may use.
STAGES = {"train", "evaluate", "export", "precision", "plugin_pass", "reference", "validate", "build", "latency",
          "report", "deploy"}
# What a Jetson imports to build and validate: none of it may need torch, timm or ModelOpt.
DEVICE_MODULES = [
    "pipeline.graphset", "pipeline.image_slice", "pipeline.runners", "pipeline.runners.base", "pipeline.runners.chain",
    "pipeline.runners.recorded", "pipeline.comparison.metrics",
    "pipeline.comparison.thresholds", "pipeline.comparison.driver", "pipeline.validate", "pipeline.validate.tables",
    "pipeline.targets", "pipeline.report", "pipeline.latency", "pipeline.latency.timing", "pipeline.latency.flops",
    "pipeline.backend", "pipeline.backend.onnxruntime", "pipeline.backend.onnxruntime.runner",
    "pipeline.backend.onnxruntime.pools", "pipeline.backend.onnxruntime.plugins", "pipeline.backend.tensorrt",
    "pipeline.backend.tensorrt.capabilities", "pipeline.backend.tensorrt.loader", "pipeline.backend.tensorrt.builder",
    "pipeline.backend.tensorrt.plan_header", "pipeline.backend.tensorrt.plugins", "pipeline.backend.tensorrt.cuda",
    "pipeline.backend.tensorrt.runner",
    "pipeline.deploy", "pipeline.build", "pipeline.build.cache", "pipeline.build.layers",
    "pipeline.inspect_engine", "pipeline.cli",
]
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'modelopt'):
            raise ImportError(f'{name} is blocked: the device side must not need it')
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    export, _ = make_tiny_export(tmp_path_factory.mktemp("contract"))
    return export


# ---------------------------------------------------------------- the graph set
def test_graph_set_is_typed_and_verified(export_dir: Path) -> None:
    gs = GraphSet.load(export_dir)
    assert gs.kind == "export" and gs.num_stages == 4 and gs.precision == ["fp32"] * 4
    assert gs.batch_sizes == [1, 4] and gs.batch().batch == 4  # default: 8 when present, else the largest
    b = gs.batch(4)
    assert [e.name for e in b.entries()] == ["stage0", "stage1", "stage2", "stage3", "fused"]
    assert b.stages[0].input_names == ["images"] and b.stages[2].input_names == ["tokens_2"]
    assert b.stages[2].output_names == ["tokens_3", "kept_indices_2"] and b.stages[2].keep_count == gs.config.keep_counts[1]
    assert b.stages[2].inputs[0].shape == (4, gs.config.tokens_per_stage[1], gs.config.embed_dim)  # k_1 + 1 rows
    assert set(gs.header()) <= set(HEADER_KEYS) and gs.header()["model_config"] == gs.config.to_dict()
    with pytest.raises(ConfigError, match=r"no graphs for batch size 8 .*pass --batch-size 4"):
        gs.batch(8)


def test_graph_set_refuses_tampering_foreign_kinds_and_broken_structure(export_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "g"
    shutil.copytree(export_dir, copy)
    with open(copy / "b4" / "stage2.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="does not match the hash"):
        GraphSet.load(copy)
    write_manifest(tmp_path / "t", "train", {"files": []})
    with pytest.raises(ManifestError, match=r"'train' manifest, not a graph set: point --graphs at the output of"):
        GraphSet.load(tmp_path / "t")
    with pytest.raises(ManifestError, match=r"'export' graph set, but this command takes 'plugin'"):
        GraphSet.load(export_dir, ("plugin",))
    m = json.loads((export_dir / "manifest.json").read_text())
    header = {k: m[k] for k in HEADER_KEYS if k in m}
    broken = dict(m["graphs"]["4"], stages=m["graphs"]["4"]["stages"][:3])
    with pytest.raises(ManifestError, match=r"stage graphs \[0, 1, 2\] for a 4-stage model"):
        write_graph_set(tmp_path / "w", "precision", header, {4: broken})
    assert not (tmp_path / "w" / "manifest.json").exists()


# ---------------------------------------------------------------- import rules
def test_device_side_imports_without_torch_timm_modelopt() -> None:
    code = BLOCKER + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in DEVICE_MODULES) + (
        "import pipeline.cli as c\n"
        "c.build_parser('validate')\n"
        "try:\n    import torch\nexcept ImportError as e:\n    print('blocked:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "blocked: torch is blocked" in r.stdout  # the blocker works, so the imports above really ran without torch


def _imports(path: Path) -> set[str]:
    """The pipeline modules a file imports (absolute names), read from its syntax tree."""
    package = list(path.relative_to(REPO).parts[:-1])  # the package a relative import starts from
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("pipeline.")}


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_no_stage_imports_another_stage() -> None:
    offences = []
    for path in PIPELINE.rglob("*.py"):
        mine = _stage_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for mod in _imports(path):
            other = _stage_of(mod)
            if other is not None and other != mine:
                offences.append(f"{path.relative_to(REPO)} imports {mod}")
    assert offences == []
    # the reader is not vacuous: it sees the shared modules a stage does import
    assert "pipeline.graphset" in _imports(PIPELINE / "plugin_pass.py")
    assert "pipeline.comparison.driver" in _imports(PIPELINE / "validate" / "__init__.py")


def test_one_session_factory_one_chain_runner_one_driver() -> None:
    def where(pattern: str) -> list[str]:
        return sorted(str(p.relative_to(REPO)) for p in PIPELINE.rglob("*.py") if pattern in p.read_text())

    assert where("InferenceSession(") == ["pipeline/backend/onnxruntime/runner.py"]
    # one plugin loader with one once-per-process registry, one runner factory
    assert where(".load_library(") == ["pipeline/backend/tensorrt/plugins.py"]
    assert where("register_custom_ops_library(") == ["pipeline/backend/onnxruntime/plugins.py"]
    def made(cls: str) -> list[str]:  # where a runner class is instantiated (not defined)
        call = re.compile(rf"(?<!class ){cls}\(")
        return sorted(str(p.relative_to(REPO)) for p in PIPELINE.rglob("*.py") if call.search(p.read_text()))

    assert made("TensorRTRunner") == ["pipeline/backend/__init__.py"]
    assert made("OnnxRuntimeRunner") == sorted(["pipeline/backend/__init__.py", "pipeline/backend/onnxruntime/runner.py",
                                               "pipeline/export/verify.py", "pipeline/precision/calibration.py",
                                               "pipeline/precision/modelopt_steps.py"])
    assert where("class StageChain") == ["pipeline/runners/chain.py"]
    assert where("def compare(") == ["pipeline/comparison/driver.py", "pipeline/export/verify.py"]
    # export's gate is the exporter's own check (near-ties of keep scores), not a second validation driver:
    # it does not accumulate validation metrics
    assert "ErrStats" not in (PIPELINE / "export" / "verify.py").read_text()


# ---------------------------------------------------------------- one name per idea
@pytest.mark.parametrize("command", ["precision", "plugin-pass", "validate", "latency"])
def test_graph_set_readers_take_graphs_and_no_progress(command: str) -> None:
    text = cli.build_parser(command)._subparsers._group_actions[0].choices[command].format_help()  # type: ignore[union-attr]
    assert "--graphs DIR" in text and "--no-progress" in text


def test_unknown_graph_set_kind_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_manifest(tmp_path, "train", {"files": []})
    for argv in (["validate", "--graphs", str(tmp_path)], ["plugin-pass", "--graphs", str(tmp_path), "--out", str(tmp_path / "o")],
                 ["precision", "--graphs", str(tmp_path), "--precision", "fp16", "--out", str(tmp_path / "p")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "not a graph set" in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


def test_dvit_error_is_raised_not_printed_by_the_library(export_dir: Path) -> None:
    from pipeline.validate import validate

    with pytest.raises(DvitError, match="neither 'pytorch', a recording"):
        validate(export_dir, reference="no-such-thing")
